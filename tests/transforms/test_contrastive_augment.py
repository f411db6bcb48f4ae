"""Augmentations of the contrastive stages: shapes, strength 0, pixel alignment of the local copies."""

from __future__ import annotations

import torch

from medssl.transforms.contrastive_augment import contrastive_views, intensity_jitter


def test_strength_zero_gives_identical_copies():
    x = torch.randn(3, 1, 16, 16)
    v = contrastive_views(x, 2, spatial=True, strength=0.0)
    assert v.shape == (2, 3, 1, 16, 16)
    assert torch.equal(v[0], x) and torch.equal(v[1], x)


def test_intensity_only_copies_are_affine_in_each_sample_up_to_noise():
    """Local-stage copies keep every pixel in place: each copy is a*x + b (+ small noise)."""
    torch.manual_seed(0)
    x = torch.randn(4, 1, 12, 12, 8)
    g = torch.Generator().manual_seed(1)
    v = contrastive_views(x, 2, spatial=False, strength=1.0, generator=g)
    assert v.shape == (2, 4, 1, 12, 12, 8)
    for c in range(2):
        for i in range(4):
            corr = torch.corrcoef(torch.stack([v[c, i].flatten(), x[i].flatten()]))[0, 1]
            assert corr > 0.98  # same anatomy at the same position
    assert not torch.allclose(v[0], v[1])


def test_global_copies_differ_spatially_and_are_seeded():
    x = torch.randn(2, 1, 32, 32)
    a = contrastive_views(x, 2, spatial=True, generator=torch.Generator().manual_seed(5))
    b = contrastive_views(x, 2, spatial=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    corr = torch.corrcoef(torch.stack([a[0, 0].flatten(), x[0].flatten()]))[0, 1]
    assert corr < 0.98  # cropped and resampled, not just an intensity change


def test_intensity_jitter_ranges():
    x = torch.zeros(64, 1, 4, 4)
    y = intensity_jitter(x, 1.0, torch.Generator().manual_seed(0))
    means = y.mean(dim=(1, 2, 3))
    assert means.abs().max() <= 0.3 + 0.05  # brightness within +-0.3 (plus noise)
    assert means.std() > 0.05  # and it varies per sample
