"""The MedMNIST tests keep medssl's cache (md5 records) in a folder of their own."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path_factory.getbasetemp() / "medssl_cache"))
