"""The review API: one export folder under review, without Qt.

The widget is a thin view of a :class:`ReviewSession`; a script drives the same object (the
review-loop recipe accepts and edits cases with it). Every decision goes through
:func:`medssl.inference.review_manifest.set_status` (validated, hashed, written atomically) and
is appended to ``review_log.jsonl``; an edited label is written as a new file in ``reviewed/``,
never over the pseudo-label or an earlier reviewed file::

    session = ReviewSession.open("runs/pl")                 # a folder or its manifest.json
    for case in session.queue():                            # least confident first
        data = session.load(case.name)                      # image, uint8 label, views, uncertainty
        ...
        session.accept(case.name)  |  session.reject(case.name)
        session.save_edit(case.name, corrected_uint8_label)  # -> reviewed/<case>_r1.nii.gz
"""

from __future__ import annotations

import getpass
import os
import re
from pathlib import Path

import numpy as np

from medssl.errors import DataError
from medssl.inference.review_manifest import FORMAT, ReviewCase, ReviewManifest, set_status

from . import drafts, review_log
from .case_data import CaseData, load_case
from .preload import Preloader
from .queue import Order, ordered, progress_text, step

REVIEWED_DIR = "reviewed"


def default_reviewer() -> str:
    """``$MEDSSL_REVIEWER``, else the login name."""
    name = os.environ.get("MEDSSL_REVIEWER")
    if name:
        return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def find_manifest(path: str | Path) -> Path:
    """The ``manifest.json`` of an export folder (or the file itself).

    Raises:
        DataError: no such folder/file, or not a medssl pseudo-label export (named).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path)
    manifest = path / "manifest.json" if path.is_dir() else path
    if not manifest.is_file():
        raise DataError("is not a medssl pseudo-label export (no manifest.json; make one with medssl pseudo-label)",
                        path)
    return manifest


def is_export(path: str | Path) -> bool:
    """Cheap check (for the napari reader): a folder or file holding a medssl review manifest."""
    try:
        manifest = find_manifest(path)
        head = manifest.read_text(encoding="utf-8", errors="replace")[:4096]
    except (DataError, OSError):
        return False
    return FORMAT in head


class ReviewSession:
    """An export under review (see the module docstring).

    Args:
        path: the export folder or its ``manifest.json``.
        reviewer: recorded with every decision (default :func:`default_reviewer`).
        preload: read the next case in a background thread (:class:`.preload.Preloader`).
    """

    def __init__(self, path: str | Path, reviewer: str | None = None, preload: bool = True):
        self.manifest_path = find_manifest(path)
        self.export_dir = self.manifest_path.parent
        self.reviewer = reviewer or default_reviewer()
        self.manifest = ReviewManifest.read(self.manifest_path)
        self._preloader = Preloader(self._read) if preload else None

    @classmethod
    def open(cls, path: str | Path, **kwargs) -> ReviewSession:
        return cls(path, **kwargs)

    # ------------------------------------------------------------------ queue
    @property
    def cases(self) -> list[ReviewCase]:
        return self.manifest.cases

    @property
    def classes(self) -> list[str]:
        return self.manifest.classes

    def case(self, name: str) -> ReviewCase:
        return self.manifest.case(name)

    def queue(self, order: Order | str = Order.confidence, status: str | None = None) -> list[ReviewCase]:
        return ordered(self.cases, order, status)

    def neighbour(self, current: str | None, delta: int, order: Order | str = Order.confidence,
                  status: str | None = None) -> str | None:
        """The next (``delta=+1``) or previous (``-1``) case in the queue, None past the end."""
        return step(self.cases, current, delta, order, status)

    def progress(self) -> str:
        return progress_text(self.cases)

    def reload(self) -> None:
        """Read the manifest again (another process may have changed it)."""
        self.manifest = ReviewManifest.read(self.manifest_path)

    # ------------------------------------------------------------------ case data
    def _read(self, name: str) -> CaseData:
        return load_case(self.manifest, self.manifest.case(name), with_draft=False)

    def load(self, name: str) -> CaseData:
        """The case's arrays (the preloaded copy when there is one), with its draft applied."""
        from .case_data import apply_draft

        data = None
        if self._preloader is not None:
            try:
                data = self._preloader.take(name)
            except Exception:  # noqa: BLE001
                data = None  # read again below: the error comes from the foreground with its message
        if data is None:
            data = self._read(name)
        apply_draft(data, self.export_dir)
        review_log.append(self.export_dir, "open", name, self.reviewer, label_source=data.label_source)
        return data

    def preload(self, name: str | None) -> None:
        if self._preloader is not None:
            self._preloader.preload(name)

    # ------------------------------------------------------------------ drafts
    def save_draft(self, name: str, label: np.ndarray) -> Path:
        return drafts.save(self.export_dir, name, np.asarray(label, dtype=np.uint8))

    def has_draft(self, name: str) -> bool:
        return drafts.draft_path(self.export_dir, name).is_file()

    def discard_draft(self, name: str) -> bool:
        return drafts.discard(self.export_dir, name)

    # ------------------------------------------------------------------ decisions
    def _decide(self, name: str, status: str, **fields) -> ReviewCase:
        before = self.manifest.case(name).status
        case = set_status(self.manifest_path, name, status, reviewer=self.reviewer,
                          reviewed_label=fields.pop("reviewed_label", None))
        self.reload()
        drafts.discard(self.export_dir, name)
        action = {"accepted": "accept", "rejected": "reject", "edited": "edit", "pending": "reset"}[status]
        review_log.append(self.export_dir, action, name, self.reviewer, status_before=before, status=status,
                          label=case.reviewed_label or (case.label if status == "accepted" else None),
                          label_sha256=case.reviewed_label_sha256, **fields)
        return case

    def accept(self, name: str) -> ReviewCase:
        """Accept the pseudo-label as it is (its sha256 is recorded)."""
        return self._decide(name, "accepted")

    def reject(self, name: str) -> ReviewCase:
        """Reject the case: training will not use it."""
        return self._decide(name, "rejected")

    def reset(self, name: str) -> ReviewCase:
        """Back to pending (earlier reviewed files stay in ``reviewed/``)."""
        return self._decide(name, "pending")

    def reviewed_path(self, name: str) -> Path:
        """A new file name in ``reviewed/`` for case ``name``: ``<name>_r<k>.nii.gz``, k one past the last."""
        folder = self.export_dir / REVIEWED_DIR
        pat = re.compile(re.escape(name) + r"_r(\d+)\.nii\.gz$")
        taken = [int(m.group(1)) for p in folder.glob(f"{name}_r*.nii.gz") if (m := pat.match(p.name))]
        return folder / f"{name}_r{max(taken, default=0) + 1}.nii.gz"

    def save_edit(self, name: str, label: np.ndarray, geometry=None) -> Path:
        """Write the corrected ``label`` (``(X, Y, Z)``, values < number of classes) as a new file
        in ``reviewed/`` and mark the case ``edited``.

        Args:
            geometry: a :class:`~medssl.data.volume.Volume` of the case's grid (default: read
                from the pseudo-label file).

        Raises:
            DataError: wrong shape or class values (nothing is written).
        """
        from medssl.data.io import read_volume, write_volume

        case = self.manifest.case(name)
        if geometry is None:
            geometry = read_volume(self.manifest.resolve(case.label))
        label = np.asarray(label)
        if label.shape != geometry.array.shape:
            raise DataError(f"case {name!r}: edited label has shape {label.shape}, the case {geometry.array.shape}",
                            self.manifest_path)
        top = int(label.max()) if label.size else 0
        if label.size and (int(label.min()) < 0 or top >= len(self.classes)):
            raise DataError(f"case {name!r}: edited label has value {top}; the classes are 0..{len(self.classes) - 1} "
                            f"({', '.join(self.classes)})", self.manifest_path)
        dest = self.reviewed_path(name)
        write_volume(geometry.with_array(label.astype(np.uint8)), dest)
        self._decide(name, "edited", reviewed_label=dest)
        return dest

    def close(self) -> None:
        if self._preloader is not None:
            self._preloader.close()
