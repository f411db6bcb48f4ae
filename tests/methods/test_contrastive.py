"""Global / local contrastive pretraining through the real training loop, and ``init_from``."""

from __future__ import annotations

import json

import pytest
import torch

from medssl.config import load_config
from medssl.engines.train import run_training
from medssl.methods import build_method
from medssl.errors import ConfigError
from tests.engines.conftest import tiny_overrides

ASYM = {"model.name": "multiview_asym_unet", "model.channels": "[4,8,16]", "model.dropout": 0.0}


def _pre_cfg(root, stage, dims=2, **extra):
    over = {
        **ASYM, "method": "contrastive", "contrastive.stage": stage, "contrastive.spatial_dims": dims,
        "contrastive.num_volumes": 2, "contrastive.num_partitions": 4, "contrastive.decoder_blocks": 1,
        "contrastive.num_regions": 13 if dims == 2 else 27, "contrastive.proj_hidden": 32, "contrastive.proj_dim": 16,
        "data.patch_size": "[32,32,16]" if dims == 2 else "[16,16,8]", "trainer.max_steps": 3, "trainer.val_every": 2,
        "optim.lr": 0.01,
    }
    over.update(extra)
    return load_config(None, tiny_overrides(root, **over))


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.fixture(scope="module")
def stages(tiny_data, tmp_path_factory):
    """Global stage, then local stage initialised from it (2D, a few real steps each)."""
    tmp = tmp_path_factory.mktemp("contrastive")
    g = run_training(_pre_cfg(tiny_data, "global"), out=tmp / "global")
    ckpt_g = tmp / "global/checkpoints/last.ckpt"
    l_ = run_training(_pre_cfg(tiny_data, "local", init_from=str(ckpt_g)), out=tmp / "local")
    return {"global": g, "local": l_, "ckpt_g": ckpt_g, "ckpt_l": tmp / "local/checkpoints/last.ckpt", "tmp": tmp}


def test_global_stage_runs_and_records_trained_parts(stages):
    g = stages["global"]
    assert g["step"] == 3 and g["stage"] == "global"
    assert g["final_loss"] is not None and g["final_loss"] == g["final_loss"]  # finite, not NaN
    ck = _state(stages["ckpt_g"])
    assert ck["medssl"]["trained_parts"] == ["encoder"]
    assert any(k.startswith("g1.") for k in ck["state_dict"])  # projection head g1 trained too
    metrics = json.loads((stages["tmp"] / "global/metrics.json").read_text())
    assert metrics["checkpoint"].endswith("last.ckpt")
    losses = [json.loads(x)["loss"] for x in (stages["tmp"] / "global/metrics.jsonl").read_text().splitlines()]
    assert len(losses) >= 2 and all(v == v for v in losses)


def test_local_stage_loads_encoder_keeps_it_frozen_and_trains_decoder(stages, tiny_data):
    src = _state(stages["ckpt_g"])["state_dict"]
    out = _state(stages["ckpt_l"])
    assert out["medssl"]["trained_parts"] == ["encoder", "decoder.0"]
    sd = out["state_dict"]
    enc = [k for k in sd if k.startswith("net.encoder.")]
    assert enc
    for k in enc:  # loaded from stage 1 and not changed by stage 2 (frozen)
        assert torch.equal(sd[k], src[k]), k
    # the trained decoder block moved away from its initialisation
    fresh = build_method(_pre_cfg(tiny_data, "local", init_from=str(stages["ckpt_g"])), _spec(tiny_data))
    dec = {k: v for k, v in fresh.state_dict().items() if k.startswith("net.decoder.0.")}
    assert any(not torch.equal(sd[k], v) for k, v in dec.items())
    assert any(k.startswith("g2.") for k in sd)


def _spec(root):
    from medssl.data.dataset import read_dataset_json

    return read_dataset_json(root)


def _finetune_cfg(root, **extra):
    over = {**ASYM, "method": "supervised", "trainer.max_steps": 2, "trainer.val_every": 2}
    over.update(extra)
    return load_config(None, tiny_overrides(root, **over))


def test_init_from_global_loads_exactly_the_encoder(stages, tiny_data):
    """Fine-tuning from the global stage: encoder = the checkpoint's (2D kernels inflated to the
    3D in-plane kernels), everything else = the fresh random init of the same seed."""
    from medssl.core.weights import init_from_checkpoint

    src = _state(stages["ckpt_g"])["state_dict"]
    cfg = _finetune_cfg(tiny_data)
    torch.manual_seed(0)
    ref = build_method(cfg, _spec(tiny_data)).net.state_dict()
    torch.manual_seed(0)
    model = build_method(cfg, _spec(tiny_data))
    loaded, skipped, parts = init_from_checkpoint(model.net, stages["ckpt_g"])
    assert parts == ["encoder"]
    assert loaded and all(n.startswith("encoder.") for n in loaded)
    sd = model.net.state_dict()
    for name, t in sd.items():
        if name.startswith("encoder.") and (".conv_in." in name or ".norm_in." in name):
            want = src[f"net.{name}"]
            want = want[..., None] if want.ndim == 4 else want  # 3x3 -> 3x3x1
            assert torch.equal(t, want.to(t.dtype)), name
        else:  # through-plane kernels, decoder, head: untouched random init
            assert torch.equal(t, ref[name]), name


