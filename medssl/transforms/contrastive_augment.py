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

``style="official"`` follows the official code instead (krishnabits001/domain_specific_cl):

* spatial (global stage): ``utils.py`` ``crop_batch``: a square crop of ``bbox_dim = 100`` px of
  the 192 px ACDC image (``init_acdc.py``: ``img_size_x = 192``) at an offset drawn in
  ``[10, 70)`` px per axis, resized back to the input size (bilinear, ``order=1``); i.e. a side
  fraction of 100/192 (27 % of the area), offsets in [10/192, 70/192) of the side, applied here
  in these fractions to any input size (:func:`official_crop`);
* intensity (both stages): ``models.py`` ``brit_cont_net``: brightness ``+ U(-0.3, 0.3)`` *then*
  contrast ``(x - mean) * U(0.7, 1.3) + mean``, no noise (:func:`official_intensity`). The
  official images are scaled to [0, 1] and clipped to [0, 1.5] afterwards; medssl's images are
  z-scored, so the ranges apply in z-score units and there is no clip (a [0, 1.5] clip has no
  meaning in z-score units).
"""

from __future__ import annotations

import torch

from medssl.transforms.image_ssl_ops import crop_boxes, random_resized_crop

#: official crop geometry (utils.py crop_batch on 192 px ACDC images): side 100 px, offsets [10, 70) px
OFFICIAL_CROP_SIDE = 100 / 192
OFFICIAL_CROP_OFFSET = (10 / 192, 70 / 192)
STYLES = ("medssl", "official")


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


def official_crop(
    x: torch.Tensor,
    side: float = OFFICIAL_CROP_SIDE,
    offset: tuple[float, float] = OFFICIAL_CROP_OFFSET,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The official global-stage crop: a fixed-size square box at a random offset, resized back.

    Along every spatial axis the box covers ``side`` of the image side and starts at a fraction
    ``o ~ U(offset)`` of it (official: 100 px at an integer offset in ``[10, 70)`` of 192 px;
    here continuous, so that the geometry is the same for any input size). The box is resampled
    to the input size bilinearly (:func:`~medssl.transforms.image_ssl_ops.crop_boxes`).

    Args:
        x: ``(B, C, *spatial)`` float batch, 2D or 3D.
        side: box side as a fraction of the image side (``side ** d`` of the area / volume).
        offset: range of the box start, as fractions of the side (``offset[1] + side <= 1``).
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    if not 0 < side <= 1 or not 0 <= offset[0] <= offset[1] or offset[1] + side > 1 + 1e-9:
        raise ValueError(f"the crop must lie inside the image: side {side}, offset range {offset}")
    b, d = x.shape[0], x.ndim - 2
    o = offset[0] + (offset[1] - offset[0]) * torch.rand((b, d), generator=generator, device=x.device)
    sides = torch.full((b, d), float(side), device=x.device)
    # crop_boxes: the image spans [-1, 1]; a box of half-extent fraction s and centre c spans [c - s, c + s]
    centers = -1.0 + 2.0 * o + sides
    return crop_boxes(x, sides, centers)


def official_intensity(
    x: torch.Tensor, strength: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The official intensity augmentation: brightness ``+ b`` then contrast ``c`` about the image mean.

    ``x' = (x + b - mean(x + b)) * c + mean(x + b)`` per sample (``tf.image.random_brightness``
    with ``max_delta=0.3``, then ``tf.image.random_contrast`` with ``[0.7, 1.3]``), ``b ~ U(-0.3 s, 0.3 s)``,
    ``c ~ U(1 - 0.3 s, 1 + 0.3 s)``; no noise, no clip (see the module docstring).

    Args:
        x: ``(B, C, *spatial)`` z-scored float batch.
        strength: scales the ranges; 0 returns ``x``.
        generator: random generator.

    Returns:
        Same shape as ``x``.
    """
    if strength <= 0:
        return x
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)
    u = torch.rand((2, b), generator=generator, device=x.device, dtype=torch.float32)
    bright = (0.3 * strength * (2 * u[0] - 1)).to(x.dtype).reshape(shape)
    contrast = (1 + 0.3 * strength * (2 * u[1] - 1)).to(x.dtype).reshape(shape)
    y = x + bright
    mean = y.mean(dim=tuple(range(2, x.ndim)), keepdim=True)  # per image and channel, as tf.image
    return (y - mean) * contrast + mean


def contrastive_views(
    x: torch.Tensor,
    num_views: int = 2,
    spatial: bool = True,
    strength: float = 1.0,
    generator: torch.Generator | None = None,
    style: str = "medssl",
    keep_original: bool = False,
) -> torch.Tensor:
    """``num_views`` independently augmented copies of a batch.

    Args:
        x: ``(N, C, *spatial)`` images.
        num_views: V, copies per image.
        spatial: add the crop (global stage); False keeps copies pixel-aligned.
        strength: augmentation strength (0 = identical copies).
        generator: random generator.
        style: ``"medssl"`` (random resized crop 60-100 % of the area, contrast/brightness/noise)
            or ``"official"`` (:func:`official_crop`, :func:`official_intensity`).
        keep_original: copy 0 is the image itself, unaugmented (the official G^D batch holds
            each image and one augmented version of it: ``stitch_batch_global_loss_gd``).

    Returns:
        ``(V, N, C, *spatial)``.
    """
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    views = []
    for view in range(num_views):
        v = x
        if keep_original and view == 0:
            views.append(v)
            continue
        if spatial and strength > 0:
            if style == "official":
                v = official_crop(v, generator=generator)
            else:
                lo = max(0.2, 1 - 0.4 * strength)
                v = random_resized_crop(v, scale=(lo, 1.0), ratio=(0.8, 1.25), generator=generator)
        views.append(official_intensity(v, strength, generator) if style == "official"
                     else intensity_jitter(v, strength, generator))
    return torch.stack(views)
