"""Batched SSL augmentations on tensors, 2D and 3D, run on the training device.

Every op takes a whole batch ``(B, C, *spatial)`` (``spatial_dims`` = 2 or 3, inferred from
``x.ndim``) of floats in [0, 1], samples its per-sample parameters as tensors and applies them
in one vectorised call: no Python loop over the samples and no PIL, so a 256-image batch costs
a few milliseconds and the data loader only has to move uint8 arrays. Loops in this file run
over spatial axes or over the (at most 4) colour-jitter operations, never over the batch.

Randomness: each op takes an optional ``torch.Generator`` (``None`` = the global RNG).
Parameters are drawn on the generator's device and moved to ``x``'s device, so a CPU generator
also works for CUDA batches; for per-voxel noise on a GPU pass a generator on that GPU.

Presets (:data:`PRESETS`, :class:`SSLAugment`) follow the papers' recipes adapted to 28 px
grayscale medical images (MedMNIST v2): minimum crop scale 0.2 instead of 0.08 (a 0.08 crop
of 28 px is 8 px), colour jitter only in brightness/contrast on grayscale (saturation, hue and
random grayscale act on RGB only), a 5-tap blur with sigma in (0.1, 1.0) px instead of a
23-tap kernel with sigma in (0.1, 2.0) px at 224 px, DINO local crops of 12 px (96/224 of 28).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

Range = tuple[float, float]

# ------------------------------------------------------------------------------------------
# sampling helpers


def _rand(n: int, generator: torch.Generator | None, device: torch.device, *shape: int) -> torch.Tensor:
    """``U(0, 1)`` of shape ``(n, *shape)``, drawn on the generator's device, returned on ``device``."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(n, *shape, generator=generator, device=gen_device).to(device)


def _uniform(lo: float, hi: float, n: int, generator, device, *shape: int) -> torch.Tensor:
    """``U(lo, hi)`` of shape ``(n, *shape)`` (float32)."""
    return lo + (hi - lo) * _rand(n, generator, device, *shape)


def _coin(p: float, n: int, generator, device) -> torch.Tensor:
    """Per-sample Bernoulli(p) as a bool tensor ``(n,)``."""
    return _rand(n, generator, device) < p


