"""Image-level SSL augmentation recipes: one view's ops, the papers' presets, two views, multi-crop.

A view is a :class:`ViewAugment` (crop, flip, colour jitter, grayscale, gamma, blur, noise,
solarise: the batched ops of :mod:`medssl.transforms.image_ssl_ops`); a preset (:data:`PRESETS`)
is the recipe of one paper: two view recipes, and for DINO a local-crop recipe and their number.
:class:`SSLAugment` turns a uint8 batch into normalised float views: ``two_views`` (SimCLR ...
VICReg), ``multi_crop`` (DINO: 2 globals, then the locals), or one view (a supervised step). Which
of these a method wants is the method's business (``SSLMethod.augmented_views``).

The presets follow the papers' recipes adapted to 28 px grayscale medical images (MedMNIST v2):
minimum crop scale 0.2 instead of 0.08 (a 0.08 crop of 28 px is 8 px), colour jitter only in
brightness/contrast on grayscale (saturation, hue and random grayscale act on RGB only), a 5-tap
blur with sigma in (0.1, 1.0) px instead of a 23-tap kernel with sigma in (0.1, 2.0) px at 224 px,
DINO local crops of 12 px (96/224 of 28).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Sequence

import torch
import torch.nn as nn

from medssl.transforms.image_ssl_ops import (
    Range,
    color_jitter,
    gaussian_blur,
    gaussian_noise,
    normalize,
    random_flip,
    random_gamma,
    random_grayscale,
    random_resized_crop,
    solarize,
    to_float,
)


@dataclass(frozen=True)
class ViewAugment:
    """The augmentation of one view; the defaults are the identity (every op off).

    Ops run in this order: crop, flip, colour jitter, grayscale, gamma, blur, noise, solarize.
    Probabilities are per sample. Field meanings follow the op functions of
    :mod:`medssl.transforms.image_ssl_ops`.
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
# SimCLR's colour distortion of strength 0.5 (see the preset), symmetric; the same as MoCo v2's
_SIMCLR = ({**_CROP, "jitter_p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1,
            "grayscale_p": 0.2, "blur_p": 0.5},) * 2

#: preset name -> {"views": (view-1 fields, view-2 fields), optional "local": fields, "n_local": int}
#: (field names of :class:`ViewAugment`; unset fields are off).
PRESETS: dict[str, dict] = {
    # SimCLR (Chen et al. 2020, appendix A): crop, flip, colour distortion of strength s with
    # p 0.8 and grayscale p 0.2, blur p 0.5; symmetric views. s = 0.5 as SimCLR on CIFAR-10
    # (appendix B.9; 0.8 * s = 0.4, hue 0.2 * s = 0.1). SimCLR drops the blur on 32 px CIFAR;
    # it is kept (5 taps, sigma <= 1 px) because on grayscale the colour half of the distortion
    # reduces to brightness/contrast.
    "simclr": {"views": _SIMCLR},
    # BYOL (Grill et al. 2020, table 6): asymmetric blur p 1.0 / 0.1 and solarisation p 0 / 0.2.
    "byol": {"views": _BYOL},
    # MoCo v3 (Chen, Xie & He 2021): BYOL's augmentation.
    "mocov3": {"views": tuple(dict(v) for v in _BYOL)},
    # SimSiam (Chen & He 2021): MoCo v2's, symmetric: jitter (0.4, 0.4, 0.4, 0.1) p 0.8,
    # grayscale 0.2, blur p 0.5.
    "simsiam": {"views": tuple(dict(v) for v in _SIMCLR)},
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
