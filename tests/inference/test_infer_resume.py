"""Resume, faults and the command line of `medssl infer`: finished cases are skipped (files
untouched), a changed input or a missing output is redone, a corrupt file goes to errors.csv and
the command exits 1 with one line and no traceback."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from medssl.data.io import read_volume, write_volume
from medssl.inference.case_outputs import OutputOptions
from medssl.inference.infer import run_inference

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def cases_dir(tiny_model, tmp_path: Path) -> Path:
    """Three small phantom volumes (32x32x16) in a folder of their own."""
    _, data = tiny_model
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted((data / "imagesUnlabeled").glob("*.nii.gz"))[:3]:
        shutil.copy(p, folder / p.name)
    return folder


def _stamps(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir() if not p.name.endswith(".csv")}


def test_rerun_skips_finished_and_redoes_changed_or_incomplete(tiny_model, cases_dir: Path, tmp_path: Path):
    ckpt, _ = tiny_model
    out = tmp_path / "out"
    first = run_inference(ckpt, cases_dir, out, progress=False)
    names = sorted(first.done)
    assert first.ok and len(names) == 3 and names[0].startswith("phantom_ul_")  # _0000 dropped
    before = _stamps(out)

    again = run_inference(ckpt, cases_dir, out, progress=False)
    assert again.skipped == names and again.done == [] and _stamps(out) == before
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert [r["status"] for r in rows] == ["skipped"] * 3 and rows[0]["volume_ml_liver"] != ""

    # a changed input file is redone; a case whose output was deleted is redone; the third is kept
    src = sorted(cases_dir.iterdir())[0]
    vol = read_volume(src)
    write_volume(vol.with_array(vol.array[::-1].copy()), src)
    (out / f"{names[1]}_uncertainty.nii.gz").unlink()
    third = run_inference(ckpt, cases_dir, out, progress=False)
    assert sorted(third.done) == names[:2] and third.skipped == [names[2]]
    after = _stamps(out)
    assert after[f"{names[2]}.json"] == before[f"{names[2]}.json"]
    assert after[f"{names[0]}.json"] != before[f"{names[0]}.json"]
    assert (out / f"{names[1]}_uncertainty.nii.gz").is_file()

    # a JSON of another model, an output replaced by another file, other options: not finished
    rec = json.loads((out / f"{names[2]}.json").read_text())
    (out / f"{names[2]}.json").write_text(json.dumps({**rec, "model_sha256": "0" * 64}))
    with open(out / f"{names[0]}.nii.gz", "ab") as fh:
        fh.write(b"\0")
    fourth = run_inference(ckpt, cases_dir, out, progress=False)
    assert sorted(fourth.done) == [names[0], names[2]] and fourth.skipped == [names[1]]
    fifth = run_inference(ckpt, cases_dir, out, OutputOptions(preview=True), progress=False)
    assert sorted(fifth.done) == names and all((out / f"{n}.png").is_file() for n in names)
    assert sorted(run_inference(ckpt, cases_dir, out, OutputOptions(preview=True), force=True, progress=False).done) == names


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "medssl.cli", "infer", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=600)


def test_corrupt_case_goes_to_errors_csv_and_exit_code_1(tiny_model, cases_dir: Path, tmp_path: Path):
    ckpt, _ = tiny_model
    (cases_dir / "broken_0000.nii.gz").write_bytes(os.urandom(3000))
    out = tmp_path / "out"
    proc = _cli("--checkpoint", str(ckpt), "--input", str(cases_dir), "--output", str(out), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("4 case(s): 3 predicted, 0 already done, 1 failed (see ") and "errors.csv" in last
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert [e["case"] for e in errors] == ["broken"]
    assert "cannot read as NIfTI" in errors[0]["reason"] and "\n" not in errors[0]["reason"]
    assert errors[0]["input"].endswith("broken_0000.nii.gz")
    assert not (out / "broken.json").exists() and len(list(out.glob("phantom_ul_*.json"))) == 3
    summary = {r["case"]: r["status"] for r in csv.DictReader(open(out / "summary.csv"))}
    assert summary["broken"] == "failed" and list(summary.values()).count("done") == 3

    # fixed input: the rerun predicts only that case, exits 0 and drops the stale errors.csv
    (cases_dir / "broken_0000.nii.gz").unlink()
    shutil.copy(sorted(cases_dir.iterdir())[0], cases_dir / "broken_0000.nii.gz")
    proc = _cli("--checkpoint", str(ckpt), "--input", str(cases_dir), "--output", str(out), "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "4 case(s): 1 predicted, 3 already done, 0 failed" in proc.stdout and not (out / "errors.csv").exists()


def test_cli_errors_of_the_whole_run_are_one_line(tmp_path: Path):
    ckpt = tmp_path / "any.ckpt"  # the input is checked first, before the model is loaded
    proc = _cli("--checkpoint", str(ckpt), "--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "o"))
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "no such file or folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_passes_options_to_the_engine(monkeypatch, tmp_path: Path):
    from typer.testing import CliRunner

    import medssl.inference.infer as infer
    from medssl.cli import app
    from medssl.inference.infer import InferResult

    seen = {}

    def fake(checkpoint, input, output, **kw):
        seen.update(kw, checkpoint=checkpoint, input=input)
        return InferResult(Path(output), done=["a"], total=1)

    monkeypatch.setattr(infer, "run_inference", fake)
    res = CliRunner().invoke(app, ["infer", "--checkpoint", "m.ckpt", "--input", "in", "--output", str(tmp_path),
                                   "--uncertainty-dtype", "float16", "--probabilities", "--modality", "CT",
                                   "--min-slices", "5", "--orientation", "axial", "--description", "body"])
    assert res.exit_code == 0, res.output
    opts, series = seen["options"], seen["series"]
    assert opts.uncertainty_dtype == "float16" and opts.probabilities and not opts.preview
    assert (series.modality, series.min_slices, series.orientation, series.description) == ("CT", 5, "axial", "body")
    bad = CliRunner().invoke(app, ["infer", "--checkpoint", "m", "--input", "i", "--output", "o", "--uncertainty-dtype", "int8"])
    assert bad.exit_code == 2
