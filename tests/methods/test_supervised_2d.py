"""2D slice fine-tuning (method supervised_2d): slices in, per-volume 3D evaluation out."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.config import load_config
from medssl.data.dataset import read_dataset_json
from medssl.engines.train import run_training
from medssl.errors import ConfigError
from medssl.methods import build_method
from tests.engines.conftest import tiny_overrides

SLICES = {"method": "supervised_2d", "model.name": "multiview_asym_unet", "model.channels": "[4,8,16]",
          "model.dropout": 0.0, "data.patch_size": "[32,32,1]", "val.roi_size": "[32,32,1]", "data.batch_size": 4}


def _model(root, **extra):
    cfg = load_config(None, tiny_overrides(root, **{**SLICES, **extra}))
    return build_method(cfg, read_dataset_json(root))


def test_the_network_is_2d_and_takes_slices(tiny_data):
    m = _model(tiny_data)
    k = read_dataset_json(tiny_data).num_classes
    assert m.net.spatial_dims == 2 and m.spatial_dims == 2
    assert not any(isinstance(x, torch.nn.Conv3d) for x in m.net.modules())
    x = torch.randn(3, 1, 32, 32, 1)
    assert m(x).shape == (3, k, 32, 32, 1)
    assert torch.equal(m(x)[..., 0], m(x[..., 0]))
    with pytest.raises(ValueError, match="slices"):
        m(torch.randn(1, 1, 32, 32, 2))


def test_volume_prediction_is_the_stack_of_slice_predictions(tiny_data):
    """Validation / test scores of a volume = the 2D network on each of its slices, stacked (one
    window per slice when the slice has the ROI's in-plane size)."""
    torch.manual_seed(0)
    m = _model(tiny_data).eval()
    k = read_dataset_json(tiny_data).num_classes
    vol = torch.randn(1, 1, 32, 32, 5)
    with torch.no_grad():
        scores = m.predictor().scores(vol)
        ref = torch.stack([m.net(vol[..., z]) for z in range(5)], dim=-1)
    assert scores.shape == (1, k, 32, 32, 5)
    assert torch.allclose(scores, ref, atol=1e-5)
    with torch.no_grad():  # other in-plane sizes: padded / tiled per slice, still one output per voxel
        assert m.predictor().scores(torch.randn(1, 1, 27, 45, 3)).shape == (1, k, 27, 45, 3)


def test_slices_need_a_unit_last_axis(tiny_data):
    with pytest.raises(ConfigError, match=r"\[H, W, 1\]"):
        _model(tiny_data, **{"data.patch_size": "[32,32,8]", "val.roi_size": "[32,32,8]"})


def test_tiny_slice_finetune_through_the_real_loop(tiny_data, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_data, **SLICES, **{"trainer.max_steps": 4, "trainer.val_every": 2,
                                                                  "data.num_labeled": 1, "data.labeled_seed": 1}))
    res = run_training(cfg, out=tmp_path / "run")
    m = json.loads((tmp_path / "run/metrics.json").read_text())
    assert res["step"] == 4 and m["n_train_cases"] == 1
    assert m["val"]["split"] == "val" and m["val"]["n_cases"] == 2 and m["test"]["n_cases"] == 2
    assert list(m["test"]["dice"]) == read_dataset_json(tiny_data).class_names[1:]  # per class
    assert m["best"]["checkpoint"].endswith("best.ckpt") and m["test"]["checkpoint"] == m["best"]["checkpoint"]
    vals = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines() if "n_cases" in x]
    assert [v["step"] for v in vals] == [2, 4]  # validation only on the val split, every val_every steps
    from medssl.inference.load import load_predictor  # the checkpoint rebuilds the 2D model for inference

    pred = load_predictor(tmp_path / "run/checkpoints/best.ckpt")
    assert pred.model.spatial_dims == 2 and pred.roi_size == (32, 32, 1)
