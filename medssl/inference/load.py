"""Rebuild a trained method from its checkpoint (weights-only load, config stored inside)."""

from __future__ import annotations

from pathlib import Path

from medssl.errors import DataError


def load_method(checkpoint: str | Path):
    """The LightningModule of a medssl run, in eval mode, with its config and dataset spec.

    Returns:
        ``(model, cfg, spec)``.
    """
    from medssl.config import build_config
    from medssl.data.dataset import DatasetSpec
    from medssl.core.weights import load_checkpoint
    from medssl.engines.train import build_model

    ckpt = load_checkpoint(checkpoint)
    state = ckpt.get("medssl")
    if not isinstance(state, dict) or "config" not in state or "dataset" not in state:
        raise DataError("is not a medssl training checkpoint (no stored config)", checkpoint)
    raw = dict(state["config"])
    raw.get("umct", {}).pop("init_2d", None)  # weights come from the checkpoint itself
    cfg = build_config(raw, source=str(checkpoint))
    d = state["dataset"]
    spec = DatasetSpec(d["name"], d["labels"], d["channel_names"], d.get("file_ending", ".nii.gz"), d.get("numTraining"))
    model = build_model(cfg, spec)
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    return model, cfg, spec
