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
    classes = set(json.loads((tiny_cfg().data.root / "dataset.json").read_text())["labels"]) - {"background"}
    for block, split in ((metrics["val"], "val"), (metrics["test"], "test")):
        assert block["split"] == split and block["n_cases"] == 2
        assert set(block["dice"]) == classes and set(block["hd95_mm"]) == classes
        assert 0.0 <= block["dice_mean"] <= 1.0
    assert metrics["val"]["source"].startswith("imagesVal/")
    assert metrics["best"]["step"] in (3, 6) and metrics["test"]["checkpoint"].endswith("best.ckpt")
    assert metrics["best"]["val_dice_mean"] == pytest.approx(max(
        r["val/dice_mean"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "val/dice_mean" in r))
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5, 6]
    assert [r["step"] for r in log if "val/dice_mean" in r] == [3, 6]
    assert "validation Dice" in res["summary"] and "test Dice" in res["summary"] and "last.ckpt" in res["summary"]
    # the resolved config round-trips and the checkpoint is weights-only loadable
    ck = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ck["medssl"]["config"]["trainer"]["max_steps"] == 6
    assert ck["global_step"] == 6


def test_same_seed_same_metrics_and_weights(tiny_cfg, tmp_path):
    a = run_training(tiny_cfg(), out=tmp_path / "a")
    b = run_training(tiny_cfg(), out=tmp_path / "b")
    c = run_training(tiny_cfg(**{"trainer.seed": 1}), out=tmp_path / "c")
    assert a["val"]["dice"] == b["val"]["dice"] and a["test"]["dice"] == b["test"]["dice"]
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
    assert m_res["val"]["dice"] == m_ref["val"]["dice"] and m_res["test"]["dice"] == m_ref["test"]["dice"]
    w_ref, w_res = _weights(ref / "checkpoints/last.ckpt"), _weights(last)
    assert all(torch.equal(w_ref[k], w_res[k]) for k in w_ref)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines() if "loss" in x]
    assert steps == sorted(set(steps)), "resumed log has duplicated or out-of-order steps"


def test_bf16_autocast_trains(tiny_cfg, tmp_path):
    res = run_training(tiny_cfg(**{"trainer.precision": "bf16", "trainer.max_steps": 3}), out=tmp_path / "bf16")
    assert res["step"] == 3 and 0.0 <= res["val"]["dice_mean"] <= 1.0


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
    assert m["val"]["n_cases"] == 2  # validation cases sharded over 2 ranks and gathered back
    assert m["test"]["n_cases"] == 2  # and so are the test cases


def test_init_from_loads_exact_weights(tiny_cfg, tmp_path):
    run_training(tiny_cfg(**{"trainer.max_steps": 3}), out=tmp_path / "src")
    from medssl.data.dataset import read_dataset_json
    from medssl.core.weights import load_matching_weights
    from medssl.methods import build_method

    cfg = tiny_cfg()
    model = build_method(cfg, read_dataset_json(cfg.data.root))
    loaded, skipped = load_matching_weights(model.net, tmp_path / "src/checkpoints/last.ckpt", strip="net.")
    src = _weights(tmp_path / "src/checkpoints/last.ckpt")
    assert not skipped and loaded
    for name, t in model.net.state_dict().items():
        assert torch.equal(t, src[f"net.{name}"]), name


def test_labeled_seed_draws_which_cases_are_labeled(tiny_cfg):
    from medssl.engines.train import build_splits

    all_train = build_splits(tiny_cfg()).train
    first = build_splits(tiny_cfg(**{"data.num_labeled": 1})).train
    assert first == all_train[:1]
    picks = {build_splits(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": s})).train[0].name for s in range(8)}
    assert picks == {c.name for c in all_train}  # different seeds label different cases
    again = build_splits(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 3})).train
    assert again == build_splits(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 3})).train


def test_test_labels_never_reach_training_or_selection(tiny_data, tmp_path):
    """Two datasets that differ only in their test labels train to the same weights, the same
    validation curve and the same selected checkpoint; only the test block differs."""
    import shutil

    import numpy as np

    from medssl.config import load_config
    from medssl.data.io import read_volume, write_volume

    other = tmp_path / "other_test_labels"
    shutil.copytree(tiny_data, other)
    for lab in sorted((other / "labelsTs").iterdir()):
        vol = read_volume(lab)
        write_volume(vol.with_array(np.zeros_like(vol.array)), lab)  # every test label: background only
    runs = {}
    for name, root in (("a", tiny_data), ("b", other)):
        cfg = load_config(None, tiny_overrides(root))
        runs[name] = run_training(cfg, out=tmp_path / name)
    a, b = runs["a"], runs["b"]
    assert a["val"]["dice"] == b["val"]["dice"] and a["best"] == {**b["best"], "checkpoint": a["best"]["checkpoint"]}
    wa, wb = (_weights(tmp_path / r / "checkpoints/best.ckpt") for r in "ab")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a["test"]["dice"] != b["test"]["dice"]  # the test split was read, after selection


def test_validation_held_out_of_imagesTr_when_no_imagesVal(tiny_data, tmp_path):
    import shutil

    from medssl.config import load_config
    from medssl.data.splits import split_cases
    from medssl.engines.train import build_splits
    from medssl.errors import ConfigError

    root = tmp_path / "no_val"
    shutil.copytree(tiny_data, root)
    shutil.rmtree(root / "imagesVal")
    shutil.rmtree(root / "labelsVal")
    s = split_cases(root)  # 2 labeled: 1 validation (20%, at least 1), 1 training
    assert len(s.val) == 1 and len(s.train) == 1 and "held out" in s.val_source
    assert {c.name for c in s.val}.isdisjoint({c.name for c in s.train + s.test})
    assert split_cases(root, split_seed=0).val == s.val  # a pure function of the seed
    assert {split_cases(root, split_seed=k).val[0].name for k in range(8)} == {c.name for c in s.val + s.train}
    pool = {c.image for c in build_splits(load_config(None, tiny_overrides(root)), pretraining=True).pretraining_pool()}
    assert s.val[0].image not in pool and not pool & {c.image for c in s.test}  # pretraining never sees them
    with pytest.raises(DataError, match="cannot give 2 validation"):
        split_cases(root, num_val=2)
    with pytest.raises(ConfigError, match="one validation source"):
        split_cases(tiny_data, num_val=1)
    with pytest.raises(ConfigError, match="val.split"):
        load_config(None, tiny_overrides(root, **{"val.split": "test"}))


def test_unlabeled_from_train_turns_the_rest_of_the_pool_unlabeled(tiny_cfg):
    from medssl.engines.train import build_splits

    s = build_splits(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 0, "data.unlabeled_from_train": "true"}))
    plain = build_splits(tiny_cfg(**{"data.num_labeled": 1, "data.labeled_seed": 0}))
    assert len(s.train) == 1 and s.train == plain.train
    extra = [c for c in s.unlabeled if c not in plain.unlabeled]
    assert len(extra) == 1 and extra[0].label is None and extra[0].image != s.train[0].image
    assert extra[0].image not in {c.image for c in s.val + s.test}