def _per_sample(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a per-sample ``(B,)`` tensor to broadcast against ``x`` ``(B, C, *spatial)``."""
    return v.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype if v.is_floating_point() else v.dtype)


def _where(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample select: ``a[i]`` where ``mask[i]`` else ``b[i]``."""
    return torch.where(_per_sample(mask, a), a, b)


def _range(v: float | Sequence[float], around: float | None = None) -> Range:
    """A ``(lo, hi)`` range; a scalar ``s`` means ``(around - s, around + s)`` or ``(0, s)``."""
    if isinstance(v, (int, float)):
        return (max(0.0, around - v), around + v) if around is not None else (0.0, float(v))
    lo, hi = v
    if lo > hi:
        raise ValueError(f"range must have lo <= hi, got {tuple(v)}")
    return float(lo), float(hi)


def _check(x: torch.Tensor) -> int:
    """Validate a ``(B, C, *spatial)`` float batch and return ``spatial_dims``."""
    if x.ndim not in (4, 5):
        raise ValueError(f"expected a (B, C, H, W) or (B, C, H, W, D) batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected a float batch (use to_float first), got {x.dtype}")
    return x.ndim - 2


# ------------------------------------------------------------------------------------------
# ops


def to_float(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 images to floats in [0, 1]; float input is only cast.

    Args:
        x: ``(B, C, *spatial)`` uint8 (0..255) or floating tensor.
        dtype: floating output dtype.

    Returns:
        ``x`` as ``dtype``, divided by 255 if it was uint8.
    """
    if x.dtype == torch.uint8:
        return x.to(dtype) / 255.0
    if x.is_floating_point():
        return x.to(dtype)
    raise TypeError(f"to_float takes uint8 or floating tensors, got {x.dtype}")


def crop_boxes(
    x: torch.Tensor, sides: torch.Tensor, centers: torch.Tensor, out_size: Sequence[int] | None = None
) -> torch.Tensor:
    """Resample an axis-aligned box per sample to ``out_size`` (bilinear / trilinear).

    Boxes are in normalised coordinates with ``align_corners=False``: the image spans
    ``[-1, 1]`` on every axis (outer pixel edges), a box of side ``s`` and centre ``c`` spans
    ``[c - s, c + s]``. Side 1 / centre 0 is the whole image, and for a box on pixel edges the
    output equals the slice (e.g. side 0.5, centre -0.5 at half size is ``x[..., :H//2]``).

    Args:
        x: ``(B, C, *spatial)`` float batch.
        sides: ``(B, spatial_dims)`` half-extent fractions in (0, 1], in ``x``'s axis order (H, W[, D]).
        centers: ``(B, spatial_dims)`` box centres in [-1, 1], same axis order.
        out_size: output spatial size; default: the input's.

    Returns:
        ``(B, C, *out_size)``.
    """
    n = _check(x)
    out_size = tuple(x.shape[2:]) if out_size is None else tuple(out_size)
    if len(out_size) != n:
        raise ValueError(f"out_size needs {n} values, got {out_size}")
    grid = box_grid(sides.to(x.device, x.dtype), centers.to(x.device, x.dtype), out_size)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def box_grid(sides: torch.Tensor, centers: torch.Tensor, out_size: Sequence[int]) -> torch.Tensor:
    """Sampling grid of axis-aligned boxes for ``F.grid_sample`` (``align_corners=False``).

    Equal to ``F.affine_grid`` with the diagonal theta ``[[s_W, 0, c_W], [0, s_H, c_H]]`` (3D
    likewise), built by broadcasting per-axis coordinates instead of a batched matmul over every
    output pixel: about 10x faster on CPU (7 ms -> 0.7 ms for 32 x 28^3).

    Args:
        sides: ``(B, n)`` box half-extent fractions, axis order (H, W[, D]).
        centers: ``(B, n)`` box centres, same order.
        out_size: ``n`` output sides.

    Returns:
        ``(B, *out_size, n)`` with the last axis ordered (x=W, y=H[, z=D]) as grid_sample wants.
    """
    B, n = sides.shape
    comps = []
    for j in range(n):  # grid component j is spatial axis n - 1 - j
        d = n - 1 - j
        size = out_size[d]
        base = (torch.arange(size, dtype=sides.dtype, device=sides.device) * 2 + 1) / size - 1  # pixel centres
        shape = [B] + [1] * n
        shape[1 + d] = size
        comps.append((sides[:, d, None] * base + centers[:, d, None]).reshape(shape).expand(B, *out_size))
    return torch.stack(comps, dim=-1)


def sample_crop_boxes(
    batch: int,
    spatial_dims: int,
    scale: Range = (0.2, 1.0),
    ratio: Range = (3 / 4, 4 / 3),
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
    attempts: int = 10,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample random-resized-crop boxes (torchvision's ``RandomResizedCrop.get_params``, batched).

    The box covers a fraction ``s ~ U(scale)`` of the image area (volume in 3D); its aspect
    ratio ``W/H ~ logU(ratio)``; in 3D, ``D/H ~ logU(ratio)`` too. As in torchvision, up to
    ``attempts`` candidates are drawn and the first that fits inside the image is kept (all
    candidates are drawn at once); where none fits, the box is the whole image with the
    aspect ratio clamped, i.e. side 1 on every axis. The position is uniform.

    Args:
        batch: number of boxes.
        spatial_dims: 2 or 3.
        scale: area (volume) fraction range.
        ratio: aspect-ratio range.
        generator: random generator (``None``: global RNG).
        device: device of the returned tensors.
        attempts: candidates per sample.

    Returns:
        ``(sides, centers)``, each ``(batch, spatial_dims)``, for :func:`crop_boxes`.
    """
    device = torch.device(device)
    s = _uniform(*scale, batch, generator, device, attempts)  # (B, K)
    log_r = _uniform(math.log(ratio[0]), math.log(ratio[1]), batch, generator, device, attempts, spatial_dims - 1)
    # sides (as fractions of the image side): side_0 = c, side_k = c * r_k with prod(sides) = s
    log_c = (torch.log(s) - log_r.sum(-1)) / spatial_dims
    sides = torch.exp(torch.cat([log_c[..., None], log_c[..., None] + log_r], dim=-1))  # (B, K, n)
    fits = (sides <= 1.0).all(-1)  # (B, K)
    first = torch.argmax(fits.to(torch.uint8), dim=1)  # first fitting candidate (0 if none)
    sides = sides[torch.arange(batch, device=device), first]
    sides = torch.where(fits.any(1, keepdim=True), sides, torch.ones_like(sides))
    centers = (1.0 - sides) * (2.0 * _rand(batch, generator, device, spatial_dims) - 1.0)
    return sides, centers


def random_resized_crop(
    x: torch.Tensor,
    scale: Range = (0.2, 1.0),
    ratio: Range = (3 / 4, 4 / 3),
    out_size: int | Sequence[int] | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random resized crop, a different box per sample, in one ``grid_sample`` call.

    Inception-style crop as used by SimCLR (Chen et al. 2020) and all later SSL methods; see
    :func:`sample_crop_boxes` for the sampling and its 3D extension. No antialiasing: at 28 px
    the crops are mostly upsampled (DINO's local crops are downsampled by at most ~1.5x).

    Args:
        x: ``(B, C, *spatial)`` float batch.
        scale: area (volume) fraction range; ``(1, 1)`` with ``ratio=(1, 1)`` is the whole image.
        ratio: aspect-ratio range.
        out_size: output side (int, every axis) or spatial size; default: the input's.
        generator: random generator (``None``: global RNG).

    Returns:
        ``(B, C, *out_size)``. A whole-image crop at the input size returns ``x`` itself
        (resampling would be the identity only up to float rounding).
    """
    n = _check(x)
    if isinstance(out_size, int):
        out_size = (out_size,) * n
    out_size = tuple(x.shape[2:]) if out_size is None else tuple(out_size)
    if tuple(scale) == (1.0, 1.0) and tuple(ratio) == (1.0, 1.0) and out_size == tuple(x.shape[2:]):
        return x
    sides, centers = sample_crop_boxes(len(x), n, scale, ratio, generator, x.device)
    return crop_boxes(x, sides, centers, out_size)


def random_flip(
    x: torch.Tensor, p: float = 0.5, dims: Sequence[int] = (-1,), generator: torch.Generator | None = None
) -> torch.Tensor:
    """Flip each sample along each of ``dims`` independently with probability ``p``.

    Args:
        x: ``(B, C, *spatial)`` batch.
        p: flip probability per sample and axis.
        dims: spatial axes (negative, or >= 2); default the last one (horizontal in 2D).
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    for d in dims:
        d = d % x.ndim
        if d < 2:
            raise ValueError(f"flip dims must be spatial axes (>= 2), got {d}")
        if p > 0:
            x = _where(_coin(p, len(x), generator, x.device), x.flip(d), x)
    return x


def _luma_weights(channels: int, dtype: torch.dtype, device) -> torch.Tensor:
    """Luminance weights ``(C,)``: ITU-R 601 for RGB (as torchvision's rgb_to_grayscale), else the channel mean."""
    if channels == 3:
        return torch.tensor([0.299, 0.587, 0.114], dtype=dtype, device=device)
    return torch.full((channels,), 1.0 / channels, dtype=dtype, device=device)


def _luminance(x: torch.Tensor) -> torch.Tensor:
    """Luminance ``(B, 1, *spatial)`` of a batch (ITU-R 601 luma for RGB)."""
    w = _luma_weights(x.shape[1], x.dtype, x.device)
    return torch.einsum("c,bc...->b...", w, x).unsqueeze(1)


def _apply_color_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Per-sample channel mixing: ``out[b, i] = sum_j m[b, i, j] * x[b, j]``; ``m`` is ``(B, C, C)``."""
    if x.shape[1] == 1:
        return x * _per_sample(m[:, 0, 0], x)
    return torch.einsum("bij,bj...->bi...", m, x)


def _hue_matrix(h: torch.Tensor) -> torch.Tensor:
    """RGB matrices ``(B, 3, 3)`` rotating the hue by ``h`` turns per sample (YIQ chroma rotation).

    A linear approximation of torchvision's HSV hue shift, as NVIDIA DALI's hue op: rotate the
    (I, Q) chroma plane of YIQ by ``2 pi h``; luma and gray pixels are unchanged.
    """
    rgb2yiq = torch.tensor(
        [[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]], dtype=h.dtype, device=h.device
    )
    cos, sin = torch.cos(2 * math.pi * h), torch.sin(2 * math.pi * h)
    rot = torch.zeros(len(h), 3, 3, dtype=h.dtype, device=h.device)
    rot[:, 0, 0] = 1.0
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = cos, -sin, sin, cos
    return torch.linalg.inv(rgb2yiq) @ rot @ rgb2yiq


def _hue_rotate(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of an RGB batch ``(B, 3, *spatial)`` by ``h`` ``(B,)`` turns (see :func:`_hue_matrix`)."""
    return _apply_color_matrix(_hue_matrix(h.to(x.dtype)), x)


def color_jitter(
    x: torch.Tensor,
    brightness: float | Range = 0.4,
    contrast: float | Range = 0.4,
    saturation: float | Range = 0.0,
    hue: float | Range = 0.0,
    p: float = 0.8,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Colour jitter with per-sample factors in a per-sample random order (torchvision semantics).

    Brightness multiplies by ``b``; contrast blends with the sample's mean luminance by ``c``;
    saturation blends with the per-pixel luminance by ``s`` (RGB only); hue rotates the
    chroma by ``h`` turns (RGB only, see :func:`_hue_matrix`). Results are clamped to [0, 1]
    after each step. ``brightness=0.4`` means ``b ~ U(0.6, 1.4)``; ``hue=0.1`` means
    ``h ~ U(-0.1, 0.1)``. On grayscale (C != 3) only brightness and contrast apply.

    Every op is linear in the colour: ``t -> M t + beta * mean_luminance(t)`` with a per-sample
    ``C x C`` matrix ``M`` (``b I``, ``c I``, ``s I + (1 - s) 1 w^T``, the hue rotation) and
    ``beta = 1 - c`` for contrast, else 0. So each of the (at most 4) steps picks every sample's
    op by indexing the small parameter tensors and costs one channel mix, one mean and one clamp.

    Args:
        x: ``(B, C, *spatial)`` float batch in [0, 1].
        brightness, contrast, saturation: strength ``s`` (factor ``U(1 - s, 1 + s)``) or a range.
        hue: strength in turns (``U(-h, h)``, at most 0.5) or a range.
        p: probability that a sample is jittered at all.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if p <= 0:
        return x
    B, C, dev, dt = len(x), x.shape[1], x.device, x.dtype
    eye = torch.eye(C, dtype=dt, device=dev).expand(B, C, C)
    zero = torch.zeros(B, dtype=dt, device=dev)
    mats, betas = [], []  # one (B, C, C) matrix and one (B,) mean coefficient per op
    b_lo, b_hi = _range(brightness, 1.0)
    if (b_lo, b_hi) != (1.0, 1.0):
        b = _uniform(b_lo, b_hi, B, generator, dev).to(dt)
        mats.append(b[:, None, None] * eye)
        betas.append(zero)
    c_lo, c_hi = _range(contrast, 1.0)
    if (c_lo, c_hi) != (1.0, 1.0):
        c = _uniform(c_lo, c_hi, B, generator, dev).to(dt)
        mats.append(c[:, None, None] * eye)
        betas.append(1.0 - c)
    if C == 3:
        s_lo, s_hi = _range(saturation, 1.0)
        if (s_lo, s_hi) != (1.0, 1.0):
            s = _uniform(s_lo, s_hi, B, generator, dev).to(dt)
            gray = torch.ones(3, 1, dtype=dt, device=dev) * _luma_weights(3, dt, dev)  # rows: w^T
            mats.append(s[:, None, None] * eye + (1.0 - s)[:, None, None] * gray)
            betas.append(zero)
        h_lo, h_hi = (-hue, hue) if isinstance(hue, (int, float)) else hue
        if (h_lo, h_hi) != (0.0, 0.0):
            mats.append(_hue_matrix(_uniform(h_lo, h_hi, B, generator, dev).to(dt)))
            betas.append(zero)
    if not mats:
        return x
    mats_t, betas_t = torch.stack(mats, 1), torch.stack(betas, 1)  # (B, n_ops, C, C), (B, n_ops)
    order = torch.argsort(_rand(B, generator, dev, len(mats)), dim=1)  # a permutation per sample
    apply = _coin(p, B, generator, dev)
    rows = torch.arange(B, device=dev)
    out = x
    for step in range(len(mats)):
        k = order[:, step]
        mean = _luminance(out).mean(dim=tuple(range(1, x.ndim)))  # (B,)
        out = (_apply_color_matrix(mats_t[rows, k], out) + _per_sample(betas_t[rows, k] * mean, x)).clamp(0, 1)
    return _where(apply, out, x)


def random_grayscale(x: torch.Tensor, p: float = 0.2, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace RGB samples by their luminance (repeated on 3 channels) with probability ``p``.

    Args:
        x: ``(B, C, *spatial)``; a no-op unless ``C == 3``.
        p: probability per sample.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if x.shape[1] != 3 or p <= 0:
        return x
    return _where(_coin(p, len(x), generator, x.device), _luminance(x).expand_as(x), x)


def random_gamma(
    x: torch.Tensor, gamma: Range = (0.7, 1.5), p: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample gamma ``x ** g`` with ``log g ~ U(log gamma)``, for intensity-only (grayscale) images.

    Args:
        x: ``(B, C, *spatial)`` float batch in [0, 1].
        gamma: range of the exponent.
        p: probability per sample.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if p <= 0:
        return x
    g = torch.exp(_uniform(math.log(gamma[0]), math.log(gamma[1]), len(x), generator, x.device))
    apply = _coin(p, len(x), generator, x.device)
    return _where(apply, x.clamp_min(0) ** _per_sample(g, x), x)


def gaussian_kernels(sigma: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Normalised 1D Gaussian kernels ``(B, kernel_size)`` for per-sample ``sigma`` ``(B,)``."""
    r = torch.arange(kernel_size, dtype=sigma.dtype, device=sigma.device) - (kernel_size - 1) / 2
    k = torch.exp(-(r**2) / (2 * sigma[:, None] ** 2))
    return k / k.sum(1, keepdim=True)


def blur_separable(x: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Blur each sample with its own separable kernel, one grouped conv per spatial axis.

    The batch and channel axes are folded into the conv's channels (``groups = B * C``), so one
    call blurs every sample with its own kernel. Reflect padding, as torchvision.

    Args:
        x: ``(B, C, *spatial)`` float batch; every spatial side > ``kernel_size // 2``.
        kernels: ``(B, kernel_size)`` 1D kernels (odd size), applied along every spatial axis.

    Returns:
        Same shape as ``x``.
    """
    n = _check(x)
    B, C = x.shape[:2]
    k = kernels.shape[1]
    if k % 2 == 0:
        raise ValueError(f"kernel size must be odd, got {k}")
    conv = F.conv2d if n == 2 else F.conv3d
    w = kernels.to(x.dtype).repeat_interleave(C, dim=0)  # (B*C, k)
    y = x.reshape(1, B * C, *x.shape[2:])
    for axis in range(n):
        shape = [B * C, 1] + [1] * n
        shape[2 + axis] = k
        pad = [0] * (2 * n)
        pad[2 * (n - 1 - axis)] = pad[2 * (n - 1 - axis) + 1] = k // 2  # F.pad lists the last axis first
        y = conv(F.pad(y, pad, mode="reflect"), w.reshape(shape), groups=B * C)
    return y.reshape(x.shape)


def gaussian_blur(
    x: torch.Tensor,
    sigma: Range = (0.1, 2.0),
    p: float = 0.5,
    kernel_size: int = 5,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Gaussian blur with a per-sample ``sigma ~ U(sigma)`` (pixels), separable, in one grouped conv per axis.

    SimCLR/BYOL use sigma in (0.1, 2.0) px with a kernel of 10% of the 224 px side (23 taps);
    the presets here use a 5-tap kernel and sigma up to 1 px for 28 px images.

    Args:
        x: ``(B, C, *spatial)`` float batch.
        sigma: range of the standard deviation in pixels.
        p: probability per sample.
        kernel_size: odd number of taps.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if p <= 0:
        return x
    s = _uniform(*sigma, len(x), generator, x.device)
    apply = _coin(p, len(x), generator, x.device)
    return _where(apply, blur_separable(x, gaussian_kernels(s, kernel_size)), x)


def gaussian_noise(
    x: torch.Tensor,
    std: float | Range = 0.05,
    p: float = 0.5,
    clamp: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Additive Gaussian noise with a per-sample standard deviation ``U(0, std)`` (or ``U(std)``).

    Args:
        x: ``(B, C, *spatial)`` float batch in [0, 1].
        std: maximum standard deviation, or a ``(lo, hi)`` range.
        p: probability per sample.
        clamp: clamp the result to [0, 1].
        generator: random generator (on ``x``'s device, for speed on a GPU).

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if p <= 0:
        return x
    s = _uniform(*_range(std), len(x), generator, x.device)
    apply = _coin(p, len(x), generator, x.device)
    gen_device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    y = x + noise * _per_sample(s, x)
    return _where(apply, y.clamp(0, 1) if clamp else y, x)


def solarize(
    x: torch.Tensor, threshold: float = 0.5, p: float = 0.2, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Invert the intensities at or above ``threshold`` (``1 - x``) with probability ``p`` (BYOL).

    Args:
        x: ``(B, C, *spatial)`` float batch in [0, 1].
        threshold: intensity threshold (0.5 = PIL's 128 of 255).
        p: probability per sample.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    _check(x)
    if p <= 0:
        return x
    apply = _coin(p, len(x), generator, x.device)
    return _where(apply, torch.where(x >= threshold, 1.0 - x, x), x)


def normalize(x: torch.Tensor, mean: float | Sequence[float], std: float | Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel.

    Args:
        x: ``(B, C, *spatial)`` float batch.
        mean, std: one value for all channels or one per channel.

    Returns:
        Same shape as ``x``.
    """
    n = _check(x)
    shape = (1, -1) + (1,) * n
    mean_t = torch.as_tensor(mean, dtype=x.dtype, device=x.device).reshape(shape)
    std_t = torch.as_tensor(std, dtype=x.dtype, device=x.device).reshape(shape)
    return (x - mean_t) / std_t


# ------------------------------------------------------------------------------------------
# composition and presets


@dataclass(frozen=True)
class ViewAugment:
    """The augmentation of one view; the defaults are the identity (every op off).

    Ops run in this order: crop, flip, colour jitter, grayscale, gamma, blur, noise, solarize.
    Probabilities are per sample. Field meanings follow the op functions above.
    """

    crop_scale: Range = (1.0, 1.0)
    crop_ratio: Range = (1.0, 1.0)
    size: int | None = None  # output side; None = the input size
    flip_p: float = 0.0
    flip_dims: tuple[int, ...] | None = None  # None: last axis in 2D, every axis in 3D
    jitter_p: float = 0.0
    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0  # RGB only
    hue: float = 0.0  # RGB only
    grayscale_p: float = 0.0  # RGB only
    gamma_p: float = 0.0
    gamma: Range = (0.7, 1.5)
    blur_p: float = 0.0
    blur_sigma: Range = (0.1, 1.0)
    blur_kernel: int = 5
    noise_p: float = 0.0
    noise_std: float = 0.05
    solarize_p: float = 0.0
    solarize_threshold: float = 0.5

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Augment a ``(B, C, *spatial)`` float batch in [0, 1] (before normalisation)."""
        g = generator
        x = random_resized_crop(x, self.crop_scale, self.crop_ratio, self.size, generator=g)
        if self.flip_p > 0:
            dims = self.flip_dims if self.flip_dims is not None else ((-1,) if x.ndim == 4 else (-3, -2, -1))
            x = random_flip(x, self.flip_p, dims, generator=g)
        x = color_jitter(x, self.brightness, self.contrast, self.saturation, self.hue, self.jitter_p, generator=g)
        x = random_grayscale(x, self.grayscale_p, generator=g)
        x = random_gamma(x, self.gamma, self.gamma_p, generator=g)
        x = gaussian_blur(x, self.blur_sigma, self.blur_p, self.blur_kernel, generator=g)
        x = gaussian_noise(x, self.noise_std, self.noise_p, generator=g)
        return solarize(x, self.solarize_threshold, self.solarize_p, generator=g)


# Shared pieces of the presets (28 px adaptation, see the module docstring).
_CROP = {"crop_scale": (0.2, 1.0), "crop_ratio": (3 / 4, 4 / 3), "flip_p": 0.5}
# BYOL colour jitter (0.4, 0.4, 0.2, 0.1) with p 0.8, grayscale p 0.2 (Grill et al. 2020, table 6)
_BYOL_COLOR = {"jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.2, "hue": 0.1, "grayscale_p": 0.2}
_BYOL = ({**_CROP, **_BYOL_COLOR, "blur_p": 1.0}, {**_CROP, **_BYOL_COLOR, "blur_p": 0.1, "solarize_p": 0.2})

#: preset name -> {"views": (view-1 fields, view-2 fields), optional "local": fields, "n_local": int}
#: (field names of :class:`ViewAugment`; unset fields are off).
PRESETS: dict[str, dict] = {
    # SimCLR (Chen et al. 2020, appendix A): crop, flip, colour distortion of strength s with
    # p 0.8 and grayscale p 0.2, blur p 0.5; symmetric views. s = 0.5 as SimCLR on CIFAR-10
    # (appendix B.9; 0.8 * s = 0.4, hue 0.2 * s = 0.1). SimCLR drops the blur on 32 px CIFAR;
    # it is kept (5 taps, sigma <= 1 px) because on grayscale the colour half of the distortion
    # reduces to brightness/contrast.
    "simclr": {
        "views": ({**_CROP, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
                   "grayscale_p": 0.2, "blur_p": 0.5},) * 2,
    },
    # BYOL (Grill et al. 2020, table 6): asymmetric blur p 1.0 / 0.1 and solarisation p 0 / 0.2.
    "byol": {"views": _BYOL},
    # MoCo v3 (Chen, Xie & He 2021): BYOL's augmentation.
    "mocov3": {"views": tuple(dict(v) for v in _BYOL)},
    # SimSiam (Chen & He 2021): MoCo v2's, symmetric: jitter (0.4, 0.4, 0.4, 0.1) p 0.8,
    # grayscale 0.2, blur p 0.5.
    "simsiam": {
        "views": ({**_CROP, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
                   "grayscale_p": 0.2, "blur_p": 0.5},) * 2,
    },
    # Barlow Twins (Zbontar et al. 2021), VICReg (Bardes et al. 2022), NNCLR (Dwibedi et al. 2021):
    # BYOL's augmentation.
    "barlow": {"views": tuple(dict(v) for v in _BYOL)},
    "vicreg": {"views": tuple(dict(v) for v in _BYOL)},
    "nnclr": {"views": tuple(dict(v) for v in _BYOL)},
    # DINO (Caron et al. 2021): 2 global crops scale (0.4, 1) (blur p 1.0 / 0.1 + solarise 0.2),
    # n_local local crops scale (0.05, 0.4) at 96/224 of the side (12 px at 28) with blur p 0.5;
    # BYOL colour jitter everywhere; 8 local crops as DINO's code default.
    "dino": {
        "views": (
            {**_CROP, **_BYOL_COLOR, "crop_scale": (0.4, 1.0), "blur_p": 1.0},
            {**_CROP, **_BYOL_COLOR, "crop_scale": (0.4, 1.0), "blur_p": 0.1, "solarize_p": 0.2},
        ),
        "local": {**_CROP, **_BYOL_COLOR, "crop_scale": (0.05, 0.4), "size": 12, "blur_p": 0.5},
        "n_local": 8,
    },
    # Supervised training / fine-tuning: mild crop and flip only.
    "light": {"views": ({"crop_scale": (0.8, 1.0), "crop_ratio": (3 / 4, 4 / 3), "flip_p": 0.5},) * 2},
}

_FIELDS = {f.name for f in fields(ViewAugment)}


class SSLAugment(nn.Module):
    """Batched two-view / multi-crop augmentation for SSL, from a named preset.

    Input: a ``(B, C, H, W)`` or ``(B, C, H, W, D)`` batch, uint8 (0..255) or float in [0, 1],
    on any device. Each view is ``normalize(view_augment(to_float(x)))``, float32. Runs under
    ``torch.no_grad``. See :data:`PRESETS` for the recipes and their sources.

    Example::

        aug = SSLAugment("byol", spatial_dims=2)
        v1, v2 = aug.two_views(x_uint8)                # each (B, 1, 28, 28)
        crops = SSLAugment("dino").multi_crop(x_uint8)  # 2 x (B, 1, 28, 28) + 8 x (B, 1, 12, 12)

    Args:
        preset: a key of :data:`PRESETS`.
        spatial_dims: 2 or 3; the input must have ``2 + spatial_dims`` axes.
        mean, std: normalisation after augmentation (scalar or per channel); ``(0.5, 0.5)``
            maps [0, 1] to [-1, 1] as the MedMNIST examples do. ``std=None`` skips it.
        n_local: DINO local crops (default: the preset's, 0 without local crops).
        local_size: side of the local crops (default: the preset's).
        **overrides: :class:`ViewAugment` fields set on every view, local crops included
            (e.g. ``blur_sigma=(0.1, 2.0)``, ``noise_p=0.5``).
    """

    def __init__(
        self,
        preset: str = "simclr",
        spatial_dims: int = 2,
        mean: float | Sequence[float] = 0.5,
        std: float | Sequence[float] | None = 0.5,
        n_local: int | None = None,
        local_size: int | None = None,
        **overrides,
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ValueError(f"unknown augmentation preset {preset!r}; available: {sorted(PRESETS)}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        unknown = set(overrides) - _FIELDS
        if unknown:
            raise ValueError(f"unknown augmentation options {sorted(unknown)}; available: {sorted(_FIELDS)}")
        spec = PRESETS[preset]
        self.preset = preset
        self.spatial_dims = spatial_dims
        self.mean, self.std = mean, std
        self.views = tuple(replace(ViewAugment(**v), **overrides) for v in spec["views"])
        local = spec.get("local")
        self.local = replace(ViewAugment(**local), **overrides) if local is not None else None
        if local_size is not None:
            if self.local is None:
                raise ValueError(f"preset {preset!r} has no local crops")
            self.local = replace(self.local, size=local_size)
        self.n_local = spec.get("n_local", 0) if n_local is None else n_local
        if self.n_local and self.local is None:
            raise ValueError(f"preset {preset!r} has no local crops; n_local must be 0")

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 + self.spatial_dims:
            raise ValueError(
                f"SSLAugment(spatial_dims={self.spatial_dims}) expects (B, C, {self.spatial_dims} spatial axes), "
                f"got shape {tuple(x.shape)}"
            )
        return to_float(x)

    def _finish(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.std is None else normalize(x, self.mean, self.std)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, view: int = 0, generator: torch.Generator | None = None) -> torch.Tensor:
        """One augmented view ``(B, C, *spatial)`` (the preset's ``view``-th recipe)."""
        return self._finish(self.views[view](self._prepare(x), generator))

    @torch.no_grad()
    def two_views(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Two views with independent random parameters.

        Args:
            x: ``(B, C, *spatial)`` uint8 or float batch.
            generator: random generator (``None``: global RNG).

        Returns:
            ``(v1, v2)``, each ``(B, C, *spatial)`` float32 (``size`` if a view sets it).
        """
        x = self._prepare(x)
        return tuple(self._finish(v(x, generator)) for v in self.views[:2])

    @torch.no_grad()
    def multi_crop(self, x: torch.Tensor, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """DINO multi-crop: the two global views, then ``n_local`` local crops.

        Args:
            x: ``(B, C, *spatial)`` uint8 or float batch.
            generator: random generator.

        Returns:
            ``[g1, g2, l1, ..., l_n_local]``: globals ``(B, C, *spatial)``, locals
            ``(B, C, *[local size] * spatial_dims)``.
        """
        x = self._prepare(x)
        crops = [self._finish(v(x, generator)) for v in self.views[:2]]
        crops += [self._finish(self.local(x, generator)) for _ in range(self.n_local)]
        return crops

    def extra_repr(self) -> str:
        return f"preset={self.preset!r}, spatial_dims={self.spatial_dims}, n_local={self.n_local}"

    def describe(self) -> dict:
        """The resolved recipe as plain data (for logging next to metrics)."""
        return {
            "preset": self.preset,
            "views": [asdict(v) for v in self.views],
            "local": asdict(self.local) if self.local is not None else None,
            "n_local": self.n_local,
            "mean": self.mean,
            "std": self.std,
        }
