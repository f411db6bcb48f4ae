"""Channel counts of MedMNIST image tensors: repeat, union, luma."""

from __future__ import annotations

import pytest
import torch

from medssl.medmnist.channels import adapt_channels, to_channels, union_images


def images(n: int = 3, side: int = 16, channels: int = 1, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)


def test_channels_and_union():
    gray, rgb = images(n=3), images(n=2, channels=3, seed=1)
    assert to_channels(rgb, 3) is rgb
    up = to_channels(gray, 3)
    assert up.shape == (3, 3, 16, 16) and all(torch.equal(up[:, c], gray[:, 0]) for c in range(3))
    u = union_images([gray, rgb])
    assert u.shape == (5, 3, 16, 16) and u.dtype == torch.uint8 and u.is_contiguous()
    assert torch.equal(u[3:], rgb) and torch.equal(u[:3, 2], gray[:, 0])
    assert union_images([gray, gray]).shape == (6, 1, 16, 16)
    with pytest.raises(ValueError, match="same spatial size"):
        union_images([gray, images(n=1, side=28)])
    with pytest.raises(ValueError, match="only grayscale"):
        to_channels(rgb, 1)


def test_adapt_channels():
    gray = torch.randint(0, 256, (2, 1, 4, 4), dtype=torch.uint8)
    assert adapt_channels(gray, 3).shape == (2, 3, 4, 4)
    rgb = torch.zeros(2, 3, 4, 4, dtype=torch.uint8)
    rgb[:, 1] = 100
    out = adapt_channels(rgb, 1)
    assert out.shape == (2, 1, 4, 4) and out.dtype == torch.uint8 and int(out[0, 0, 0, 0]) == round(58.7)
    assert adapt_channels(gray, None) is gray
