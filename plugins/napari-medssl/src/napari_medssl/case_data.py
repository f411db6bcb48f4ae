"""One case's arrays for review, read from the export: image, label, views, uncertainty.

Labels are ``uint8`` (a 512x512x300 label is 79 MB, not 629 MB as int64); the uncertainty is
``float32``. The label shown is the reviewer's latest: the draft if there is one, else the
reviewed label of an edited case, else the pseudo-label. Nothing here imports Qt or napari, so
a background thread can read the next case while the reviewer works on this one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.data.io import read_volume
from medssl.data.volume import Volume
from medssl.errors import DataError
from medssl.inference.review_manifest import ReviewCase, ReviewManifest

from . import drafts
from .appearance import modality
from .overlays import disagreement


@dataclass
class CaseData:
    """Arrays of one case, all ``(X, Y, Z)`` on the label's grid.

    Attributes:
        name: the case name.
        image: channel 0 with its geometry (the geometry of every layer).
        label: the working label (``uint8``), edited in place by the Labels layer.
        label_source: ``"draft"``, ``"reviewed"`` or ``"pseudo-label"``.
        views: each view's prediction (``uint8``), maybe empty.
        uncertainty: voxel-wise uncertainty in [0, 1] (``float32``) or None.
        disagreement: where the views and the fused pseudo-label do not all agree (``bool``).
        modality: channel 0's name in the dataset (``"CT"`` selects the CT window).
    """

    name: str
    image: Volume
    label: np.ndarray
    label_source: str
    views: list[np.ndarray] = field(default_factory=list)
    uncertainty: np.ndarray | None = None
    disagreement: np.ndarray | None = None
    modality: str | None = None

    @property
    def nbytes(self) -> int:
        arrays = [self.image.array, self.label, *self.views, self.uncertainty, self.disagreement]
        return int(sum(a.nbytes for a in arrays if a is not None))


def as_uint8_label(array: np.ndarray, where: Path) -> np.ndarray:
    """A label map as ``uint8`` (values must be whole numbers in 0..255).

    Raises:
        DataError: values outside 0..255 or not whole (naming the file).
    """
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    lo, hi = (array.min(), array.max()) if array.size else (0, 0)
    if lo < 0 or hi > 255:
        raise DataError(f"label values {lo}..{hi} do not fit uint8 (0..255)", where)
    out = array.astype(np.uint8)
    if np.issubdtype(array.dtype, np.floating) and not np.array_equal(out, array):
        raise DataError("label has non-integer values", where)
    return out


def _same_grid(vol: Volume, ref: Volume, path: Path) -> None:
    if vol.array.shape != ref.array.shape:
        raise DataError(f"has shape {vol.array.shape}, the case's label {ref.array.shape}", path)


def working_label_path(manifest: ReviewManifest, case: ReviewCase) -> tuple[Path, str]:
    """The saved label to show for ``case`` and its source name (reviewed or pseudo-label)."""
    if case.status == "edited" and case.reviewed_label:
        return manifest.resolve(case.reviewed_label), "reviewed"
    return manifest.resolve(case.label), "pseudo-label"


def load_case(manifest: ReviewManifest, case: ReviewCase, with_draft: bool = True) -> CaseData:
    """Read ``case`` of ``manifest`` (see :class:`CaseData`).

    Raises:
        DataError: a missing or unreadable file, or files of different shapes (named).
    """
    export = manifest.path.parent
    label_path, source = working_label_path(manifest, case)
    label_vol = read_volume(label_path)
    image = read_volume(manifest.resolve(case.image))
    _same_grid(image, label_vol, manifest.resolve(case.image))
    label = as_uint8_label(label_vol.array, label_path)
    views = []
    for rel in case.views:
        p = manifest.resolve(rel)
        v = read_volume(p)
        _same_grid(v, label_vol, p)
        views.append(as_uint8_label(v.array, p))
    unc = None
    if case.uncertainty:
        p = manifest.resolve(case.uncertainty)
        u = read_volume(p)
        _same_grid(u, label_vol, p)
        unc = np.asarray(u.array, dtype=np.float32)
    fused = as_uint8_label(read_volume(manifest.resolve(case.label)).array, manifest.resolve(case.label)) \
        if source != "pseudo-label" else label
    dis = disagreement(views, fused) if views else None
    data = CaseData(name=case.name, image=image, label=label, label_source=source,
                    views=views, uncertainty=unc, disagreement=dis, modality=modality(manifest.dataset))
    if with_draft:
        apply_draft(data, export)
    return data


def apply_draft(data: CaseData, export_dir: Path) -> bool:
    """Replace the working label with the case's draft, if it has one; True when it did."""
    try:
        draft = drafts.load(export_dir, data.name, data.label.shape)
    except ValueError as exc:
        raise DataError(str(exc), None) from None
    if draft is None:
        return False
    data.label, data.label_source = draft, "draft"
    return True
