"""Rebuild a trained segmentation model from its checkpoint, as a :class:`~medssl.inference.predictor.Predictor`.

The checkpoint is read weights-only (:func:`medssl.core.weights.load_checkpoint`), or a model folder
of ``medssl export`` is verified and read (:mod:`medssl.inference.model_package`); the run's
resolved config and dataset spec stored inside it rebuild the method (:func:`medssl.methods.build_method`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from medssl.errors import DataError
from medssl.inference.predictor import Predictor


def load_predictor(checkpoint: str | Path, mc_samples: int | None = None, device: str | torch.device = "cpu") -> Predictor:
    """A predictor around the model of a medssl segmentation checkpoint, in eval mode.

    Args:
        checkpoint: ``runs/NAME/checkpoints/best.ckpt`` (or last.ckpt), or a model folder written
            by ``medssl export`` (:mod:`medssl.inference.model_package`).
        mc_samples: MC-dropout passes per window; default the run's (UMCT: ``umct.mc_samples``), else 1.
        device: where the network runs.

    Raises:
        DataError: unreadable file, not a medssl segmentation checkpoint, or a pretraining stage's;
            a model folder with a missing, changed or truncated file.
    """
    from medssl.config import build_config
    from medssl.core.weights import load_checkpoint
    from medssl.data.dataset import DatasetSpec
    from medssl.data.intensity import channel_modes
    from medssl.data.plan import DatasetPlan
    from medssl.methods import build_method

    if Path(checkpoint).is_dir():  # a model folder of `medssl export`: every file verified first
        from medssl.inference.model_package import read_model_package

        ckpt = read_model_package(checkpoint)
    else:
        ckpt = load_checkpoint(checkpoint)
    state = ckpt.get("medssl") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "config" not in state or "dataset" not in state:
        raise DataError("is not a medssl training checkpoint (no stored config)", checkpoint)
    raw = dict(state["config"])
    raw.get("umct", {}).pop("init_2d", None)  # weights come from the checkpoint itself
    raw.pop("init_from", None)
    raw.get("val", {}).pop("split", None)  # a run from before the val/test separation still predicts
    cfg = build_config(raw, source=str(checkpoint))
    d = state["dataset"]
    spec = DatasetSpec(d["name"], d["labels"], d["channel_names"], d.get("file_ending", ".nii.gz"), d.get("numTraining"))
    model = build_method(cfg, spec)
    if model.is_pretraining:
        raise DataError("is a pretraining stage's checkpoint; it predicts no segmentation", checkpoint)
    model.load_state_dict(ckpt["state_dict"])
    model.eval().to(device)
    predictor = Predictor(
        model, roi_size=model.roi_size, sw_batch_size=model.sw_batch_size, overlap=model.overlap,
        intensity=channel_modes(cfg.data.intensity, spec.modalities), ct_window=cfg.data.ct_window,
        precision=cfg.trainer.precision, mc_samples=mc_samples or getattr(model, "mc_samples", 1), device=device,
        resample_channels=cfg.data.resample_channels,
        plan=DatasetPlan.from_json(state["plan"]) if state.get("plan") else None,
    )
    predictor.config, predictor.spec = cfg, spec
    return predictor
