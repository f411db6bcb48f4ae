"""Where medssl keeps what it can rebuild: the cache folder.

Caches never go into a user's input folders (a dataset may be a read-only mount shared by a
team; GUIDE item 17). The root is ``$MEDSSL_CACHE`` when set, else ``$XDG_CACHE_HOME/medssl``,
else ``~/.cache/medssl``; a config's ``data.cache_dir`` overrides it for one run. Where that home
folder cannot be written (a read-only ``$HOME`` in a research container, an HPC account without a
home), the root is ``<temp dir>/medssl-<uid>`` instead (``$TMPDIR``, default ``/tmp``).

Other libraries keep caches of their own (matplotlib, torch hub and inductor, triton, numba, the
CUDA JIT), by default under ``$HOME``. :func:`route_caches` (called when the command starts) points
them into the cache root, so that with ``MEDSSL_CACHE`` set (as in the images of ``docker/``) or a
read-only ``$HOME`` nothing is written into ``$HOME`` or the package.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "MEDSSL_CACHE"

#: other libraries' cache (or config) variables -> their sub-folder of the cache root
LIBRARY_CACHES = {
    "MPLCONFIGDIR": "matplotlib",
    "XDG_CACHE_HOME": "xdg",
    "TORCH_HOME": "torch",
    "TORCHINDUCTOR_CACHE_DIR": "torchinductor",
    "TRITON_CACHE_DIR": "triton",
    "NUMBA_CACHE_DIR": "numba",
    "CUDA_CACHE_PATH": "cuda",
}


def _writable(path: Path) -> bool:
    """Whether ``path`` could be created and written: its nearest existing ancestor is writable."""
    for p in (path, *path.parents):
        if p.exists():
            return p.is_dir() and os.access(p, os.W_OK | os.X_OK)
    return False


def _home_cache() -> Path | None:
    xdg = os.environ.get("XDG_CACHE_HOME")
    try:
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    except RuntimeError:  # no home directory for this uid
        return None
    return base / "medssl"


def cache_root() -> Path:
    """The cache root (not created here): ``$MEDSSL_CACHE``, else the home cache folder when it can
    be written, else ``<temp dir>/medssl-<uid>``."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    home = _home_cache()
    if home is not None and _writable(home):
        return home
    import tempfile

    return Path(tempfile.gettempdir()) / f"medssl-{os.getuid() if hasattr(os, 'getuid') else 'user'}"


def route_caches() -> Path | None:
    """Point other libraries' caches into the cache root, when medssl's cache is not in ``$HOME``.

    With ``MEDSSL_CACHE`` set, or when the home cache folder cannot be written, every variable of
    :data:`LIBRARY_CACHES` that is not set already becomes ``<root>/<name>``, and ``MEDSSL_CACHE``
    is set to the root (so child processes agree). On an ordinary host (writable ``$HOME``, no
    ``MEDSSL_CACHE``) nothing changes: a user's matplotlib settings stay where they are.

    Returns:
        The root the caches were routed to, or ``None`` when nothing was changed.
    """
    if not os.environ.get(ENV_VAR):
        home = _home_cache()
        if home is not None and _writable(home):
            return None
    root = cache_root()
    os.environ[ENV_VAR] = str(root)
    for var, sub in LIBRARY_CACHES.items():
        os.environ.setdefault(var, str(root / sub))
    return root


def cache_dir(kind: str, source: str | Path | None = None) -> Path:
    """A sub-folder of the cache root for one kind of cache (``volumes``, ``md5``...).

    With ``source`` (a dataset folder), the folder is keyed by its resolved path, so two datasets
    never share entries and the same dataset always finds its own:
    ``<root>/<kind>/<name>-<sha1 of the path, 12 hex>``.
    """
    base = cache_root() / kind
    if source is None:
        return base
    resolved = Path(source).expanduser().resolve()
    digest = hashlib.sha1(str(resolved).encode("utf-8")).hexdigest()[:12]
    return base / f"{resolved.name or 'root'}-{digest}"
