"""Drafts: unsaved label edits, autosaved so that nothing is lost when napari closes.

``EXPORT/drafts/<case>.npz`` holds the edited label (``uint8``, compressed) and the shape it
belongs to; it is written atomically, read back when the case is opened again, and removed once
the case gets a decision (accept, reject, edit-and-save). A draft never touches the manifest.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from medssl.core.atomic import write_atomic_bytes

DRAFT_DIR = "drafts"


def draft_path(export_dir: str | Path, name: str) -> Path:
    return Path(export_dir) / DRAFT_DIR / f"{name}.npz"


def save(export_dir: str | Path, name: str, label: np.ndarray) -> Path:
    """Write the draft of case ``name`` (a ``uint8`` label array) atomically."""
    if label.dtype != np.uint8:
        raise TypeError(f"draft of {name!r}: labels are uint8, got {label.dtype}")
    buf = io.BytesIO()
    np.savez_compressed(buf, label=label)
    return write_atomic_bytes(draft_path(export_dir, name), buf.getvalue())


def load(export_dir: str | Path, name: str, shape: tuple[int, ...]) -> np.ndarray | None:
    """The draft of ``name``, or None when there is none.

    Raises:
        ValueError: a draft that cannot be read or has another shape than the case (named).
    """
    path = draft_path(export_dir, name)
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            label = z["label"]
    except Exception as exc:  # noqa: BLE001  (zip/npy errors have many types)
        raise ValueError(f"{path}: cannot read the draft ({type(exc).__name__}: {exc}); remove it to start "
                         "from the saved label") from None
    if label.shape != tuple(shape) or label.dtype != np.uint8:
        raise ValueError(f"{path}: draft is {label.dtype} {label.shape}, the case is uint8 {tuple(shape)}; "
                         "remove it to start from the saved label")
    return label


def discard(export_dir: str | Path, name: str) -> bool:
    """Remove the draft of ``name``; True when there was one."""
    path = draft_path(export_dir, name)
    existed = path.is_file()
    path.unlink(missing_ok=True)
    return existed
