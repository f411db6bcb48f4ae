"""Typed configs: YAML, base recipes, --set overrides, unknown keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from medssl.config import RunConfig, apply_overrides, dump_config, load_config
from medssl.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def test_every_shipped_recipe_loads():
    from medssl.medmnist.config import load_medmnist_eval_config

    recipes = sorted((ROOT / "configs").rglob("*.yaml"))
    assert recipes
    for path in recipes:
        if path.parent.name == "medmnist":  # `medssl eval medmnist` recipes
            load_medmnist_eval_config(path, [])
        else:
            assert isinstance(load_config(path), RunConfig), path


def test_overrides_are_yaml_typed():
    raw = apply_overrides({}, ["trainer.max_steps=12", "data.patch_size=[8,8,4]", "trainer.progress=false", "name=x"])
    assert raw == {"trainer": {"max_steps": 12, "progress": False}, "data": {"patch_size": [8, 8, 4]}, "name": "x"}
    cfg = load_config(None, ["trainer.max_steps=12", "data.patch_size=[8,8,4]"])
    assert cfg.trainer.max_steps == 12 and cfg.data.patch_size == (8, 8, 4)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["trainer.maxsteps=3"], "unknown key 'trainer.maxsteps'"),
        (["nosection.x=1"], "unknown key 'nosection'"),
        (["trainer.max_steps=-1"], "'trainer.max_steps'"),
        (["trainer.precision=fp8"], "'trainer.precision'"),
        (["model.strides=[2,2]"], "strides"),
        (["max_steps"], "key.sub=value"),
    ],
)
def test_invalid_values_name_the_key(overrides, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(None, overrides)


def test_base_recipe_inheritance_and_errors(tmp_path):
    (tmp_path / "base.yaml").write_text("trainer:\n  max_steps: 50\n  seed: 3\n")
    (tmp_path / "child.yaml").write_text("base: base.yaml\ntrainer:\n  seed: 4\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.trainer.max_steps == 50 and cfg.trainer.seed == 4
    (tmp_path / "bad.yaml").write_text("trainer: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "loop.yaml").write_text("base: loop.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(tmp_path / "loop.yaml")


def test_dump_round_trips(tmp_path):
    cfg = load_config(None, ["trainer.max_steps=9", "data.root=/data/x"])
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    assert load_config(tmp_path / "c.yaml") == cfg


def test_hippocampus_umct_arms_each_change_one_factor():
    """Each ablation arm differs from the one before it in exactly one setting (besides its name),
    and arm 4 is the paper recipe."""
    arms = ["single_view", "ensemble_supervised", "cotrain_average", "cotrain_variance", "cotrain_entropy", "confidence"]
    base = {"cotrain_entropy": "cotrain_variance", "confidence": "cotrain_variance"}
    dumps = {a: load_config(ROOT / "configs/hippocampus/umct_arms" / f"{a}.yaml").model_dump(mode="json") for a in arms}
    paper = load_config(ROOT / "configs/hippocampus/umct_paper.yaml").model_dump(mode="json")

    def diff(a: dict, b: dict, prefix: str = "") -> list[str]:
        out = []
        for k in a:
            if k == "name":
                continue
            if isinstance(a[k], dict):
                out += diff(a[k], b[k], f"{prefix}{k}.")
            elif a[k] != b[k]:
                out.append(prefix + k)
        return out

    expected = {"ensemble_supervised": ["umct.num_views"], "cotrain_average": ["umct.lambda_max"],
                "cotrain_variance": ["umct.fusion"], "cotrain_entropy": ["umct.uncertainty"],
                "confidence": ["umct.confidence_weighting"]}
    for i, arm in enumerate(arms[1:], 1):
        prev = base.get(arm, arms[i - 1])
        assert diff(dumps[arm], dumps[prev]) == expected[arm], arm
    assert diff(dumps["cotrain_variance"], paper) == []
    u = paper["umct"]
    assert (u["uncertainty"], u["confidence_weighting"], u["view_reduction"], u["fusion"]) == ("variance", False, "sum", "uncertainty")
