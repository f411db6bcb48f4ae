"""A tiny phantom dataset and a tiny config, shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from medssl.config import load_config


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    from medssl.data.phantoms import generate_sample_data

    root = tmp_path_factory.mktemp("tiny") / "phantoms"
    generate_sample_data(root, seed=3, n_labeled=2, n_unlabeled=2, n_val=2, n_test=2, progress=False, shape=(32, 32, 16))
    return root


def tiny_overrides(root: Path, **extra) -> list[str]:
    base = {
        "data.root": str(root),
        "data.patch_size": "[16,16,8]",
        "data.batch_size": 2,
        "model.channels": "[4,8,16]",
        "model.strides": "[2,2]",
        "trainer.max_steps": 6,
        "trainer.val_every": 3,
        "trainer.progress": "false",
        "trainer.log_every": 1,
        "trainer.threads": 1,
        "val.roi_size": "[16,16,8]",
    }
    base.update(extra)
    return [f"{k}={v}" for k, v in base.items()]


@pytest.fixture
def tiny_cfg(tiny_data):
    def make(**extra):
        return load_config(None, tiny_overrides(tiny_data, **extra))

    return make
