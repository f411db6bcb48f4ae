"""The training engine through the real Lightning loop on tiny phantoms."""

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

from medssl.engines.train import run_training
from medssl.errors import DataError

from .conftest import tiny_overrides

MEDSSL = [sys.executable, "-m", "medssl.cli"]


def _cfg_file(tmp_path: Path) -> str:
    path = tmp_path / "recipe.yaml"
    path.write_text("method: supervised\nname: test\n")
    return str(path)


def _weights(ckpt: Path) -> dict:
    return torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]


def test_train_writes_run_folder(tiny_cfg, tmp_path):
    res = run_training(tiny_cfg(), out=tmp_path / "run")
    run = tmp_path / "run"
    for name in ("config.yaml", "metrics.json", "metrics.jsonl", "checkpoints/last.ckpt", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["step"] == 6
    assert set(metrics["dice"]) == set(json.loads((tiny_cfg().data.root / "dataset.json").read_text())["labels"]) - {"background"}
    assert 0.0 <= metrics["dice_mean"] <= 1.0
    assert metrics["n_val_cases"] == 2
    assert set(metrics["hd95_mm"]) == set(metrics["dice"])
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if "val/dice_mean" in r] == [3, 6]
    assert "validation Dice" in res["summary"] and "last.ckpt" in res["summary"]
    # the resolved config round-trips and the checkpoint is weights-only loadable
    ck = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ck["medssl"]["config"]["trainer"]["max_steps"] == 6
    assert ck["global_step"] == 6


def test_same_seed_same_metrics_and_weights(tiny_cfg, tmp_path):
    a = run_training(tiny_cfg(), out=tmp_path / "a")
    b = run_training(tiny_cfg(), out=tmp_path / "b")
    c = run_training(tiny_cfg(**{"trainer.seed": 1}), out=tmp_path / "c")
    assert a["dice"] == b["dice"]
    wa, wb, wc = (_weights(tmp_path / r / "checkpoints/last.ckpt") for r in "abc")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_existing_run_needs_resume(tiny_cfg, tmp_path):
    run_training(tiny_cfg(**{"trainer.max_steps": 3}), out=tmp_path / "r")
    with pytest.raises(DataError, match="--resume"):
        run_training(tiny_cfg(**{"trainer.max_steps": 3}), out=tmp_path / "r")


def test_killed_run_resumes_to_same_result(tiny_data, tmp_path):
    """SIGKILL a run after its first checkpoint, resume it, compare with an uninterrupted run."""
    over = tiny_overrides(tiny_data, **{"trainer.max_steps": 40, "trainer.val_every": 5})
    sets = [a for o in over for a in ("--set", o)]
    ref = tmp_path / "ref"
    subprocess.run(MEDSSL + ["train", _cfg_file(tmp_path), *sets, "--out", str(ref)], check=True, capture_output=True)

    run = tmp_path / "killed"
    proc = subprocess.Popen(MEDSSL + ["train", _cfg_file(tmp_path), *sets, "--out", str(run)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.time() + 300
    while not last.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / "metrics.json").exists(), "the run finished before it could be killed"
    killed_at = torch.load(last, map_location="cpu", weights_only=True)["global_step"]
    assert 0 < killed_at < 40

    done = subprocess.run(MEDSSL + ["train", _cfg_file(tmp_path), *sets, "--out", str(run), "--resume"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    m_ref = json.loads((ref / "metrics.json").read_text())
    m_res = json.loads((run / "metrics.json").read_text())
    assert m_res["step"] == m_ref["step"] == 40
    assert m_res["dice"] == m_ref["dice"]
    w_ref, w_res = _weights(ref / "checkpoints/last.ckpt"), _weights(last)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert steps == sorted(set(steps)), "resumed log has duplicated or out-of-order steps"


def test_bf16_autocast_trains(tiny_cfg, tmp_path):
    res = run_training(tiny_cfg(**{"trainer.precision": "bf16", "trainer.max_steps": 3}), out=tmp_path / "bf16")
    assert res["step"] == 3 and 0.0 <= res["dice_mean"] <= 1.0


def test_ddp_two_cpu_processes(tiny_data, tmp_path):
    over = tiny_overrides(tiny_data, **{"trainer.devices": 2, "trainer.strategy": "ddp", "trainer.max_steps": 4,
                                        "trainer.val_every": 2})
    sets = [a for o in over for a in ("--set", o)]
    env = {**os.environ, "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    done = subprocess.run(MEDSSL + ["train", _cfg_file(tmp_path), *sets, "--out", str(tmp_path / "ddp")],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    m = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert m["step"] == 4
    assert m["n_val_cases"] == 2  # validation cases sharded over 2 ranks and gathered back


def test_init_from_loads_exact_weights(tiny_cfg, tmp_path):
    run_training(tiny_cfg(**{"trainer.max_steps": 3}), out=tmp_path / "src")
    from medssl.data.dataset import read_dataset_json
    from medssl.core.weights import load_matching_weights
    from medssl.engines.train import build_model

    cfg = tiny_cfg()
    model = build_model(cfg, read_dataset_json(cfg.data.root))
    loaded, skipped = load_matching_weights(model.net, tmp_path / "src/checkpoints/last.ckpt", strip="net.")
    src = _weights(tmp_path / "src/checkpoints/last.ckpt")
    assert not skipped and loaded
    for name, t in model.net.state_dict().items():
        assert torch.equal(t, src[f"net.{name}"]), name


def test_labeled_seed_draws_which_cases_are_labeled(tiny_cfg):
    from medssl.engines.train import build_cases

    _, all_train, _ = build_cases(tiny_cfg())
    _, first, _ = build_cases(tiny_cfg(**{"data.num_labeled": 1}))
    assert first == all_train[:1]
    picks = {build_cases(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": s}))[1][0].name for s in range(8)}
    assert picks == {c.name for c in all_train}  # different seeds label different cases
    again = build_cases(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 3}))[1]
    assert again == build_cases(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 3}))[1]
