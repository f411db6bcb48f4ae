"""Inputs shared by the image-SSL augmentation tests."""

from __future__ import annotations

import torch

SHAPES = [(4, 1, 28, 28), (4, 3, 28, 28), (2, 1, 28, 28, 28)]


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def img(*shape, seed=1) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed))
