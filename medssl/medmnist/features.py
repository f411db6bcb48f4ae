"""Pooled features (and head logits) of a backbone over a whole uint8 split, and the small
``.pt`` files a run caches them in."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn

from medssl.core.atomic import write_atomic_bytes
from medssl.core.runtime import autocast

#: batch size of feature extraction and OOD scoring, by spatial dims
FEATURE_BATCH = {2: 512, 3: 32}


def save_pt(obj: Any, path: Path) -> Path:
    """``torch.save`` to ``path`` atomically."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_atomic_bytes(path, buf.getvalue())


def load_pt(path: Path) -> Any | None:
    """A cached ``.pt`` file (weights only), or ``None`` if it is missing, truncated or foreign."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a truncated or foreign file is recomputed
        return None


@torch.no_grad()
def forward(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str,
            head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(N, D)`` (and ``head`` logits) in float32, in batches, in eval mode.

    Args:
        model: maps float images in [0, 1] to ``(B, D)`` features (a normalising backbone).
        images: uint8 ``(N, C, *spatial)``.
        device: where to run.
        precision: ``"32"`` or ``"bf16"`` (autocast).
        head: optional ``(B, D) -> (B, K)`` module.
    """
    model.eval()
    if head is not None:
        head.eval()
    feats, logits = [], []
    for batch in images.split(FEATURE_BATCH.get(images.ndim - 2, 64)):
        x = batch.to(device).float().div_(255.0)
        with autocast(device, precision):
            f = model(x)
            if head is not None:
                logits.append(head(f).float().cpu())
        feats.append(f.float().cpu())
    return torch.cat(feats), (torch.cat(logits) if head is not None else None)
