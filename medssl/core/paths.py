"""Where medssl keeps what it can rebuild: the cache folder.

Caches never go into a user's input folders (a dataset may be a read-only mount shared by a
team; GUIDE item 17). The root is ``$MEDSSL_CACHE`` when set, else ``$XDG_CACHE_HOME/medssl``,
else ``~/.cache/medssl``; a config's ``data.cache_dir`` overrides it for one run.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

ENV_VAR = "MEDSSL_CACHE"


def cache_root() -> Path:
    """The cache root (not created here)."""
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medssl"


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
