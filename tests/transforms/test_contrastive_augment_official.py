"""The official augmentation of the contrastive stages (domain_specific_cl utils.py crop_batch,
models.py brit_cont_net): crop geometry statistics, intensity ranges, the unaugmented first copy."""

from __future__ import annotations

import torch

from medssl.transforms.contrastive_augment import (
    OFFICIAL_CROP_OFFSET,
    OFFICIAL_CROP_SIDE,
    contrastive_views,
    official_crop,
    official_intensity,
)
from medssl.transforms.image_ssl_ops import random_resized_crop

L = 96


def _boxes(y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Side and start fractions along the first axis, read back from crops of a ramp image
    (value = row index): bilinear resampling gives, at output row u, the input coordinate
    ``start + (u + 0.5) * side - 0.5`` (pixel-centre convention, ``align_corners=False``)."""
    col = y[:, 0, :, 0]
    side = col[:, 1] - col[:, 0]  # in pixels per output pixel = side fraction
    start = (col[:, 0] + 0.5 - 0.5 * side) / L
    return side, start


def test_official_crop_covers_27_percent_at_the_official_offsets():
    ramp = torch.arange(L, dtype=torch.float32)[:, None].expand(L, L)
    x = ramp.expand(2000, 1, L, L).contiguous()
    y = official_crop(x, generator=torch.Generator().manual_seed(0))
    side, start = _boxes(y)
    assert torch.allclose(side, torch.full_like(side, 100 / 192), atol=1e-4)  # 100 of 192 px, every crop
    area = side**2
    assert abs(float(area.mean()) - 0.2713) < 1e-3 and float(area.std()) < 1e-3
    lo, hi = OFFICIAL_CROP_OFFSET
    assert float(start.min()) >= lo - 1e-4 and float(start.max()) < hi + 1e-4  # offsets in [10, 70) of 192 px
    assert abs(float(start.mean()) - (lo + hi) / 2) < 0.01  # uniform
    assert abs(float(start.std()) - (hi - lo) / 12**0.5) < 0.01
    assert OFFICIAL_CROP_SIDE + hi <= 1  # the box stays inside the image


def test_medssl_crop_is_much_larger():
    """medssl's random resized crop keeps 60-100 % of the area: the deviation the paper recipe removes."""
    x = torch.randn(500, 1, 32, 32)
    from medssl.transforms.image_ssl_ops import sample_crop_boxes

    sides, _ = sample_crop_boxes(500, 2, scale=(0.6, 1.0), ratio=(0.8, 1.25), generator=torch.Generator().manual_seed(0))
    area = sides.prod(1)
    assert float(area.min()) >= 0.6 - 1e-6 and float(area.mean()) > 0.7  # vs 0.27 for the official crop
    assert random_resized_crop(x, scale=(0.6, 1.0)).shape == x.shape


def test_official_intensity_is_brightness_then_contrast():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((500, 1, 8, 8), 2.0)
    shift = official_intensity(flat, 1.0, g).mean(dim=(1, 2, 3)) - 2.0  # contrast leaves a flat image alone
    assert float(shift.abs().max()) <= 0.3 + 1e-6 and float(shift.std()) > 0.1
    x = torch.randn(500, 1, 16, 16)
    x = (x - x.mean(dim=(2, 3), keepdim=True)) / x.std(dim=(2, 3), keepdim=True)
    y = official_intensity(x, 1.0, torch.Generator().manual_seed(1))
    gain = y.std(dim=(2, 3)).flatten()
    assert float(gain.min()) >= 0.7 - 1e-4 and float(gain.max()) <= 1.3 + 1e-4
    corr = torch.corrcoef(torch.stack([y[0].flatten(), x[0].flatten()]))[0, 1]
    assert corr > 0.9999  # an affine map per image: no noise
    assert torch.equal(official_intensity(x, 0.0), x)


def test_official_views_keep_the_original_and_are_seeded():
    x = torch.randn(4, 1, 48, 48)
    a = contrastive_views(x, 2, spatial=True, generator=torch.Generator().manual_seed(3), style="official",
                          keep_original=True)
    b = contrastive_views(x, 2, spatial=True, generator=torch.Generator().manual_seed(3), style="official",
                          keep_original=True)
    assert torch.equal(a, b) and torch.equal(a[0], x)  # official G^D: each image and one augmented version
    corr = torch.corrcoef(torch.stack([a[1, 0].flatten(), x[0].flatten()]))[0, 1]
    assert corr < 0.9  # cropped to 27 % and resized
    local = contrastive_views(x, 2, spatial=False, generator=torch.Generator().manual_seed(3), style="official")
    for c in range(2):  # local copies: intensity only, pixel-aligned
        assert torch.corrcoef(torch.stack([local[c, 0].flatten(), x[0].flatten()]))[0, 1] > 0.9999
