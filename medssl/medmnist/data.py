"""MedMNIST v2 / MedMNIST+ splits as whole tensors, and the summary ``medssl data medmnist`` prints.

The official ``.npz`` files hold, per split, ``<split>_images`` and ``<split>_labels`` as uint8
arrays; they are located and md5-checked by :mod:`medssl.medmnist.files`.

* :func:`load_medmnist` returns one split as ONE channel-first ``torch.uint8`` tensor
  (``(N, C, H, W)`` for 2D, ``(N, 1, D, H, W)`` for 3D) plus ``torch.long`` labels. Only the
  two arrays of the requested split are decompressed (an ``np.load`` npz reads a key on access).
* :func:`medmnist_summary` reports counts, shapes and class counts per split reading only the
  labels and the ``.npy`` headers of the images: it is what ``medssl data medmnist`` prints.
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medssl.errors import DataError
from medssl.medmnist.files import SPLITS, check_flag_size, locate, verify_medmnist

if TYPE_CHECKING:  # torch is imported lazily: the summary (CLI) path does not need it.
    import torch

def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; MedMNIST splits are {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------------- loading
@dataclass
class MedMNISTSplit:
    """One split of one MedMNIST file, as whole tensors.

    Attributes:
        images: ``torch.uint8``, channel first: ``(N, C, H, W)`` for 2D (``C`` = 1 or 3),
            ``(N, 1, D, H, W)`` for 3D. Values 0..255, not normalised.
        labels: ``torch.long``; ``(N,)`` class indices for single-label tasks (binary-class,
            multi-class, ordinal-regression), ``(N, K)`` 0/1 indicators for multi-label.
        flag: dataset flag, e.g. ``"breastmnist"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: image size (28, 64, 128 or 224).
        task: official task string, e.g. ``"binary-class"``, ``"multi-label, binary-class"``.
        n_channels: image channels ``C``.
        spatial_dims: 2 or 3.
        label_names: class (or, for multi-label, label) names by index.
        path: the file read.
        md5: the file's md5 if it was verified, else ``None``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    flag: str
    split: str
    size: int
    task: str
    n_channels: int
    spatial_dims: int
    label_names: list[str]
    path: Path | None = None
    md5: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __repr__(self) -> str:  # the default would print both tensors in full
        return (
            f"MedMNISTSplit(flag={self.flag!r}, split={self.split!r}, size={self.size}, "
            f"images={tuple(self.images.shape)} {self.images.dtype}, labels={tuple(self.labels.shape)} "
            f"{self.labels.dtype}, task={self.task!r}, label_names={self.label_names!r})"
        )

    @property
    def num_classes(self) -> int:
        """Number of classes (single-label) or of labels (multi-label)."""
        return len(self.label_names)

    @property
    def multilabel(self) -> bool:
        """Whether labels are ``(N, K)`` indicators rather than class indices."""
        return self.task.startswith("multi-label")


def _read_key(npz: Any, key: str, path: Path) -> np.ndarray:
    if key not in npz.files:
        raise DataError(
            f"has no array {key!r} (it has {', '.join(npz.files) or 'none'}); not an official MedMNIST file",
            path,
        )
    try:
        return npz[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read array {key!r}: the file is truncated or corrupt ({exc})", path) from exc


def _open_npz(path: Path) -> Any:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"is not a valid .npz archive (truncated, corrupt or another format): {exc}", path) from exc


def _channels_first(images: np.ndarray, info: dict[str, Any], size: int, path: Path, key: str) -> np.ndarray:
    """Official layouts -> channel first: (N,H,W) and (N,D,H,W) gain an axis, (N,H,W,3) moves it."""
    dims, ch = info["spatial_dims"], info["n_channels"]
    spatial = (size,) * dims
    if images.ndim == 1 + dims and images.shape[1:] == spatial and ch == 1:
        out = images[:, None]
    elif dims == 2 and images.ndim == 4 and images.shape[1:] == (*spatial, ch):
        out = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    elif images.ndim == 2 + dims and images.shape[1:] == (ch, *spatial):  # already channel first
        out = images
    else:
        want = (("N",) + spatial) if ch == 1 else ("N", *spatial, ch)
        raise DataError(
            f"array {key!r} has shape {images.shape}, expected {tuple(want)} for a {dims}D "
            f"{ch}-channel file of size {size}",
            path,
        )
    if out.dtype != np.uint8:
        raise DataError(f"array {key!r} has dtype {out.dtype}, expected uint8", path)
    return out


def _labels(labels: np.ndarray, info: dict[str, Any], n: int, path: Path, key: str) -> np.ndarray:
    k = len(info["label"])
    multi = info["task"].startswith("multi-label")
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2 or labels.shape[0] != n or labels.shape[1] != (k if multi else 1):
        raise DataError(
            f"array {key!r} has shape {labels.shape}, expected ({n}, {k if multi else 1}) to match {n} images",
            path,
        )
    out = labels.astype(np.int64) if multi else labels[:, 0].astype(np.int64)
    if out.size and (out.min() < 0 or out.max() >= (2 if multi else k)):
        raise DataError(f"array {key!r} has values outside 0..{(2 if multi else k) - 1}", path)
    return out


