"""``medssl review EXPORT``: starts napari with the plugin on the export (the launcher patched),
one-line errors for a folder that is not an export or a missing napari, nothing heavy at --help."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from medssl.cli import app

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")


def test_review_opens_the_export_in_napari(export, monkeypatch):
    import napari_medssl._launch as launch

    calls = []
    monkeypatch.setattr(launch, "run", lambda path, reviewer=None: calls.append((path, reviewer)))
    res = CliRunner().invoke(app, ["review", str(export), "--reviewer", "dr c"])
    assert res.exit_code == 0, res.output
    assert calls == [(export, "dr c")]


def _medssl(*args, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "medssl.cli", *args], capture_output=True, text=True, env=env)


def test_review_errors_are_one_line(tmp_path):
    res = _medssl("review", str(tmp_path))
    assert res.returncode == 1 and res.stderr.strip().count("\n") == 0
    assert "is not a medssl pseudo-label export" in res.stderr and "Traceback" not in res.stderr
    (tmp_path / "manifest.json").write_text('{"format": "other"}')
    res = _medssl("review", str(tmp_path))
    assert res.returncode == 1 and "not a medssl pseudo-label manifest" in res.stderr and "Traceback" not in res.stderr


def test_review_without_napari_says_how_to_install(export, tmp_path):
    # a sitecustomize that hides napari from importlib, as on a machine without the extra
    (tmp_path / "sitecustomize.py").write_text(
        "import importlib.util as u\n_f = u.find_spec\n"
        "u.find_spec = lambda n, *a, **k: None if n.split('.')[0] == 'napari' else _f(n, *a, **k)\n")
    res = _medssl("review", str(export), env_extra={"PYTHONPATH": str(tmp_path)})
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert res.stderr.strip() == ("error: napari not installed: pip install -e plugins/napari-medssl 'napari>=0.5' "
                                  "PySide6-Essentials (from the medssl repository)")


def test_help_does_not_import_napari():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom medssl.cli import app\n"
            "r = CliRunner().invoke(app, ['review', '--help'])\nassert r.exit_code == 0, r.output\n"
            "print([m for m in ('napari', 'napari_medssl', 'qtpy', 'PySide6') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_review_without_a_display_is_one_line(export):
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    res = subprocess.run([sys.executable, "-m", "medssl.cli", "review", str(export)], capture_output=True, text=True,
                         env=env)
    assert res.returncode == 1 and res.stderr.startswith("error: no display to open napari on")
    assert "Traceback" not in res.stderr
