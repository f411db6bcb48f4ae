"""Backbones of the image-level methods (SSL pretraining, MedMNIST evaluation): one factory by name.

A backbone maps ``(B, C, *spatial)`` images to ``(B, out_dim)`` pooled features
(``backbone.out_dim``), in 2D and 3D. Networks are built here and load no files: weights come in
through :mod:`medssl.core.weights` (a pretraining checkpoint: :mod:`medssl.engines.image_ssl_checkpoint`).
"""

from __future__ import annotations

from typing import Any

from torch import nn

#: backbones :func:`build_backbone` knows
ARCHS = ("resnet18", "resnet50", "vit_small")


def build_backbone(arch: str, spatial_dims: int, in_channels: int, **arch_kwargs: Any) -> nn.Module:
    """A backbone from :data:`ARCHS` with ``out_dim``.

    Args:
        arch: ``"resnet18"`` / ``"resnet50"`` (MONAI ResNet, ``medssl.nets.resnet``; keyword
            ``small_input``) or ``"vit_small"`` (``medssl.nets.vit.build_vit`` with its defaults:
            192 wide, 6 blocks, 3 heads, about 2.7M parameters; keywords ``image_size``,
            ``patch_size``). ``vit_small`` names medssl's small ViT, not DeiT's ViT-S/16.
        spatial_dims: 2 or 3.
        in_channels: input channels.
        **arch_kwargs: the keywords above.
    """
    if arch in ("resnet18", "resnet50"):
        from medssl.nets.resnet import build_resnet

        small = bool(arch_kwargs.get("small_input", True))
        return build_resnet(int(arch[6:]), spatial_dims, in_channels, small_input=small)
    if arch == "vit_small":
        from medssl.nets.vit import build_vit

        return build_vit(
            image_size=int(arch_kwargs.get("image_size", 28)),
            patch_size=int(arch_kwargs.get("patch_size", 4)),
            in_channels=in_channels,
            spatial_dims=spatial_dims,
        )
    raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")


def default_arch_kwargs(arch: str, image_size: int) -> dict[str, Any]:
    """Arch settings for an image side: ResNet small 3x3 stem for sides <= 32 (MedMNIST 28 px;
    the 7x7/2 + max-pool stem would leave 7 px before the first block), the standard stem from 64 px;
    ViT patch 4 up to 32 px (49 tokens at 28), 8 up to 64 px, else 16 (ViT-B/16's)."""
    if arch.startswith("resnet"):
        return {"small_input": image_size <= 32}
    patch = 4 if image_size <= 32 else 8 if image_size <= 64 else 16
    return {"image_size": image_size, "patch_size": patch}


def input_layer(backbone: nn.Module) -> str | None:
    """The state-dict name of the backbone's first convolution weight (its input layer), or ``None``."""
    for name, m in backbone.named_modules():
        if isinstance(m, nn.modules.conv._ConvNd):
            return f"{name}.weight" if name else "weight"
    return None