def test_init_from_local_loads_encoder_and_pretrained_decoder_blocks(stages, tiny_data):
    from medssl.core.weights import init_from_checkpoint

    torch.manual_seed(0)
    model = build_method(_finetune_cfg(tiny_data), _spec(tiny_data))
    loaded, _, parts = init_from_checkpoint(model.net, stages["ckpt_l"])
    assert parts == ["encoder", "decoder.0"]
    assert any(n.startswith("decoder.0.") for n in loaded)
    assert not any(n.startswith(("decoder.1.", "head.")) for n in loaded)
    src = _state(stages["ckpt_l"])["state_dict"]
    w = model.net.state_dict()["decoder.0.block.conv_in.weight"]
    assert torch.equal(w, src["net.decoder.0.block.conv_in.weight"][..., None].to(w.dtype))


def test_finetune_run_with_init_from_and_explicit_parts(stages, tiny_data, tmp_path):
    res = run_training(_finetune_cfg(tiny_data, init_from=str(stages["ckpt_l"]), init_parts="[encoder]"),
                       out=tmp_path / "ft")
    assert res["step"] == 2 and 0.0 <= res["test"]["dice_mean"] <= 1.0


def test_umct_init_from_pretrained_encoder_fills_every_view(stages, tiny_data):
    from medssl.core.weights import init_from_checkpoint
    from medssl.nets.multiview_unet import view_state_dict

    cfg = load_config(None, tiny_overrides(tiny_data, **{**ASYM, "method": "umct", "umct.num_views": 3,
                                                         "data.patch_size": "[16,16,16]"}))
    model = build_method(cfg, _spec(tiny_data))
    init_from_checkpoint(model.net, stages["ckpt_g"])
    src = _state(stages["ckpt_g"])["state_dict"]["net.encoder.0.conv_in.weight"]
    for v in range(3):
        assert torch.equal(view_state_dict(model.net, v)["encoder.0.conv_in.weight"], src[..., None].to(torch.float32))


def test_3d_global_and_local_stages_run(tiny_data, tmp_path):
    g = run_training(_pre_cfg(tiny_data, "global", dims=3, **{"trainer.max_steps": 2}), out=tmp_path / "g3")
    assert g["step"] == 2 and g["final_loss"] == g["final_loss"]
    l3 = run_training(_pre_cfg(tiny_data, "local", dims=3, init_from=str(tmp_path / "g3/checkpoints/last.ckpt"),
                               **{"trainer.max_steps": 2}), out=tmp_path / "l3")
    assert l3["trained_parts"] == ["encoder", "decoder.0"] and l3["final_loss"] == l3["final_loss"]


def test_pretraining_resumes_exactly(tiny_data, tmp_path, monkeypatch):
    """A run that dies after its step-2 checkpoint and is resumed ends bit-identical to the
    uninterrupted run (batches and augmentations are a function of seed and step; the RNG state
    travels in the checkpoint)."""
    from medssl.methods.contrastive import ContrastivePretraining

    cfg = _pre_cfg(tiny_data, "global", **{"trainer.max_steps": 4, "trainer.val_every": 2})
    run_training(cfg, out=tmp_path / "full")
    real_step = ContrastivePretraining.training_step

    def dying_step(self, batch, batch_idx):
        if self.global_step == 3:
            raise RuntimeError("simulated crash")
        return real_step(self, batch, batch_idx)

    monkeypatch.setattr(ContrastivePretraining, "training_step", dying_step)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_training(cfg, out=tmp_path / "part")
    monkeypatch.setattr(ContrastivePretraining, "training_step", real_step)
    assert _state(tmp_path / "part/checkpoints/last.ckpt")["global_step"] == 2
    res = run_training(cfg, out=tmp_path / "part", resume=True)
    assert res["step"] == 4
    a = _state(tmp_path / "full/checkpoints/last.ckpt")["state_dict"]
    b = _state(tmp_path / "part/checkpoints/last.ckpt")["state_dict"]
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_local_stage_without_init_from_is_a_config_error(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="init_from"):
        run_training(_pre_cfg(tiny_data, "local"), out=tmp_path / "x")


def test_contrastive_needs_the_asymmetric_unet(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="multiview_asym_unet"):
        run_training(_pre_cfg(tiny_data, "global", **{"model.name": "unet", "model.channels": "[4,8,16]"}),
                     out=tmp_path / "x")


def test_region_count_must_fit_the_dimensionality(tiny_data):
    with pytest.raises(ConfigError, match="num_regions"):
        _pre_cfg(tiny_data, "global", dims=3, **{"contrastive.num_regions": 13})


def test_missing_init_from_checkpoint_is_a_clear_error_before_anything_is_written(tiny_data, tmp_path):
    with pytest.raises(ConfigError, match="no such checkpoint"):
        run_training(_pre_cfg(tiny_data, "local", init_from=str(tmp_path / "nope.ckpt")), out=tmp_path / "x")
    assert not (tmp_path / "x").exists()
