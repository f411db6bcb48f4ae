"""MedMNIST v2 / MedMNIST+ files: locate, verify, download and load whole splits as tensors.

The official ``.npz`` files (Yang et al., "MedMNIST v2", Scientific Data 2023; MedMNIST+ for
the 64/128/224 sizes) hold, per split, ``<split>_images`` and ``<split>_labels`` as uint8
arrays. This module reads them without the ``medmnist`` package (which requires torchvision and
with it a CUDA torch build):

* :func:`load_medmnist` returns one split as ONE channel-first ``torch.uint8`` tensor
  (``(N, C, H, W)`` for 2D, ``(N, 1, D, H, W)`` for 3D) plus ``torch.long`` labels. Only the
  two arrays of the requested split are decompressed (an ``np.load`` npz reads a key on access).
* Every file is checked against the official md5 table (:data:`INFO_FILE`, shipped in the
  package). The hash is cached per ``(path, size, mtime)`` in the process and in a small sidecar
  ``.<file>.md5.json`` beside the file (written atomically, skipped if the folder is read-only),
  so repeat loads do not rehash a 224x224 file of several GB.
* :func:`medmnist_summary` reports counts, shapes and class counts per split reading only the
  labels and the ``.npy`` headers of the images: it is what ``medssl data medmnist`` prints.

Files live in a root folder resolved by :func:`resolve_root`: an explicit ``root``, else
``$MEDMNIST_ROOT``, else ``~/.medmnist`` (the official package's default). File names are the
official ones: ``<flag>.npz`` for size 28, ``<flag>_<size>.npz`` otherwise.
"""

from __future__ import annotations

import difflib
import errno
import functools
import hashlib
import http.client
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medssl.errors import DataError

if TYPE_CHECKING:  # torch is imported lazily: the summary (CLI) path does not need it.
    import torch

#: The metadata table shipped with the package (tasks, labels, split sizes, md5 per size).
INFO_FILE = Path(__file__).with_name("medmnist_info.json")
#: Environment variable naming the default folder of the .npz files.
ENV_ROOT = "MEDMNIST_ROOT"
#: The official package's default folder.
DEFAULT_ROOT = Path("~/.medmnist")
SPLITS = ("train", "val", "test")
#: Seconds to wait for the download server before concluding there is no network.
DOWNLOAD_TIMEOUT_S = 5.0
_CHUNK = 1 << 22  # 4 MiB reads for hashing and downloading


@functools.cache
def medmnist_info() -> dict[str, Any]:
    """The whole metadata table (``medmnist_info.json``), loaded once per process."""
    with open(INFO_FILE, encoding="utf-8") as f:
        return json.load(f)


#: Download URL with ``{filename}`` to fill in (the zenodo record of MedMNIST 3.x). A module
#: attribute so that tests (and mirrors) can point it elsewhere.
URL_TEMPLATE: str = medmnist_info()["url_template"]


def medmnist_flags() -> list[str]:
    """All dataset flags in the table, 2D first then 3D, in the official order."""
    return list(medmnist_info()["datasets"])


def flag_info(flag: str) -> dict[str, Any]:
    """The table entry of ``flag`` (case-insensitive).

    Raises:
        DataError: ``flag`` is not a MedMNIST flag; the message lists the valid ones.
    """
    datasets = medmnist_info()["datasets"]
    key = str(flag).strip().lower()
    if key not in datasets:
        close = difflib.get_close_matches(key, datasets, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"unknown MedMNIST flag {flag!r}{hint}; valid flags: {', '.join(datasets)}"
        )
    return datasets[key]


def _check(flag: str, size: int) -> tuple[str, dict[str, Any], int]:
    """Normalise ``flag``, validate ``size`` against the flag's available sizes."""
    info = flag_info(flag)
    flag = str(flag).strip().lower()
    try:
        size_i = int(size) if not isinstance(size, (bool, float)) else None
    except (TypeError, ValueError):
        size_i = None
    if size_i not in info["sizes"]:
        dims = info["spatial_dims"]
        raise DataError(
            f"{flag} has no size {size!r}; {dims}D MedMNIST files exist in sizes "
            f"{', '.join(map(str, info['sizes']))}"
        )
    return flag, info, size_i


