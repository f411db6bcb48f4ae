"""The cache folder: $MEDSSL_CACHE, else the home cache when it can be written, else $TMPDIR/medssl-UID;
other libraries' caches follow it when medssl's cache is not in $HOME."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from medssl.core import paths


@pytest.fixture
def clean_env(monkeypatch):
    home = str(Path.home())
    for var in [paths.ENV_VAR, *paths.LIBRARY_CACHES, "HOME", "TMPDIR"]:
        monkeypatch.setenv(var, "x")  # recorded, so that whatever route_caches sets is undone after the test
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", home)
    return monkeypatch


def test_variable_wins(clean_env, tmp_path):
    clean_env.setenv("MEDSSL_CACHE", str(tmp_path / "c"))
    assert paths.cache_root() == tmp_path / "c"


def test_writable_home(clean_env, tmp_path):
    clean_env.setenv("HOME", str(tmp_path))
    assert paths.cache_root() == tmp_path / ".cache" / "medssl"
    assert paths.route_caches() is None and "MPLCONFIGDIR" not in os.environ  # a user's settings stay put


def test_unwritable_home_falls_back_to_tmpdir(clean_env, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    clean_env.setenv("HOME", str(blocker / "home"))  # under a file: not creatable, even as root
    clean_env.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    import tempfile

    clean_env.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    expected = tmp_path / "tmp" / f"medssl-{os.getuid()}"
    assert paths.cache_root() == expected
    assert paths.route_caches() == expected
    assert os.environ["MEDSSL_CACHE"] == str(expected)
    for var, sub in paths.LIBRARY_CACHES.items():
        assert os.environ[var] == str(expected / sub)


def test_route_keeps_explicit_settings(clean_env, tmp_path):
    clean_env.setenv("MEDSSL_CACHE", str(tmp_path / "c"))
    clean_env.setenv("MPLCONFIGDIR", "/somewhere/else")
    assert paths.route_caches() == Path(tmp_path / "c")
    assert os.environ["MPLCONFIGDIR"] == "/somewhere/else" and os.environ["TORCH_HOME"] == str(tmp_path / "c" / "torch")
