"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``.

Every file medssl writes for a user to keep (volumes, checkpoints, manifests, configs, reports,
cache entries) goes through :func:`write_atomic`, so a job killed mid-write leaves the previous
file (or none), never a truncated one. The temporary file gets the permissions a plain ``open``
would give under the process umask (``mkstemp`` alone makes it ``0600``), so results written by
one member of a team stay readable by the others (GUIDE item 17).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

T = TypeVar("T")

#: compound suffixes kept at the end of temporary names (writers such as SimpleITK pick the format
#: from the suffix), longest first
_MULTI_SUFFIXES = (".nii.gz", ".tar.gz")
TMP_MARK = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """Permissions of a new plain file under the current umask (``0o666 & ~umask``)."""
    return 0o666 & ~_umask()


def _suffix(name: str) -> str:
    low = name.lower()
    return next((s for s in _MULTI_SUFFIXES if low.endswith(s)), Path(name).suffix)


def atomic_path(dest: str | Path) -> tuple[Path, Path]:
    """A new empty temporary path beside ``dest`` (same folder, same suffix), and ``dest``.

    For writers that need a file name rather than a file object (SimpleITK, ``torch.save``);
    the caller renames it with ``os.replace`` and unlinks it on failure (see :func:`write_atomic`).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(dest.name)
    stem = dest.name[: len(dest.name) - len(suffix)] if suffix else dest.name
    fd, tmp = tempfile.mkstemp(prefix=f".{stem}{TMP_MARK}", suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(tmp), dest


def write_atomic(
    dest: str | Path,
    write: Callable[[BinaryIO], None] | None = None,
    *,
    write_path: Callable[[Path], None] | None = None,
    before_replace: Callable[[Path], T] | None = None,
    mode: int | None = None,
) -> T | Path:
    """Write ``dest`` atomically.

    Args:
        dest: final path (its folder is created).
        write: writes the content into the open binary file object it is given; or
        write_path: writes the content to the temporary path it is given (for libraries that
            open files themselves). Exactly one of the two.
        before_replace: called with the complete temporary file just before the rename; its
            result is returned instead of ``dest`` (the volume cache memory-maps the new data
            while it is certain to exist).
        mode: file permissions; default the umask's (:func:`file_mode`).

    Returns:
        ``dest``, or what ``before_replace`` returned.
    """
    if (write is None) == (write_path is None):
        raise TypeError("give exactly one of write= or write_path=")
    tmp, dest = atomic_path(dest)
    try:
        if write is not None:
            with open(tmp, "wb") as fh:
                write(fh)
        else:
            write_path(tmp)
        os.chmod(tmp, file_mode() if mode is None else mode)
        result = before_replace(tmp) if before_replace is not None else dest
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return result


def write_atomic_bytes(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically."""
    return write_atomic(dest, lambda fh: fh.write(data))


def write_atomic_text(dest: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    return write_atomic_bytes(dest, text.encode("utf-8"))


def save_torch_atomic(state: dict, dest: str | Path) -> Path:
    """``torch.save(state)`` atomically: a job killed while saving keeps its previous checkpoint."""
    import torch

    return write_atomic(dest, lambda fh: torch.save(state, fh))
