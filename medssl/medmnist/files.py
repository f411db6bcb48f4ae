"""MedMNIST v2 / MedMNIST+ files: the official table, where files live, md5 checks, downloads.

The official ``.npz`` files (Yang et al., "MedMNIST v2", Scientific Data 2023; MedMNIST+ for
the 64/128/224 sizes) are found, checked and fetched here without the ``medmnist`` package (which
requires torchvision and with it a CUDA torch build); :mod:`medssl.medmnist.data` reads them.

* Every file is checked against the official md5 table (:data:`INFO_FILE`, shipped in the
  package). The hash is cached per ``(path, size, mtime)`` in the process and in one small JSON
  per file in medssl's cache folder (``$MEDSSL_CACHE/md5``, :func:`md5_record_path`), so repeat
  loads do not rehash a 224x224 file of several GB. Nothing is written into the data folder.
* :func:`download_medmnist` fetches a missing file into the root folder (atomic, md5-checked).

Files are looked up in root folders resolved by :func:`resolve_roots`: an explicit ``root`` (one
folder or a list of folders), else ``$MEDMNIST_ROOT`` (one folder, or several separated by
``os.pathsep``, ``:`` on Linux and macOS, like ``PATH``), else ``~/.medmnist`` (the official
package's default). The first folder holding the file wins; a download goes into the first folder.
File names are the official ones: ``<flag>.npz`` for size 28, ``<flag>_<size>.npz`` otherwise.
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
from pathlib import Path
from typing import Any

from medssl.errors import DataError

#: The metadata table shipped with the package (tasks, labels, split sizes, md5 per size).
INFO_FILE = Path(__file__).with_name("info.json")
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
    """The whole metadata table (``info.json``), loaded once per process."""
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


def check_flag_size(flag: str, size: int) -> tuple[str, dict[str, Any], int]:
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


#: one folder, or several searched in order
Roots = str | Path | list[str | Path] | tuple[str | Path, ...] | None


def resolve_roots(root: Roots = None) -> list[Path]:
    """The folders searched for MedMNIST files, in order.

    Args:
        root: explicit folder or list of folders; if ``None`` (or an empty list),
            ``$MEDMNIST_ROOT`` split at ``os.pathsep`` (empty parts skipped); if unset or empty,
            ``~/.medmnist`` (the official package's default).

    Returns:
        The folders with ``~`` expanded, duplicates removed (they need not exist).
    """
    if isinstance(root, (list, tuple)):
        parts = [str(r) for r in root]
    elif root is not None:
        parts = [str(root)]
    else:
        parts = []
    if not parts:
        parts = [r.strip() for r in os.environ.get(ENV_ROOT, "").split(os.pathsep) if r.strip()]
    if not parts:
        parts = [str(DEFAULT_ROOT)]
    return list(dict.fromkeys(Path(r).expanduser() for r in parts))


def resolve_root(root: Roots = None) -> Path:
    """The first folder of :func:`resolve_roots`: where a download goes."""
    return resolve_roots(root)[0]


def medmnist_filename(flag: str, size: int = 28) -> str:
    """Official file name: ``<flag>.npz`` for size 28, ``<flag>_<size>.npz`` otherwise."""
    flag, _, size = check_flag_size(flag, size)
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def medmnist_path(flag: str, size: int = 28, root: Roots = None) -> Path:
    """Where the file of ``flag`` at ``size`` is: in the first root folder that holds it, else in
    the first root folder (see :func:`resolve_roots`)."""
    name = medmnist_filename(flag, size)
    roots = resolve_roots(root)
    return next((r / name for r in roots if (r / name).exists()), roots[0] / name)


def medmnist_url(flag: str, size: int = 28) -> str:
    """The official download URL of the file (zenodo record of MedMNIST 3.x)."""
    return URL_TEMPLATE.format(filename=medmnist_filename(flag, size))


def _expected_md5(flag: str, size: int) -> tuple[str, dict[str, list[str]]]:
    """(newest release's md5, {every accepted md5: releases listing it})."""
    flag, info, size = check_flag_size(flag, size)
    return info["md5"][str(size)], info["md5_accepted"][str(size)]


def _missing_message(flag: str, size: int, folder: Path | list[Path], offer_download: bool = True) -> str:
    name = medmnist_filename(flag, size)
    fetch = ", or let medssl fetch it with download=True / --download" if offer_download else ""
    folders = folder if isinstance(folder, list) else [folder]
    where = str(folders[0]) if len(folders) == 1 else f"any of {', '.join(map(str, folders))}"
    return (
        f"MedMNIST file {name} not found in {where}. Put the official {name} in {'that' if len(folders) == 1 else 'one'}"
        f" folder (the folders are --root/root=, else ${ENV_ROOT} with folders separated by {os.pathsep!r}, "
        f"else ~/.medmnist); on a machine with "
        f"internet, download it from {medmnist_url(flag, size)} (md5 {_expected_md5(flag, size)[0]})"
        + fetch
    )


# ------------------------------------------------------------------------------------- md5
#: (resolved path, st_size, st_mtime_ns) -> md5 hex digest, for this process.
_MD5_CACHE: dict[tuple[str, int, int, int, int], str] = {}


def md5_record_path(path: str | Path) -> Path:
    """Where the md5 of ``path`` is cached across processes: one small JSON per data file in the
    cache folder (:func:`medssl.core.paths.cache_dir` ``("md5")``), named by the file's name and a
    hash of its resolved path. Never beside the data: a dataset folder may be a shared read-only
    mount, and a writable one is the user's, not medssl's (GUIDE item 17)."""
    from medssl.core.paths import cache_dir

    resolved = Path(path).resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:16]
    return cache_dir("md5") / f"{resolved.name}-{digest}.json"


def file_md5(path: str | Path, use_cache: bool = True) -> str:
    """md5 hex digest of a file, cached by ``(resolved path, size, mtime, ctime, inode)``.

    The cache is an in-process dict plus one JSON record per file in the cache folder
    (:func:`md5_record_path`: ``{"path", "size", "mtime_ns", "ctime_ns", "inode", "md5"}``, written
    atomically; a cache folder that cannot be written only loses the record). Size and mtime alone
    are not enough: a byte changed in place with the mtime set back (``os.utime``, ``touch -r``,
    some copy tools) keeps both. The inode's change time (ctime) cannot be set from user space and
    moves with every write, so it invalidates the record; a moved or copied file re-hashes once.
    Nothing is ever written into the data's folder.

    Args:
        path: the file.
        use_cache: read and write the caches (``False`` always rehashes).
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)
    if use_cache:
        if key in _MD5_CACHE:
            return _MD5_CACHE[key]
        record = md5_record_path(path)
        try:
            rec = json.loads(record.read_text(encoding="utf-8"))
            if [rec.get("path"), rec.get("size"), rec.get("mtime_ns"), rec.get("ctime_ns"), rec.get("inode")] == list(key):
                _MD5_CACHE[key] = str(rec["md5"])
                return _MD5_CACHE[key]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # no record or an unreadable one: hash the file
    h = hashlib.md5()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    if use_cache:
        _MD5_CACHE[key] = digest
        try:
            from medssl.core.atomic import write_atomic_text

            rec = {"path": key[0], "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns,
                   "inode": st.st_ino, "md5": digest}
            write_atomic_text(record, json.dumps(rec) + "\n")
        except OSError:
            pass  # a read-only cache folder: the in-process cache only
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
    root: Roots = None,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    progress: bool | None = None,
) -> Path:
    """Download the official file into ``root`` (atomic: temp file, md5 check, rename).

    Args:
        flag: dataset flag.
        size: image size.
        root: root folder(s) (see :func:`resolve_roots`): an existing file in any of them is
            verified and returned, else the file is downloaded into the first; created if missing.
        timeout: seconds to wait for the server on connect and on each read.
        progress: print a progress bar to stderr; ``None`` = only when stderr is a terminal.

    Returns:
        The path of the verified file. An existing file is returned after an md5 check.

    Raises:
        DataError: no network (the message says which file to fetch from where and where to put
            it), an HTTP error, or a downloaded file whose md5 does not match.
    """
    flag, _, size = check_flag_size(flag, size)
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
    _MD5_CACHE[(str(dest.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)] = digest
    return dest


def locate(flag: str, size: int, root: Roots, download: bool) -> Path:
    """The path of an existing file in the first root folder that has it (not verified here);
    downloads it into the first root folder if asked and missing everywhere."""
    path = medmnist_path(flag, size, root)
    if path.is_file():
        return path
    if path.exists():
        raise DataError("exists but is not a file; expected the official MedMNIST .npz here", path)
    if download:
        return download_medmnist(flag, size, root)
    raise DataError(_missing_message(flag, size, resolve_roots(root)))
