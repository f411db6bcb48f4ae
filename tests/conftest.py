"""Shared fixtures. Real data is read from ../shared/data (never copied into the project)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDSSL_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Tests run on 2 cores: keep torch from oversubscribing when several tests spawn workers.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session", autouse=True)
def _cache_root(tmp_path_factory):
    """Caches go to a fresh folder for the session ($MEDSSL_CACHE), not to the user's ~/.cache;
    subprocesses (CLI tests) inherit it."""
    old = os.environ.get("MEDSSL_CACHE")
    os.environ["MEDSSL_CACHE"] = str(tmp_path_factory.mktemp("medssl_cache"))
    yield
    if old is None:
        os.environ.pop("MEDSSL_CACHE", None)
    else:
        os.environ["MEDSSL_CACHE"] = old


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder (../shared/data); tests needing it are skipped if it is absent."""
    if not SHARED_DATA.is_dir():
        if os.environ.get("CI"):  # CI always has ../shared: a missing folder is a failure there
            pytest.fail(f"real data folder not found at {SHARED_DATA}")
        pytest.skip(f"real data folder not found at {SHARED_DATA}")
    return SHARED_DATA
