"""Tiny trained checkpoints for the batch inference tests (2 training steps on phantoms).

The sliding-window ROI is large and without overlap so that the real 512x512 CT series predict
in a few seconds on 2 cores: the tests check geometry, files and bookkeeping, not accuracy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from medssl.config import load_config
from tests.engines.conftest import tiny_overrides

FAST = {"trainer.max_steps": 2, "trainer.val_every": 2, "val.roi_size": "[128,128,16]", "val.overlap": 0.0,
        "val.sw_batch_size": 1}


def _train(tmp_path_factory, channels: int) -> tuple[Path, Path]:
    from medssl.data.phantoms import generate_sample_data
    from medssl.engines.train import run_training

    base = tmp_path_factory.mktemp(f"infer_ckpt{channels}")
    data = generate_sample_data(base / "phantoms", seed=5, n_labeled=2, n_unlabeled=3, n_val=1, n_test=1,
                                progress=False, shape=(32, 32, 16), channels=channels)
    run_training(load_config(None, tiny_overrides(data, **FAST)), out=base / "run")
    return base / "run" / "checkpoints" / "best.ckpt", Path(data)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, phantom dataset folder) of a one-channel supervised model."""
    return _train(tmp_path_factory, 1)


@pytest.fixture(scope="session")
def tiny_model_2ch(tmp_path_factory) -> tuple[Path, Path]:
    """(checkpoint, dataset folder) of a model of the two-channel phantoms."""
    return _train(tmp_path_factory, 2)