def load_medmnist(
    flag: str,
    split: str = "train",
    size: int = 28,
    root: str | Path | list | None = None,
    download: bool = False,
    verify: bool = True,
) -> MedMNISTSplit:
    """Load one split of an official MedMNIST file as whole tensors.

    Only ``<split>_images`` and ``<split>_labels`` are decompressed; the md5 check is cached
    (see :func:`file_md5`), so loading the three splits hashes the file once.

    Args:
        flag: dataset flag, e.g. ``"breastmnist"``, ``"adrenalmnist3d"`` (case-insensitive).
        split: ``"train"``, ``"val"`` or ``"test"``.
        size: 28, 64, 128, 224 (2D) or 28, 64 (3D).
        root: folder(s) of the files (see :func:`~medssl.medmnist.files.resolve_roots`).
        download: fetch the file if it is missing (needs internet).
        verify: check the md5 against the official table.

    Returns:
        A :class:`MedMNISTSplit`: ``images`` uint8 ``(N, C, H, W)`` / ``(N, 1, D, H, W)``,
        ``labels`` long ``(N,)`` (or ``(N, K)`` multi-label).

    Raises:
        DataError: unknown flag, size or split; file missing (the message says which file to
            put in which folder and where to download it); md5 mismatch; not a valid npz or a
            missing/misshapen array.
    """
    import torch

    flag, info, size = check_flag_size(flag, size)
    split = _check_split(split)
    path = locate(flag, size, root, download)
    md5 = verify_medmnist(path, flag, size)["md5"] if verify else None
    with _open_npz(path) as npz:
        ikey, lkey = f"{split}_images", f"{split}_labels"
        images = _channels_first(_read_key(npz, ikey, path), info, size, path, ikey)
        labels = _labels(_read_key(npz, lkey, path), info, images.shape[0], path, lkey)
    return MedMNISTSplit(
        images=torch.from_numpy(images),
        labels=torch.from_numpy(labels),
        flag=flag,
        split=split,
        size=size,
        task=info["task"],
        n_channels=int(info["n_channels"]),
        spatial_dims=int(info["spatial_dims"]),
        label_names=[info["label"][str(i)] for i in range(len(info["label"]))],
        path=path,
        md5=md5,
    )


# ----------------------------------------------------------------------------------- summary
def _npy_header(zf: zipfile.ZipFile, key: str, path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype of ``key`` in an npz, read from the .npy header without the data."""
    member = f"{key}.npy"
    if member not in zf.namelist():
        have = ", ".join(n.removesuffix(".npy") for n in zf.namelist())
        raise DataError(f"has no array {key!r} (it has {have or 'none'}); not an official MedMNIST file", path)
    try:
        with zf.open(member) as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(f)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read the header of array {key!r}: {exc}", path) from exc
    return tuple(int(s) for s in shape), dtype


def medmnist_summary(
    flag: str,
    size: int = 28,
    root: str | Path | list | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """Verify a MedMNIST file and describe its splits (what ``medssl data medmnist`` prints).

    Reads the labels and only the headers of the image arrays, so it is fast for any size and
    does not import torch.

    Args:
        flag: dataset flag.
        size: image size.
        root: folder(s) of the files (see :func:`~medssl.medmnist.files.resolve_roots`).
        download: fetch the file if it is missing.

    Returns:
        JSON-ready dict: ``flag``, ``size``, ``path``, ``md5``, ``md5_verified``, ``releases``
        (medmnist releases whose table lists this md5), ``task``, ``n_channels``,
        ``spatial_dims``, ``label_names`` (index -> name), ``license`` and ``splits``: per split
        ``count``, ``image_shape`` (one sample, channel first as :func:`load_medmnist` returns
        it) and ``class_counts`` (index -> count; for multi-label, positives per label).

    Raises:
        DataError: as :func:`load_medmnist`.
    """
    flag, info, size = check_flag_size(flag, size)
    path = locate(flag, size, root, download)
    check = verify_medmnist(path, flag, size)
    k = len(info["label"])
    splits: dict[str, Any] = {}
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"is not a valid .npz archive: {exc}", path) from exc
    with zf, _open_npz(path) as npz:
        for split in SPLITS:
            ikey, lkey = f"{split}_images", f"{split}_labels"
            shape, dtype = _npy_header(zf, ikey, path)
            probe = np.empty((0, *shape[1:]), dtype=dtype)  # reuse the layout checks on no data
            sample_shape = _channels_first(probe, info, size, path, ikey).shape[1:]
            labels = _labels(_read_key(npz, lkey, path), info, shape[0], path, lkey)
            if labels.ndim == 2:
                counts = labels.sum(axis=0)
            else:
                counts = np.bincount(labels, minlength=k)
            splits[split] = {
                "count": int(shape[0]),
                "image_shape": [int(s) for s in sample_shape],
                "class_counts": {str(i): int(c) for i, c in enumerate(counts)},
            }
    return {
        "flag": flag,
        "size": size,
        "path": str(path),
        "md5": check["md5"],
        "md5_verified": True,
        "releases": check["releases"],
        "task": info["task"],
        "n_channels": int(info["n_channels"]),
        "spatial_dims": int(info["spatial_dims"]),
        "label_names": dict(info["label"]),
        "license": info["license"],
        "splits": splits,
    }
