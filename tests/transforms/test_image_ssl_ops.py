"""Batched SSL augmentation ops: identities, hand-made references, per-sample parameters."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from medssl.transforms import image_ssl_ops as A

from tests.transforms.image_ssl_helpers import SHAPES
from tests.transforms.image_ssl_helpers import gen as _gen
from tests.transforms.image_ssl_helpers import img as _img


@pytest.mark.parametrize("shape", SHAPES, ids=["2d-gray", "2d-rgb", "3d"])
def test_every_op_with_probability_zero_is_identity(shape):
    x, g = _img(*shape), _gen()
    assert torch.equal(A.random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), generator=g), x)
    assert torch.equal(A.random_flip(x, 0.0, dims=(-1, -2), generator=g), x)
    assert torch.equal(A.color_jitter(x, 0.4, 0.4, 0.2, 0.1, p=0.0, generator=g), x)
    assert torch.equal(A.color_jitter(x, 0.0, 0.0, 0.0, 0.0, p=1.0, generator=g), x)
    assert torch.equal(A.random_grayscale(x, 0.0, generator=g), x)
    assert torch.equal(A.random_gamma(x, p=0.0, generator=g), x)
    assert torch.equal(A.gaussian_blur(x, p=0.0, generator=g), x)
    assert torch.equal(A.gaussian_noise(x, p=0.0, generator=g), x)
    assert torch.equal(A.solarize(x, p=0.0, generator=g), x)
    assert torch.equal(A.normalize(x, 0.0, 1.0), x)


# ------------------------------------------------------------------------------------------
# crop


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_whole_image_box_through_grid_sample_equals_input(spatial_dims):
    x = _img(3, 2, *([10] * spatial_dims))
    ones, zeros = torch.ones(3, spatial_dims), torch.zeros(3, spatial_dims)
    assert torch.allclose(A.crop_boxes(x, ones, zeros), x, atol=1e-5)


@pytest.mark.parametrize("out_size", [(5, 7), (4, 6, 3)])
def test_box_grid_equals_affine_grid(out_size):
    n, B = len(out_size), 3
    sides = torch.rand(B, n, generator=_gen()) * 0.5 + 0.5
    centers = (1 - sides) * (2 * torch.rand(B, n, generator=_gen(1)) - 1)
    theta = torch.zeros(B, n, n + 1)
    theta[:, range(n), range(n)] = sides.flip(1)  # affine_grid orders coordinates (x=W, y=H[, z=D])
    theta[:, :, n] = centers.flip(1)
    ref = F.affine_grid(theta, [B, 1, *out_size], align_corners=False)
    assert torch.allclose(A.box_grid(sides, centers, out_size), ref, atol=1e-6)


def test_box_on_pixel_edges_equals_the_slice_axis_order_included():
    x = _img(2, 1, 8, 12)
    # H: upper half (side 0.5, centre -0.5); W: whole; output = the slice at its own size
    out = A.crop_boxes(x, torch.tensor([[0.5, 1.0]] * 2), torch.tensor([[-0.5, 0.0]] * 2), (4, 12))
    assert torch.allclose(out, x[:, :, :4, :], atol=1e-5)
    x3 = _img(2, 1, 8, 8, 6)
    sides, centers = torch.tensor([[1.0, 0.5, 1.0]] * 2), torch.tensor([[0.0, 0.5, 0.0]] * 2)
    assert torch.allclose(A.crop_boxes(x3, sides, centers, (8, 4, 6)), x3[:, :, :, 4:, :], atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_sampled_boxes_respect_scale_ratio_and_bounds(spatial_dims):
    sides, centers = A.sample_crop_boxes(512, spatial_dims, (0.2, 1.0), (3 / 4, 4 / 3), _gen())
    area = sides.prod(1)
    ratio = sides[:, 1:] / sides[:, :1]
    fitted = (area < 1.0 - 1e-6)  # the fallback (whole image) has area 1
    assert fitted.float().mean() > 0.9
    assert (area[fitted] >= 0.2 - 1e-5).all() and (area <= 1.0 + 1e-5).all()
    assert (ratio[fitted] >= 3 / 4 - 1e-5).all() and (ratio[fitted] <= 4 / 3 + 1e-5).all()
    assert (centers.abs() + sides <= 1.0 + 1e-6).all()  # every box inside the image
    assert A.random_resized_crop(_img(2, 1, *([16] * spatial_dims)), out_size=8).shape[2:] == (8,) * spatial_dims


# ------------------------------------------------------------------------------------------
# flips, intensity ops


def test_flip_on_a_hand_made_tensor():
    x = torch.arange(6.0).reshape(1, 1, 2, 3).repeat(64, 1, 1, 1)
    assert torch.equal(A.random_flip(x, 1.0, dims=(-1,))[0, 0], torch.tensor([[2.0, 1, 0], [5, 4, 3]]))
    assert torch.equal(A.random_flip(x, 1.0, dims=(-2,))[0, 0], torch.tensor([[3.0, 4, 5], [0, 1, 2]]))
    y = A.random_flip(x, 0.5, dims=(-1,), generator=_gen())
    flipped = torch.tensor([torch.equal(y[i], x[i].flip(-1)) for i in range(64)])
    kept = torch.tensor([torch.equal(y[i], x[i]) for i in range(64)])
    assert (flipped ^ kept).all() and 10 < flipped.sum() < 54  # each sample one or the other, both occur
    with pytest.raises(ValueError, match="spatial"):
        A.random_flip(x, 1.0, dims=(1,))


def test_brightness_uses_one_factor_per_sample():
    x = _img(16, 1, 8, 8) * 0.5 + 0.1  # no clamping at brightness 0.4
    y = A.color_jitter(x, brightness=0.4, contrast=0.0, p=1.0, generator=_gen())
    factor = (y / x).flatten(1)
    assert torch.allclose(factor, factor[:, :1].expand_as(factor), atol=1e-5)
    assert ((factor[:, 0] >= 0.6 - 1e-5) & (factor[:, 0] <= 1.4 + 1e-5)).all()
    assert factor[:, 0].unique().numel() == 16


def test_contrast_keeps_the_mean_and_scales_deviations():
    x = _img(8, 1, 8, 8) * 0.2 + 0.4  # no clamping
    y = A.color_jitter(x, brightness=0.0, contrast=0.5, p=1.0, generator=_gen())
    mean = x.mean((1, 2, 3), keepdim=True)
    assert torch.allclose(y.mean((1, 2, 3), keepdim=True), mean, atol=1e-5)
    c = ((y - mean) / (x - mean)).flatten(1)
    assert torch.allclose(c, c[:, :1].expand_as(c), atol=1e-3)


def test_jitter_applies_the_ops_in_a_random_order_per_sample():
    # brightness x2 then contrast 0 gives the mean of clamp(2x); the other order gives clamp(2 mean)
    x = _img(1, 1, 6, 6).expand(32, -1, -1, -1)
    y = A.color_jitter(x, brightness=(2.0, 2.0), contrast=(0.0, 0.0), p=1.0, generator=_gen())
    b_first = (2 * x).clamp(0, 1).mean((1, 2, 3), keepdim=True).expand_as(x)
    c_first = (2 * x.mean((1, 2, 3), keepdim=True)).clamp(0, 1).expand_as(x)
    assert not torch.allclose(b_first[0], c_first[0])
    is_b = torch.tensor([torch.allclose(y[i], b_first[i], atol=1e-6) for i in range(32)])
    is_c = torch.tensor([torch.allclose(y[i], c_first[i], atol=1e-6) for i in range(32)])
    assert (is_b ^ is_c).all() and 4 < is_b.sum() < 28


def test_saturation_zero_is_the_luminance():
    x = _img(4, 3, 5, 5)
    y = A.color_jitter(x, 0.0, 0.0, saturation=(0.0, 0.0), p=1.0, generator=_gen())
    assert torch.allclose(y, A.random_grayscale(x, 1.0), atol=1e-6)


def test_rgb_only_ops():
    x = _img(4, 3, 8, 8)
    gray = A.random_grayscale(x, 1.0)
    assert torch.allclose(gray, (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None].expand_as(x))
    g1 = _img(4, 1, 8, 8)
    assert torch.equal(A.random_grayscale(g1, 1.0), g1)
    # hue: 0 and a full turn are the identity, gray pixels have no hue
    assert torch.allclose(A._hue_rotate(x, torch.zeros(4)), x, atol=1e-5)
    assert torch.allclose(A._hue_rotate(x, torch.ones(4)), x, atol=1e-5)
    grey = _img(4, 1, 8, 8).expand(-1, 3, -1, -1)
    assert torch.allclose(A._hue_rotate(grey, torch.full((4,), 0.3)), grey, atol=1e-5)
    y = A.color_jitter(x, 0.0, 0.0, saturation=0.5, hue=0.1, p=1.0, generator=_gen())
    assert y.shape == x.shape and not torch.equal(y, x) and y.min() >= 0 and y.max() <= 1


def test_gamma_solarize_noise_normalize_values():
    x = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]).reshape(1, 1, 1, 5).repeat(4, 1, 1, 1)
    assert torch.allclose(A.solarize(x, 0.5, p=1.0)[0, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.25, 0.0]))
    y = A.random_gamma(x, (2.0, 2.0), p=1.0)
    assert torch.allclose(y, x**2)
    n = A.gaussian_noise(torch.full((64, 1, 16, 16), 0.5), std=(0.1, 0.1), p=1.0, generator=_gen())
    assert abs(n.std().item() - 0.1) < 0.01 and n.min() >= 0 and n.max() <= 1
    rgb = torch.ones(1, 3, 2, 2)
    out = A.normalize(rgb, (0.5, 0.25, 0.0), (0.5, 0.25, 2.0))
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))


# ------------------------------------------------------------------------------------------
# blur


def _reference_blur_2d(img: torch.Tensor, sigma: float, k: int) -> torch.Tensor:
    """Dense 2D Gaussian (outer product) on one (C, H, W) image, reflect padding."""
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    g = torch.exp(-(r**2) / (2 * sigma**2))
    g = g / g.sum()
    w = (g[:, None] * g[None, :]).expand(img.shape[0], 1, k, k)
    return F.conv2d(F.pad(img[None], [k // 2] * 4, mode="reflect"), w, groups=img.shape[0])[0]


def test_per_sample_blur_matches_a_dense_reference():
    x = _img(3, 2, 9, 11)
    sigma = torch.tensor([0.3, 1.0, 2.0])
    y = A.blur_separable(x, A.gaussian_kernels(sigma, 5))
    for i in range(3):  # the reference is per sample on purpose
        assert torch.allclose(y[i], _reference_blur_2d(x[i], float(sigma[i]), 5), atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_blur_keeps_a_constant_and_reduces_noise(spatial_dims):
    const = torch.full((4, 1, *([12] * spatial_dims)), 0.3)
    assert torch.allclose(A.gaussian_blur(const, (0.5, 2.0), p=1.0, generator=_gen()), const, atol=1e-6)
    noise = _img(4, 1, *([12] * spatial_dims))
    blurred = A.gaussian_blur(noise, (1.0, 1.0), p=1.0, generator=_gen())
    assert abs(blurred.mean() - noise.mean()) < 0.01
    assert blurred.var() < 0.5 * noise.var()
    tiny = A.gaussian_blur(noise, (1e-3, 1e-3), p=1.0, generator=_gen())
    assert torch.allclose(tiny, noise, atol=1e-6)


def test_hue_range_math():
    # the YIQ matrices are inverse of each other: a hue rotation by h then -h is the identity
    x = _img(2, 3, 4, 4)
    h = torch.tensor([0.1, -0.25])
    assert torch.allclose(A._hue_rotate(A._hue_rotate(x, h), -h), x, atol=1e-5)
    assert math.isclose(A._range(0.4, 1.0)[0], 0.6)
