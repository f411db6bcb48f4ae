"""Augmentations of the global / local contrastive pretraining (Chaitanya et al., NeurIPS 2020).

Batched tensor operations on z-scored (not [0, 1]) images, 2D or 3D, so the SimCLR-style colour
ops of :mod:`medssl.transforms.image_ssl_ops` (which clamp to [0, 1]) are not used. The official
code's pretraining stages use random brightness (max delta 0.3) and contrast (0.7-1.3), plus
random affine/elastic deformations for the global stage. Here:

* intensity (both stages): ``x' = (x - mean) * c + mean + b`` per sample, ``c ~ U(1 -/+ 0.3 s)``,
  ``b ~ U(-/+ 0.3 s)`` (in z-score units), then Gaussian noise ``std ~ U(0, 0.05 s)``;
* spatial (global stage only): a random resized crop (area 0.6-1, aspect 0.8-1.25) resampled to
  the input size, a batched stand-in for the paper's random affine deformation.

The local stage uses intensity only: the two copies must stay pixel-aligned so that the local
region at one position is the same anatomy in both (the paper's L^R positives).
``s`` is ``strength`` (0 = no augmentation, for tests and benchmarks).
"""

from __future__ import annotations

import torch

from medssl.transforms.image_ssl_ops import random_resized_crop


def intensity_jitter(x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample brightness / contrast change and Gaussian noise.

    Args:
        x: ``(B, C, *spatial)`` z-scored float batch.
        strength: scales every range; 0 returns ``x``.
        generator: random generator (``None``: global RNG).

    Returns:
        Same shape as ``x``.
    """
    if strength <= 0:
        return x
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)
    u = torch.rand((3, b), generator=generator, device=x.device, dtype=torch.float32)
    contrast = (1 + 0.3 * strength * (2 * u[0] - 1)).to(x.dtype).reshape(shape)
    bright = (0.3 * strength * (2 * u[1] - 1)).to(x.dtype).reshape(shape)
    noise_std = (0.05 * strength * u[2]).to(x.dtype).reshape(shape)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32).to(x.dtype)
    return (x - mean) * contrast + mean + bright + noise * noise_std


def contrastive_views(
    x: torch.Tensor,
    num_views: int = 2,
    spatial: bool = True,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``num_views`` independently augmented copies of a batch.

    Args:
        x: ``(N, C, *spatial)`` images.
        num_views: V, copies per image.
        spatial: add the random resized crop (global stage); False keeps copies pixel-aligned.
        strength: augmentation strength (0 = identical copies).
        generator: random generator.

    Returns:
        ``(V, N, C, *spatial)``.
    """
    views = []
    for _ in range(num_views):
        v = x
        if spatial and strength > 0:
            lo = max(0.2, 1 - 0.4 * strength)
            v = random_resized_crop(v, scale=(lo, 1.0), ratio=(0.8, 1.25), generator=generator)
        views.append(intensity_jitter(v, strength, generator))
    return torch.stack(views)
