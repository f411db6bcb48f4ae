"""`medssl doctor`: versions, devices, a writable cache folder, an optional model verified; exit 1
when a check fails (the images' HEALTHCHECK). A model folder's check: tests/inference/test_export.py."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from medssl.cli import app
from medssl.doctor import Check, format_checks, healthy, run_doctor

runner = CliRunner()


def _by_name(checks):
    return {c.name: c for c in checks}


def test_healthy_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    checks = _by_name(run_doctor())
    assert checks["versions"].status == "ok" and "torch 2." in checks["versions"].detail
    assert "torch threads" in checks["cpu"].detail and "bf16" in checks["cpu"].detail
    assert checks["cuda"].status in ("ok", "info") and checks["cache"].status == "ok"
    assert (tmp_path / "cache").is_dir() and not list((tmp_path / "cache").iterdir())  # the probe is removed
    assert healthy(list(checks.values()))


def test_unwritable_cache_fails(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("MEDSSL_CACHE", str(blocker / "cache"))  # under a file: never creatable, even as root
    checks = run_doctor()
    assert _by_name(checks)["cache"].status == "fail" and not healthy(checks)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1 and "fail  cache" in result.output


def test_require_cuda_fails_without_a_gpu(tmp_path, monkeypatch):
    import torch

    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path))
    if torch.cuda.is_available():
        return
    assert _by_name(run_doctor(require_cuda=True))["cuda"].status == "fail"


def test_format():
    text = format_checks([Check("cache", "ok", "/tmp/x writable"), Check("model", "fail", "bad")])
    assert text.splitlines() == ["ok    cache  /tmp/x writable", "fail  model  bad"]
