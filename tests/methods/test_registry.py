"""A new segmentation method is one class plus one registry line: the engine reads what the class
declares and never names a method."""

from __future__ import annotations

import json

import torch

from medssl.config import load_config
from medssl.engines.train import run_training
from medssl.methods import METHODS, get_method
from medssl.methods.supervised import SupervisedSegmentation
from tests.engines.conftest import tiny_overrides


class MeanTeacherLite(SupervisedSegmentation):
    """A stand-in semi-supervised method: supervised loss plus a consistency term on unlabeled
    patches (so it must declare uses_unlabeled for the engine to hand it ``u_image``)."""

    seen_unlabeled = 0

    @property
    def uses_unlabeled(self) -> bool:
        return True

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        u = batch["u_image"]
        MeanTeacherLite.seen_unlabeled += u.shape[0]
        noisy = u + 0.1 * torch.randn_like(u)
        return loss + 0.1 * (torch.softmax(self(u), 1) - torch.softmax(self(noisy), 1)).pow(2).mean()


def test_a_registered_method_trains_through_the_unchanged_engine(tiny_data, tmp_path, monkeypatch):
    monkeypatch.setitem(METHODS, "mt_lite", f"{__name__}:MeanTeacherLite")
    assert get_method("mt_lite") is MeanTeacherLite
    cfg = load_config(None, tiny_overrides(tiny_data, method="mt_lite", **{"trainer.max_steps": 2,
                                                                          "trainer.val_every": 2}))
    res = run_training(cfg, out=tmp_path / "run")
    assert res["method"] == "mt_lite" and res["step"] == 2
    assert MeanTeacherLite.seen_unlabeled == 2 * 2  # 2 steps x batch 2 unlabeled patches
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["test"]["n_cases"] == 2


def test_unregistered_method_is_a_config_error():
    import pytest

    from medssl.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        load_config(None, ["method=nope"])