def resolve_root(root: str | Path | None = None) -> Path:
    """The folder holding the MedMNIST files.

    Args:
        root: explicit folder; if ``None``, ``$MEDMNIST_ROOT``; if unset or empty,
            ``~/.medmnist`` (the official package's default).

    Returns:
        The folder with ``~`` expanded (it need not exist).
    """
    if root is None:
        env = os.environ.get(ENV_ROOT, "").strip()
        root = env if env else DEFAULT_ROOT
    return Path(root).expanduser()


def medmnist_filename(flag: str, size: int = 28) -> str:
    """Official file name: ``<flag>.npz`` for size 28, ``<flag>_<size>.npz`` otherwise."""
    flag, _, size = _check(flag, size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_path(flag: str, size: int = 28, root: str | Path | None = None) -> Path:
    """Where the file of ``flag`` at ``size`` is expected (see :func:`resolve_root`)."""
    return resolve_root(root) / medmnist_filename(flag, size)


def medmnist_url(flag: str, size: int = 28) -> str:
    """The official download URL of the file (zenodo record of MedMNIST 3.x)."""
    return URL_TEMPLATE.format(filename=medmnist_filename(flag, size))


def _expected_md5(flag: str, size: int) -> tuple[str, dict[str, list[str]]]:
    """(newest release's md5, {every accepted md5: releases listing it})."""
    flag, info, size = _check(flag, size)
    return info["md5"][str(size)], info["md5_accepted"][str(size)]


def _missing_message(flag: str, size: int, folder: Path, offer_download: bool = True) -> str:
    name = medmnist_filename(flag, size)
    fetch = ", or let medssl fetch it with download=True / --download" if offer_download else ""
    return (
        f"MedMNIST file {name} not found in {folder}. Put the official {name} in that folder "
        f"(the folder is --root/root=, else ${ENV_ROOT}, else ~/.medmnist); on a machine with "
        f"internet, download it from {medmnist_url(flag, size)} (md5 {_expected_md5(flag, size)[0]})"
        + fetch
    )


# ------------------------------------------------------------------------------------- md5
#: (resolved path, st_size, st_mtime_ns) -> md5 hex digest, for this process.
_MD5_CACHE: dict[tuple[str, int, int], str] = {}


def _sidecar(path: Path) -> Path:
    return path.with_name(f".{path.name}.md5.json")


def _folder_writable(folder: Path) -> bool:
    """Whether a sidecar may be written in ``folder``.

    Needs both the permission (``os.access``) and a write bit in the folder's mode: root passes
    ``os.access`` everywhere, and a folder marked read-only (a shared data mount, ``chmod a-w``)
    must stay untouched even then.
    """
    try:
        return os.access(folder, os.W_OK) and bool(folder.stat().st_mode & 0o222)
    except OSError:
        return False


def file_md5(path: str | Path, use_cache: bool = True) -> str:
    """md5 hex digest of a file, cached by ``(path, size, mtime)``.

    The cache is an in-process dict plus a sidecar ``.<name>.md5.json`` beside the file; the
    sidecar is written atomically, and never in a folder without write permission or without a
    write bit in its mode (so read-only shared data stays untouched, even for root). A file that
    is rewritten changes size or mtime, which invalidates both.

    Args:
        path: the file.
        use_cache: read and write the caches (``False`` always rehashes).
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    side = _sidecar(path)
    if use_cache:
        if key in _MD5_CACHE:
            return _MD5_CACHE[key]
        try:
            rec = json.loads(side.read_text(encoding="utf-8"))
            if rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
                _MD5_CACHE[key] = str(rec["md5"])
                return _MD5_CACHE[key]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no sidecar or an unreadable one: hash the file
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if use_cache:
        _MD5_CACHE[key] = digest
        if _folder_writable(side.parent):  # else (read-only data) the in-process cache only
            try:
                from medssl.core.atomic import write_atomic_text

                rec = {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "md5": digest}
                write_atomic_text(side, json.dumps(rec) + "\n")
                os.chmod(side, 0o644)  # mkstemp creates 0600; others sharing the folder may read it
            except OSError:
                pass
    return digest


def verify_medmnist(path: str | Path, flag: str, size: int = 28) -> dict[str, Any]:
    """Check a file's md5 against the official table.

    Args:
        path: the ``.npz`` file.
        flag: its dataset flag.
        size: its image size.

    Returns:
        ``{"md5": actual, "md5_verified": True, "releases": [medmnist releases listing it],
        "newest": whether it is the newest release's file}``.

    Raises:
        DataError: the md5 is not one of the official values for this flag and size.
    """
    path = Path(path)
    newest, accepted = _expected_md5(flag, size)
    actual = file_md5(path)
    if actual not in accepted:
        others = [m for m in accepted if m != newest]
        also = f" (or an older release's {', '.join(others)})" if others else ""
        raise DataError(
            f"md5 {actual} does not match the official {newest}{also} for "
            f"{medmnist_filename(flag, size)}: the file is corrupt or not the official release; "
            f"delete it and download it again from {medmnist_url(flag, size)}",
            path,
        )
    return {"md5": actual, "md5_verified": True, "releases": accepted[actual], "newest": actual == newest}


# -------------------------------------------------------------------------------- download
def download_medmnist(
    flag: str,
    size: int = 28,
    root: str | Path | None = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Download the official file into ``root`` (atomic: temp file, md5 check, rename).

    Args:
        flag: dataset flag.
        size: image size.
        root: destination folder (see :func:`resolve_root`); created if missing.
        timeout: seconds to wait for the server on connect and on each read.
        progress: print a progress bar to stderr; ``None`` = only when stderr is a terminal.

    Returns:
        The path of the verified file. An existing file is returned after an md5 check.

    Raises:
        DataError: no network (the message says which file to fetch from where and where to put
            it), an HTTP error, or a downloaded file whose md5 does not match.
    """
    flag, _, size = _check(flag, size)
    dest = medmnist_path(flag, size, root)
    if dest.is_file():
        verify_medmnist(dest, flag, size)
        return dest
    url = medmnist_url(flag, size)
    newest, accepted = _expected_md5(flag, size)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    except OSError as exc:
        raise DataError(f"cannot write a download into this folder: {exc.strerror or exc}", dest.parent) from exc
    tmp = Path(tmp_name)
    show = sys.stderr.isatty() if progress is None else progress
    try:
        h = hashlib.md5()
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    total = int(resp.headers.get("Content-Length") or 0) or None
                    bar = None
                    if show:
                        from tqdm import tqdm

                        bar = tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, file=sys.stderr)
                    while chunk := resp.read(_CHUNK):
                        out.write(chunk)
                        h.update(chunk)
                        if bar is not None:
                            bar.update(len(chunk))
                    if bar is not None:
                        bar.close()
            except urllib.error.HTTPError as exc:
                raise DataError(
                    f"download of {url} failed with HTTP {exc.code} {exc.reason}. "
                    + _missing_message(flag, size, dest.parent, offer_download=False)
                ) from exc
            except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as exc:
                if getattr(exc, "errno", None) == errno.ENOSPC:
                    raise DataError(f"no space left on the device while downloading {url}", dest.parent) from exc
                reason = getattr(exc, "reason", exc)
                raise DataError(
                    f"cannot download {url} (no network? {reason}). "
                    + _missing_message(flag, size, dest.parent, offer_download=False)
                ) from exc
        digest = h.hexdigest()
        if digest not in accepted:
            raise DataError(
                f"downloaded {dest.name} has md5 {digest}, not the official {newest}: the file is "
                f"corrupt or not the official release (a proxy or an interrupted transfer?); nothing "
                f"was kept (from {url})"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    st = dest.stat()
    _MD5_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns)] = digest
    return dest


def _locate(flag: str, size: int, root: str | Path | None, download: bool) -> Path:
    """The verified-or-not path of an existing file; downloads it if asked and missing."""
    path = medmnist_path(flag, size, root)
    if path.is_file():
        return path
    if path.exists():
        raise DataError("exists but is not a file; expected the official MedMNIST .npz here", path)
    if download:
        return download_medmnist(flag, size, root)
    raise DataError(_missing_message(flag, size, path.parent))


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
    root: str | Path | None = None,
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
        root: folder of the files (see :func:`resolve_root`).
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

    flag, info, size = _check(flag, size)
    split = _check_split(split)
    path = _locate(flag, size, root, download)
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
    root: str | Path | None = None,
    download: bool = False,
) -> dict[str, Any]:
    """Verify a MedMNIST file and describe its splits (what ``medssl data medmnist`` prints).

    Reads the labels and only the headers of the image arrays, so it is fast for any size and
    does not import torch.

    Args:
        flag: dataset flag.
        size: image size.
        root: folder of the files (see :func:`resolve_root`).
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
    flag, info, size = _check(flag, size)
    path = _locate(flag, size, root, download)
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
