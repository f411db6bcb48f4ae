"""The Hippocampus contrastive recipes: the paper recipe has the official code's settings, each arm
differs from it in one factor, the fine-tuning recipe is the 2D slice protocol, and the make target
runs the grid the issue asks for."""

from __future__ import annotations

import re
from pathlib import Path

from medssl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
HIPPO = ROOT / "configs/hippocampus"


def _leaves(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _dump(name: str) -> dict:
    return _leaves(load_config(HIPPO / name).model_dump(mode="json"))


def _differences(a: dict, b: dict) -> dict:
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k) and k != "name"}


def test_paper_global_has_the_official_settings():
    c = load_config(HIPPO / "contrastive_paper_global.yaml")
    g = c.contrastive
    assert (c.method, g.stage, g.spatial_dims) == ("contrastive", "global", 2)
    assert (g.global_loss, g.temperature, g.num_partitions, g.num_volumes) == ("GD", 0.1, 4, 4)
    assert (g.global_head, g.proj_hidden, g.proj_dim) == ("flatten", 1024, 128)
    assert (g.augment, g.keep_original_view, g.augment_strength) == ("official", True, 1.0)
    assert (c.optim.lr, c.optim.weight_decay, c.optim.scheduler, c.optim.warmup_steps) == (0.001, 0.0, "constant", 0)
    assert c.model.name == "multiview_asym_unet" and c.model.norm == "batch" and c.model.dropout == 0.0
    assert c.data.patch_size[:2] == (48, 48) and c.trainer.max_steps <= 10001


def test_paper_local_has_the_official_settings():
    c = load_config(HIPPO / "contrastive_paper_local.yaml")
    g = c.contrastive
    assert (g.stage, g.local_loss, g.temperature, g.num_regions, g.region_size) == ("local", "LR", 0.1, 13, 3)
    assert (g.local_negatives, g.region_grid, g.region_proj_dim) == ("neighbours", "official", 128)
    assert g.augment == "official" and c.model.norm == "batch"
    assert c.init_from is not None and "global_gd" in str(c.init_from)
    # the local stage differs from the global one only in what a local stage needs
    diff = _differences(_dump("contrastive_paper_global.yaml"), _dump("contrastive_paper_local.yaml"))
    assert set(diff) == {"init_from", "contrastive.stage", "contrastive.local_loss", "contrastive.num_volumes",
                         "contrastive.num_regions", "contrastive.region_grid", "contrastive.region_proj_dim",
                         "contrastive.local_negatives"}
    assert g.decoder_blocks == 2  # 24 x 24 maps of a 48 x 48 slice (official: 3 of 5 blocks, 48 x 48 of 192)


def test_each_pretraining_arm_differs_in_one_factor():
    gr = _differences(_dump("contrastive_paper_global.yaml"), _dump("contrastive_arms/global_gr.yaml"))
    assert gr == {"contrastive.global_loss": ("GD", "GR")}
    ld = _differences(_dump("contrastive_paper_local.yaml"), _dump("contrastive_arms/local_ld.yaml"))
    assert ld == {"contrastive.local_loss": ("LR", "LD")}


def test_finetune_recipes_2d_paper_and_3d_option():
    ft = load_config(HIPPO / "contrastive_finetune_2d.yaml")
    pre = load_config(HIPPO / "contrastive_paper_global.yaml")
    assert ft.method == "supervised_2d" and ft.data.patch_size == (48, 48, 1) and ft.val.roi_size == (48, 48, 1)
    assert ft.data.batch_size == 20 and ft.data.fg_fraction == 0.0  # official: 20 random slices, empty ones too
    assert (ft.optim.lr, ft.optim.scheduler) == (0.001, "constant")
    # the network the pretraining stages train, so every pretrained tensor has a place to go
    assert (ft.model.name, ft.model.channels, ft.model.norm) == (pre.model.name, pre.model.channels, pre.model.norm)
    assert ft.init_from is None  # random init unless the grid names a stage
    ft3 = load_config(HIPPO / "contrastive_finetune_3d.yaml")
    assert ft3.method == "supervised" and ft3.data.patch_size == (32, 32, 32)
    assert (ft3.optim.lr, ft3.trainer.max_steps) == (ft.optim.lr, ft.trainer.max_steps)


def test_make_target_runs_the_issue_grid():
    text = (ROOT / "Makefile").read_text()
    target = text[text.index("hippo-contrastive: "):].split("\n\n")[0]  # the recipe: up to the next blank line
    assert re.search(r"^HC_SEEDS \?= 0 1 2$", text, re.M) and re.search(r"^HC_LABELED \?= 1 2 5$", text, re.M)
    assert re.search(r"^HC_ARMS \?= random global_gr global_gd local_lr local_ld$", text, re.M)
    assert "scripts/run_one.sh" in text and "xargs -P $(JOBS) -L 1" in text
    for cfg in ("contrastive_paper_global.yaml", "contrastive_arms/global_gr.yaml", "contrastive_paper_local.yaml",
                "contrastive_arms/local_ld.yaml", "contrastive_finetune_2d.yaml"):
        assert cfg in target and (HIPPO / cfg).is_file()
    # both local arms start from the G^D encoder; the seed picks the labeled volumes
    assert "init_from=$(HC_OUT)/global_gd/checkpoints/last.ckpt" in target
    assert "--set data.labeled_seed=$$s --set trainer.seed=$$s" in target
    assert "--preset hippocampus" in target and "reports/hippocampus_contrastive.md" in text
    # the full-supervision reference: random init on every pool volume, named to the report
    assert re.search(r"^HC_FULL \?= 145$", text, re.M) and "--full $(HC_FULL)" in target
    assert "ft-random-n$(HC_FULL)-s0" in target and "--set data.num_labeled=$(HC_FULL)" in target
    # appended at the end of the Makefile
    assert target.rstrip().endswith("--out $(HC_REPORT)")
