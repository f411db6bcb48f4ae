"""The paper configuration of the contrastive stages (official domain_specific_cl settings): the
flattened global head, the per-region projection, batch norm, and the 2D slice fine-tuning from
both stages, through the real training loop on tiny phantoms."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.config import load_config
from medssl.engines.train import run_training
from medssl.methods.contrastive import ContrastivePretraining
from medssl.nets.multiview_unet import MultiViewAsymUNet
from tests.engines.conftest import tiny_overrides

PAPER = {
    "model.name": "multiview_asym_unet", "model.channels": "[4,8,16]", "model.dropout": 0.0, "model.norm": "batch",
    "method": "contrastive", "contrastive.spatial_dims": 2, "contrastive.num_volumes": 2,
    "contrastive.num_partitions": 4, "contrastive.proj_hidden": 32, "contrastive.proj_dim": 16,
    "contrastive.augment": "official", "contrastive.keep_original_view": "true", "contrastive.global_head": "flatten",
    "contrastive.decoder_blocks": 1, "contrastive.num_regions": 13, "contrastive.region_grid": "official",
    "contrastive.local_negatives": "neighbours", "contrastive.region_proj_dim": 8, "contrastive.local_loss": "LR",
    "data.patch_size": "[32,32,1]", "trainer.max_steps": 3, "trainer.val_every": 3, "optim.lr": 0.01,
}


def _net(**kw) -> MultiViewAsymUNet:
    return MultiViewAsymUNet(num_views=1, in_channels=1, out_channels=3, channels=(4, 8, 16), dropout=0.0,
                             spatial_dims=2, **kw)


@pytest.mark.parametrize("side", [32, 48])
def test_flatten_vs_pool_global_head_shapes(side):
    views = torch.randn(2, 3, 1, side, side)
    flat = ContrastivePretraining(_net(), "global", global_head="flatten", input_size=(side, side),
                                  proj_hidden=32, proj_dim=16)
    pool = ContrastivePretraining(_net(), "global", global_head="pool", proj_hidden=32, proj_dim=16)
    # flatten: the whole (16, side/4, side/4) bottleneck; pool: its 16 channel means
    assert flat.g1.in_dim == 16 * (side // 4) ** 2 and pool.g1.in_dim == 16
    assert flat.embed(views).shape == pool.embed(views).shape == (2, 3, 16)
    lin = [m for m in flat.g1.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in lin] == [(16 * (side // 4) ** 2, 32), (32, 16)]
    assert all(m.bias is None for m in lin)  # official: use_bias=False
    assert all(m.bias is not None for m in pool.g1.modules() if isinstance(m, torch.nn.Linear))
    with pytest.raises(ValueError, match="shape"):  # a flattened head is tied to its input size
        flat.embed(torch.randn(2, 3, 1, side + 8, side + 8))


def test_flatten_head_needs_a_divisible_input_size():
    with pytest.raises(ValueError, match="input size"):
        ContrastivePretraining(_net(), "global", global_head="flatten", input_size=None)
    with pytest.raises(ValueError, match="divisible"):
        ContrastivePretraining(_net(), "global", global_head="flatten", input_size=(30, 30))


def test_region_projection_shape_and_use():
    m = ContrastivePretraining(_net(), "local", decoder_blocks=1, region_proj_dim=8, local_negatives="neighbours",
                               region_grid="official", local_loss="LR")
    assert m.region_proj.weight.shape == (8, 8 * 9) and m.region_proj.bias is None  # 3x3 regions of 8 channels
    f = m.embed(torch.randn(2, 2, 1, 32, 32))
    assert f.shape == (2, 2, 8, 16, 16)
    assert torch.isfinite(m.loss(f, None, projection=m._project))
    assert ContrastivePretraining(_net(), "local", decoder_blocks=1).region_proj is None  # medssl: none


def test_batch_norm_option_keeps_views_apart():
    net = MultiViewAsymUNet(num_views=3, in_channels=1, out_channels=2, channels=(4, 8), dropout=0.0, spatial_dims=3,
                            norm="batch")
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in net.modules())
    x = torch.randn(2, 3, 8, 8, 4)
    y = net(x)
    x2 = x.clone()
    x2[:, 1] += 5 * torch.randn_like(x2[:, 1])  # change view 1 only
    y2 = net(x2)
    assert torch.allclose(y[:, 0], y2[:, 0]) and torch.allclose(y[:, 2], y2[:, 2])
    with pytest.raises(ValueError, match="norm"):
        _net(norm="group")


@pytest.fixture(scope="module")
def paper_stages(tiny_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("paper")
    g = run_training(load_config(None, tiny_overrides(tiny_data, **PAPER, **{"contrastive.stage": "global"})),
                     out=tmp / "g")
    ckpt_g = tmp / "g/checkpoints/last.ckpt"
    l_ = run_training(load_config(None, tiny_overrides(tiny_data, **PAPER, **{"contrastive.stage": "local",
                                                                          "init_from": str(ckpt_g)})), out=tmp / "l")
    return {"g": g, "l": l_, "ckpt_g": ckpt_g, "ckpt_l": tmp / "l/checkpoints/last.ckpt", "tmp": tmp}


def test_paper_stages_run(paper_stages):
    g, l_ = paper_stages["g"], paper_stages["l"]
    assert g["step"] == 3 and g["final_loss"] == g["final_loss"]
    assert l_["trained_parts"] == ["encoder", "decoder.0"] and l_["final_loss"] == l_["final_loss"]
    sd = torch.load(paper_stages["ckpt_l"], map_location="cpu", weights_only=True)["state_dict"]
    assert "region_proj.weight" in sd and "net.encoder.0.norm_in.running_mean" in sd  # projection, batch norm


def test_slice_finetune_from_the_local_stage(paper_stages, tiny_data, tmp_path):
    """2D fine-tuning from the paper stages: the pretrained 2D encoder + decoder block load as they are
    (no inflation), the heads and the region projection do not; metrics per volume on val and test."""
    from medssl.core.weights import init_from_checkpoint
    from medssl.data.dataset import read_dataset_json
    from medssl.methods import build_method

    over = {"method": "supervised_2d", "model.name": "multiview_asym_unet", "model.channels": "[4,8,16]",
            "model.dropout": 0.0, "model.norm": "batch", "data.patch_size": "[32,32,1]", "val.roi_size": "[32,32,1]",
            "data.batch_size": 4, "trainer.max_steps": 4, "trainer.val_every": 2}
    cfg = load_config(None, tiny_overrides(tiny_data, **over, init_from=str(paper_stages["ckpt_l"])))
    model = build_method(cfg, read_dataset_json(tiny_data))
    loaded, _, parts = init_from_checkpoint(model.net, paper_stages["ckpt_l"])
    src = torch.load(paper_stages["ckpt_l"], map_location="cpu", weights_only=True)["state_dict"]
    assert parts == ["encoder", "decoder.0"] and not any(n.startswith(("decoder.1.", "head.")) for n in loaded)
    for name in ("encoder.0.conv_in.weight", "decoder.0.block.conv_in.weight", "encoder.1.norm_in.running_var"):
        assert torch.equal(model.net.state_dict()[name], src[f"net.{name}"]), name
    res = run_training(cfg, out=tmp_path / "ft")
    m = json.loads((tmp_path / "ft/metrics.json").read_text())
    assert res["step"] == 4 and set(m) >= {"val", "best", "test"}
    assert m["val"]["n_cases"] == 2 and m["test"]["n_cases"] == 2  # one row per volume
    assert 0.0 <= m["test"]["dice_mean"] <= 1.0 and m["best"]["step"] in (2, 4)
