"""Faults around a training run: interruption, divergence, bad run folders, a corrupt resume
point, a finished run resumed, non-finite metrics, progress in logs. Each is driven the way a user
meets it (the CLI in a subprocess where the exit code and the printed line matter)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from medssl.config import load_config
from medssl.engines.train import run_training
from medssl.errors import DataError, TrainingDiverged
from tests.engines.conftest import tiny_cfg, tiny_data, tiny_overrides  # noqa: F401  (fixtures)

MEDSSL = [sys.executable, "-m", "medssl.cli"]


def _recipe(tmp_path: Path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("method: supervised\nname: fault\n")
    return str(path)


def _sets(root: Path, **extra) -> list[str]:
    return [a for o in tiny_overrides(root, **extra) for a in ("--set", o)]


def _one_line_error(res: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    assert res.returncode == code, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith(("error:", "interrupted:"))]
    assert len(lines) == 1, res.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def test_ctrl_c_says_how_to_resume_and_keeps_the_checkpoint(tiny_data, tmp_path):
    run = tmp_path / "run"
    cmd = MEDSSL + ["train", _recipe(tmp_path), *_sets(tiny_data, **{"trainer.max_steps": 400, "trainer.val_every": 3}),
                    "--out", str(run)]
    # a shell that starts jobs in the background hands them SIGINT ignored (and Python then installs
    # no KeyboardInterrupt handler): give the child the default disposition, as a terminal would
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    res = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    line = _one_line_error(res, 130, "interrupted: ", "at step", "continue with --resume")
    assert "intact" in line
    ck = torch.load(last, map_location="cpu", weights_only=True)  # the checkpoint is intact
    assert 0 < ck["global_step"] < 400
    assert not (run / "failed.json").exists() and not (run / "metrics.json").exists()


def test_diverged_loss_stops_the_run_and_marks_the_folder(tiny_cfg, tmp_path, monkeypatch):
    from medssl.methods.supervised import SupervisedSegmentation

    orig = SupervisedSegmentation.training_step

    def nan_after_3(self, batch, i):
        loss = orig(self, batch, i)
        return loss * float("nan") if self.global_step >= 3 else loss

    monkeypatch.setattr(SupervisedSegmentation, "training_step", nan_after_3)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4"):
        run_training(tiny_cfg(**{"trainer.max_steps": 6}), out=tmp_path / "run")
    failed = json.loads((tmp_path / "run" / "failed.json").read_text())
    assert "TrainingDiverged" in failed["error"]
    ck = torch.load(tmp_path / "run/checkpoints/last.ckpt", weights_only=True)  # from before the divergence
    assert all(torch.isfinite(t).all() for t in ck["state_dict"].values())


def test_a_run_failing_before_its_first_checkpoint_leaves_nothing(tiny_cfg, tmp_path, monkeypatch):
    from medssl.methods.supervised import SupervisedSegmentation

    def boom(self, batch, i):
        raise RuntimeError("out of memory (simulated)")

    monkeypatch.setattr(SupervisedSegmentation, "training_step", boom)
    with pytest.raises(RuntimeError):
        run_training(tiny_cfg(), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_bad_run_folders_and_a_corrupt_resume_point(tiny_data, tmp_path):
    rec = _recipe(tmp_path)
    afile = tmp_path / "a_file"
    afile.write_text("x")
    res = subprocess.run(MEDSSL + ["train", rec, *_sets(tiny_data), "--out", str(afile)], capture_output=True, text=True)
    _one_line_error(res, 1, str(afile), "not a file")
    assert afile.read_text() == "x"
    res = subprocess.run(MEDSSL + ["train", rec, *_sets(tiny_data), "--out", str(afile / "run")],
                         capture_output=True, text=True)  # a parent that is a file: cannot be created
    _one_line_error(res, 1, "cannot write the run folder")
    assert afile.read_text() == "x"


def test_unwritable_run_folder(tiny_data, tmp_path):
    rec = _recipe(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: nothing to test here
            pytest.skip("running as root: a read-only folder is writable")
        res = subprocess.run(MEDSSL + ["train", rec, *_sets(tiny_data), "--out", str(locked / "run")],
                             capture_output=True, text=True)
        _one_line_error(res, 1, "run")
    finally:
        os.chmod(locked, 0o700)


def test_corrupt_resume_point_is_one_line(tiny_data, tmp_path):
    rec = _recipe(tmp_path)
    run = tmp_path / "run"
    ck = run / "checkpoints" / "last.ckpt"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"PK\x03\x04 truncated")
    res = subprocess.run(MEDSSL + ["train", rec, *_sets(tiny_data), "--out", str(run), "--resume"],
                         capture_output=True, text=True)
    _one_line_error(res, 1, "last.ckpt", "resume point is unreadable")
    assert ck.read_bytes() == b"PK\x03\x04 truncated"  # nothing overwritten


def test_resume_of_a_finished_run_changes_nothing(tiny_cfg, tmp_path):
    cfg = tiny_cfg(**{"trainer.max_steps": 3})
    run_training(cfg, out=tmp_path / "run")
    before = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "config.yaml"}
    res = run_training(cfg, out=tmp_path / "run", resume=True)
    assert "is complete (step 3 of 3)" in res["summary"]
    after = {p: p.read_bytes() for p in (tmp_path / "run").rglob("*") if p.is_file() and p.name != "config.yaml"}
    assert after == before


def test_metrics_files_stay_valid_json_with_undefined_values(tiny_cfg, tmp_path):
    run_training(tiny_cfg(**{"trainer.max_steps": 3}), out=tmp_path / "run")
    for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.jsonl"))
    text = (tmp_path / "run/metrics.json").read_text()
    m = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in metrics.json"))
    hd = [v for block in ("val", "test") for v in m[block]["hd95_mm"].values()]
    if None in hd:  # a class absent from a case: null, and named
        assert any("hd95" in k for k in m["nonfinite"])


def test_dumps_finite_by_hand():
    from medssl.core.jsonfile import dumps_finite

    rec = json.loads(dumps_finite({"a": 1.0, "b": float("nan"), "c": {"d": [float("inf"), 2]}}))
    assert rec == {"a": 1.0, "b": None, "c": {"d": [None, 2]}, "nonfinite": ["b", "c.d.0"]}


def test_progress_in_a_log_is_plain_lines_on_stderr(tiny_data, tmp_path):
    res = subprocess.run(MEDSSL + ["train", _recipe(tmp_path), *_sets(tiny_data, **{"trainer.progress": "true"}),
                                   "--out", str(tmp_path / "run")], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "\r" not in res.stderr and "\x1b[" not in res.stderr and "\r" not in res.stdout
    assert "step 6/6: loss" in res.stderr


def test_usage_errors_exit_2(tiny_data, tmp_path):
    for args in (["sample-data", str(tmp_path / "s"), "--labeled", "-1"],
                 ["pseudo-label", "--checkpoint", "x", "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                  "--split", "foo"],
                 ["pseudo-label", "--checkpoint", "x", "--data", str(tiny_data), "--out", str(tmp_path / "o"),
                  "--mc-samples", "0"]):
        res = subprocess.run(MEDSSL + args, capture_output=True, text=True)
        assert res.returncode == 2 and "Traceback" not in res.stderr, (args, res.stderr)
    assert not (tmp_path / "s").exists() and not (tmp_path / "o").exists()


def test_config_errors_create_no_run_folder(tiny_data, tmp_path):
    with pytest.raises(DataError):
        run_training(load_config(None, tiny_overrides(tmp_path / "missing")), out=tmp_path / "run")
    assert not (tmp_path / "run").exists()


def _broken_copy(tiny_data, tmp_path, fault: str) -> Path:
    import shutil

    import numpy as np

    from medssl.data.io import read_volume, write_volume

    root = tmp_path / f"broken_{fault}"
    shutil.copytree(tiny_data, root)
    folder, voxel, value = {"nan": ("imagesTr", (3, 3, 3), np.nan), "label7": ("labelsVal", (0, 0, 0), 7),
                            "unlabeled_nan": ("imagesUnlabeled", (1, 1, 1), np.inf)}[fault]
    target = sorted((root / folder).iterdir())[0]
    vol = read_volume(target)
    arr = vol.array.astype(np.float32) if isinstance(value, float) else vol.array.copy()
    arr[voxel] = value
    write_volume(vol.with_array(arr), target)
    return root, target


@pytest.mark.parametrize("fault,needle", [("nan", "not finite"), ("label7", "not declared in dataset.json: 7")])
def test_train_refuses_broken_cases_before_making_the_run_folder(tiny_data, tmp_path, fault, needle):
    root, target = _broken_copy(tiny_data, tmp_path, fault)
    res = subprocess.run(MEDSSL + ["train", _recipe(tmp_path), *_sets(root), "--out", str(tmp_path / "run")],
                         capture_output=True, text=True)
    _one_line_error(res, 1, target.name, needle)
    assert not (tmp_path / "run").exists()


def test_pseudo_label_refuses_a_broken_image_before_writing(tiny_data, tmp_path):
    ck_run = tmp_path / "ck"
    run_training(load_config(None, tiny_overrides(tiny_data, **{"trainer.max_steps": 2, "trainer.val_every": 2})),
                 out=ck_run)
    root, target = _broken_copy(tiny_data, tmp_path, "unlabeled_nan")
    res = subprocess.run(MEDSSL + ["pseudo-label", "--checkpoint", str(ck_run / "checkpoints/last.ckpt"),
                                   "--data", str(root), "--out", str(tmp_path / "pl")], capture_output=True, text=True)
    _one_line_error(res, 1, target.name, "not finite")
    assert not (tmp_path / "pl").exists()
