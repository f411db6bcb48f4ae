"""UMCT through the real training loop on tiny phantoms, pseudo-label export, reviewed labels."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medssl.config import load_config
from medssl.data.io import read_volume, write_volume
from medssl.engines.train import build_splits, run_training
from medssl.errors import ConfigError

TINY = {
    "method": "umct",
    "model.name": "multiview_asym_unet",
    "model.channels": "[4,8,16]",
    "model.dropout": 0.2,
    "data.patch_size": "[16,16,16]",
    "data.batch_size": 2,
    "trainer.max_steps": 6,
    "trainer.val_every": 3,
    "trainer.progress": "false",
    "trainer.log_every": 1,
    "trainer.threads": 1,
    "val.roi_size": "[16,16,16]",
    "umct.stage1_steps": 2,
    "umct.rampup_steps": 2,
    "umct.mc_samples": 2,
}


def umct_cfg(root, **extra):
    over = {**TINY, "data.root": str(root), **extra}
    return load_config(None, [f"{k}={v}" for k, v in over.items()])


def _log(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def umct_run(tiny_data, tmp_path_factory):
    run = tmp_path_factory.mktemp("umct") / "run"
    res = run_training(umct_cfg(tiny_data), out=run)
    return run, res


def test_umct_trains_with_cotraining_after_stage1(umct_run):
    run, res = umct_run
    train = [r for r in _log(run) if "loss" in r]
    assert [r["step"] for r in train] == [1, 2, 3, 4, 5, 6]
    # stage 1 (steps 1-2): supervised only; stage 2: co-training loss with a ramped weight
    assert all("train/cotrain" not in r for r in train[:2])
    assert all("train/cotrain" in r and r["train/cotrain"] >= 0 for r in train[2:])
    lams = [r["train/lambda"] for r in train]
    assert lams[:2] == [0.0, 0.0] and lams[-1] == pytest.approx(1.0) and lams == sorted(lams)
    assert all(0.0 <= r["train/confidence"] <= 1.0 for r in train[2:])
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == "umct" and set(metrics["val"]["hd95_mm"]) == set(metrics["val"]["dice"])
    assert metrics["test"]["n_cases"] == 2


def test_single_view_and_average_ablations_train(tiny_data, tmp_path):
    single = run_training(umct_cfg(tiny_data, **{"umct.num_views": 1, "trainer.max_steps": 3}), out=tmp_path / "s")
    assert single["step"] == 3
    assert all("train/cotrain" not in r for r in _log(tmp_path / "s") if "loss" in r)
    avg = run_training(umct_cfg(tiny_data, **{"umct.fusion": "average", "umct.confidence_weighting": "false",
                                              "trainer.max_steps": 4}), out=tmp_path / "a")
    log = [r for r in _log(tmp_path / "a") if "loss" in r]
    assert "train/cotrain" in log[-1] and log[-1]["train/confidence"] == 1.0  # no confidence weighting


def test_non_cubic_patches_are_refused(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="cubic"):
        run_training(umct_cfg(tiny_data, **{"data.patch_size": "[16,16,8]"}), out=tmp_path / "x")


def test_six_views_train(tiny_data, tmp_path):
    res = run_training(umct_cfg(tiny_data, **{"umct.num_views": 6, "trainer.max_steps": 3}), out=tmp_path / "six")
    assert res["step"] == 3


def test_pseudo_label_export_and_review_loop(umct_run, tiny_data, tmp_path, monkeypatch):
    from medssl.data.dataset import list_cases
    from medssl.inference.predictor import Predictor
    from medssl.inference.pseudo_label import export_pseudo_labels
    from medssl.inference.review_manifest import ReviewManifest, set_status

    run, _ = umct_run
    out = tmp_path / "pl"
    before = sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*"))
    manifest_path = export_pseudo_labels(run / "checkpoints/last.ckpt", tiny_data, out, split="unlabeled", progress=False)
    assert sorted(p.relative_to(tiny_data) for p in tiny_data.rglob("*")) == before  # nothing written into the dataset
    manifest = ReviewManifest.read(manifest_path)
    unl = list_cases(tiny_data, "unlabeled")
    assert [c.name for c in manifest.cases] == [c.name for c in unl]
    for entry, case in zip(manifest.cases, unl):
        src = read_volume(case.image)
        assert entry.status == "pending" and 0.0 <= entry.confidence <= 1.0
        for rel in [entry.label, entry.uncertainty, *entry.views]:
            vol = read_volume(out / rel)
            assert vol.same_geometry(src), rel  # written in the input geometry
        assert len(entry.views) == 3
        lab = read_volume(out / entry.label).array
        assert set(np.unique(lab)) <= {0, 1, 2, 3}
        unc = read_volume(out / entry.uncertainty).array
        assert unc.min() >= 0 and unc.max() <= 1
        assert entry.mean_uncertainty == pytest.approx(float(unc.mean()), abs=1e-4)
        voxel_ml = float(np.prod(src.spacing)) / 1000
        assert entry.foreground_ml == pytest.approx(float((lab > 0).sum()) * voxel_ml, abs=1e-3)

    # resuming skips finished cases
    calls = []
    orig = Predictor.predict_volume
    monkeypatch.setattr(Predictor, "predict_volume", lambda self, v: calls.append(1) or orig(self, v))
    export_pseudo_labels(run / "checkpoints/last.ckpt", tiny_data, out, progress=False)
    assert not calls
    assert ReviewManifest.read(manifest_path).cases == manifest.cases

    # review: edit one (with a corrected label), the rest stay pending
    case0 = manifest.cases[0]
    edited = tmp_path / "edited.nii.gz"
    src = read_volume(out / case0.label)
    write_volume(src.with_array(np.zeros_like(src.array)), edited)
    set_status(manifest_path, case0.name, "edited", reviewed_label=edited, reviewer="test")
    cfg = umct_cfg(tiny_data, **{"data.extra_labels": str(manifest_path)})
    reviewed = [c for c in build_splits(cfg).train if c.name.startswith("reviewed_")]
    assert [c.name for c in reviewed] == [f"reviewed_{case0.name}"] and reviewed[0].label == edited
    # and training runs with them
    res = run_training(umct_cfg(tiny_data, **{"data.extra_labels": str(manifest_path), "trainer.max_steps": 3}),
                       out=tmp_path / "with_reviewed")
    assert res["step"] == 3
    # the run records which reviewed cases (and which label files, by hash) it trained on
    from medssl.inference.review_manifest import sha256_file

    for record in (res["reviewed"], json.loads((tmp_path / "with_reviewed" / "reviewed_cases.json").read_text())):
        assert [(c["name"], c["status"]) for c in record["cases"]] == [(case0.name, "edited")]
        assert record["cases"][0]["label_sha256"] == sha256_file(edited)


def test_pseudo_label_cli_errors(tiny_data, tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "medssl.cli", "pseudo-label", "--checkpoint", str(tmp_path / "no.ckpt"),
                          "--data", str(tiny_data), "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert res.returncode == 1 and "checkpoint not found" in res.stderr and "Traceback" not in res.stderr


def test_init_2d_from_config_sets_inplane_kernels(tiny_data, tmp_path):
    """`umct.init_2d` (a local 2D twin checkpoint) initialises every view's in-plane kernels."""
    from medssl.data.dataset import read_dataset_json
    from medssl.methods import build_method
    from medssl.nets.multiview_unet import MultiViewAsymUNet

    net2d = MultiViewAsymUNet(num_views=1, in_channels=1, out_channels=4, channels=(4, 8, 16), spatial_dims=2)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net2d.state_dict().items()}}, tmp_path / "twin2d.ckpt")
    cfg = umct_cfg(tiny_data, **{"umct.init_2d": str(tmp_path / "twin2d.ckpt")})
    model = build_method(cfg, read_dataset_json(tiny_data))
    sd3 = model.net.state_dict()
    compared = 0
    for name, w2 in net2d.state_dict().items():
        w3 = sd3[name]
        if w2.dim() == 4 and w2.shape[-2:] == (3, 3):  # an in-plane conv: (out, in, 3, 3) -> (3*out, in, 3, 3, 1)
            assert w3.shape[-1] == 1
            for v in range(3):
                torch.testing.assert_close(w3[v * w2.shape[0]:(v + 1) * w2.shape[0], ..., 0], w2)
            compared += 1
    assert compared >= 5  # encoder, bottleneck and decoder blocks of a 3-level net


def test_view_reduction_sum_scales_the_supervised_loss_by_the_number_of_views(tiny_data):
    """The paper sums the losses over views: with the same weights and batch, the 'sum' loss is N
    times the 'mean' one in stage 1 (supervised only)."""
    from medssl.data.dataset import read_dataset_json
    from medssl.methods import build_method

    spec = read_dataset_json(tiny_data)
    torch.manual_seed(0)
    mean = build_method(umct_cfg(tiny_data), spec)
    torch.manual_seed(0)
    summed = build_method(umct_cfg(tiny_data, **{"umct.view_reduction": "sum"}), spec)
    summed.load_state_dict(mean.state_dict())
    for m in (mean, summed):
        m.log = lambda *a, **k: None
    batch = {"image": torch.randn(2, 1, 16, 16, 16), "label": torch.randint(0, 4, (2, 1, 16, 16, 16))}
    torch.manual_seed(1)  # the same dropout masks in both
    lm = mean.training_step(batch, 0)
    torch.manual_seed(1)
    ls = summed.training_step(batch, 0)
    assert ls.item() == pytest.approx(3 * lm.item(), rel=1e-5)
