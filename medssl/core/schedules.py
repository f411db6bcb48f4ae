"""Learning-rate factors per optimiser step, shared by the segmentation and image-SSL engines."""

from __future__ import annotations

import math

SCHEDULES = ("cosine", "poly", "constant")


def lr_factor(step: int, total_steps: int, warmup_steps: int = 0, kind: str = "cosine") -> float:
    """Multiplicative LR factor of optimiser step ``step`` (0-based).

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then over
    the remaining steps a cosine from 1 to 0 (SimCLR, BYOL, DINO: per-step cosine), poly(0.9)
    (nnU-Net) or a constant 1.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {kind!r}")
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * t))
    if kind == "poly":
        return (1.0 - t) ** 0.9
    return 1.0
