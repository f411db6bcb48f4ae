"""`medssl export`: a model folder (safetensors weights, config, labels, plan, manifest) that
`medssl infer` takes instead of the checkpoint and that predicts exactly what the checkpoint
predicts; a changed, truncated or missing file is refused with one line naming it."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.errors import DataError
from medssl.inference import model_package as pkg
from medssl.inference.export import export_model
from medssl.inference.infer import run_inference
from tests.inference.conftest import FAST

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def planned_model(tiny_model, tmp_path_factory) -> Path:
    """best.ckpt of a supervised run on the tiny phantoms with a preprocessing plan (plan.json travels)."""
    from medssl.config import load_config
    from medssl.engines.train import run_training
    from tests.engines.conftest import tiny_overrides

    _, data = tiny_model
    out = tmp_path_factory.mktemp("planned") / "run"
    run_training(load_config(None, tiny_overrides(data, **FAST, **{"data.plan": "auto"})), out=out)
    return out


def _same_outputs(a: Path, b: Path, case: str) -> None:
    for name in (f"{case}.nii.gz", f"{case}_uncertainty.nii.gz"):
        va, vb = read_volume(a / name), read_volume(b / name)
        assert va.same_geometry(vb)
        np.testing.assert_array_equal(va.array, vb.array, err_msg=name)


@pytest.mark.parametrize("which", ["plain", "planned"])
def test_export_then_infer_predicts_what_the_checkpoint_predicts(tiny_model, planned_model, tmp_path, which):
    ckpt, data = tiny_model
    run = ckpt.parent.parent if which == "plain" else planned_model
    model = tmp_path / "model"
    result = export_model(run, model)
    names = {pkg.WEIGHTS, pkg.CONFIG, pkg.DATASET, pkg.MODEL, pkg.MANIFEST} | ({pkg.PLAN} if which == "planned" else set())
    assert {p.name for p in model.iterdir()} == names and set(result["files"]) == names
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left
    manifest = json.loads((model / pkg.MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        data_bytes = (model / name).read_bytes()
        assert entry == {"sha256": hashlib.sha256(data_bytes).hexdigest(), "bytes": len(data_bytes)}
    info = json.loads((model / pkg.MODEL).read_text())
    assert info["class_names"] == ["background", "liver", "kidney", "spleen"] and info["medssl_version"]
    assert json.loads((model / pkg.DATASET).read_text())["labels"]["liver"] == 1
    assert "init_from" not in (model / pkg.CONFIG).read_text()

    image = data / "imagesTs"
    by_ckpt = run_inference(run / "checkpoints" / "best.ckpt", image, tmp_path / "a", progress=False)
    by_model = run_inference(model, image, tmp_path / "b", progress=False)
    assert by_ckpt.ok and by_model.ok and by_ckpt.done == by_model.done and by_model.done
    for case in by_model.done:
        _same_outputs(tmp_path / "a", tmp_path / "b", case)
    rec = json.loads((tmp_path / "b" / f"{by_model.done[0]}.json").read_text())
    assert rec["model"]["sha256"] == result["manifest_sha256"]
    if which == "planned":
        assert rec["plan"] == json.loads((model / pkg.PLAN).read_text())


def test_model_folder_is_read_without_unpickling(tiny_model, tmp_path, monkeypatch):
    import torch

    from medssl.inference.load import load_predictor

    ckpt, _ = tiny_model
    export_model(ckpt, tmp_path / "m")

    def no_pickle(*a, **k):
        raise AssertionError("torch.load called on a model folder")

    monkeypatch.setattr(torch, "load", no_pickle)
    predictor = load_predictor(tmp_path / "m")
    assert predictor.class_names == ["background", "liver", "kidney", "spleen"]


def test_export_refuses_a_full_folder_unless_forced(tiny_model, tmp_path):
    ckpt, _ = tiny_model
    out = tmp_path / "m"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty; --force"):
        export_model(ckpt, out)
    assert (out / "notes.txt").read_text() == "mine"
    export_model(ckpt, out, force=True)
    assert not (out / "notes.txt").exists() and (out / pkg.MANIFEST).is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    with pytest.raises(DataError, match="no checkpoints/best.ckpt"):
        export_model(tmp_path, tmp_path / "other")


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> Path:
    ckpt, _ = tiny_model
    return export_model(ckpt, tmp_path_factory.mktemp("exported") / "model")["out"]


def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("damage, message", [
    ("flip", "weights.safetensors: changed since export: sha256"),
    ("truncate", "weights.safetensors: truncated: "),
    ("append", "config.yaml: grown: "),
    ("delete", "dataset.json: missing"),
    ("no-manifest", "no manifest.json: not a medssl model folder"),
    ("bad-manifest", "manifest.json: is not valid JSON"),
])
def test_damaged_model_folder_is_refused(exported, tmp_path, damage, message):
    m = _copy(exported, tmp_path / "m")
    weights = m / pkg.WEIGHTS
    if damage == "flip":
        raw = bytearray(weights.read_bytes())
        raw[-1] ^= 0x01
        weights.write_bytes(bytes(raw))
    elif damage == "truncate":
        os.truncate(weights, weights.stat().st_size // 2)
    elif damage == "append":
        with open(m / pkg.CONFIG, "a") as fh:
            fh.write("\n")
    elif damage == "delete":
        (m / pkg.DATASET).unlink()
    elif damage == "no-manifest":
        (m / pkg.MANIFEST).unlink()
    else:
        (m / pkg.MANIFEST).write_text("{")
    with pytest.raises(DataError) as info:
        pkg.read_model_package(m)
    assert message in str(info.value)


def test_cli_refuses_a_changed_weights_file_in_one_line(exported, tiny_model, tmp_path):
    _, data = tiny_model
    m = _copy(exported, tmp_path / "m")
    raw = bytearray((m / pkg.WEIGHTS).read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (m / pkg.WEIGHTS).write_bytes(bytes(raw))
    proc = subprocess.run([sys.executable, "-m", "medssl.cli", "infer", "--model", str(m), "--input",
                           str(data / "imagesTs"), "--output", str(tmp_path / "out")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("error: ") and f"{m / pkg.WEIGHTS}: changed since export" in lines[0]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").glob("*.nii.gz"))


def test_doctor_verifies_the_model_folder(exported, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from medssl.cli import app

    runner = CliRunner()
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache"))
    result = runner.invoke(app, ["doctor", "--json"], env={"MEDSSL_MODEL": str(exported)})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    model = next(c for c in report["checks"] if c["name"] == "model")
    assert report["healthy"] and model["status"] == "ok" and "verified" in model["detail"]
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in exported.iterdir():
        (broken / p.name).write_bytes(p.read_bytes())
    (broken / "dataset.json").write_text("{}")
    result = runner.invoke(app, ["doctor", "--model", str(broken)])
    assert result.exit_code == 1 and "fail  model" in result.output and "dataset.json" in result.output
