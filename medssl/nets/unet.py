"""U-Net factory over MONAI's residual UNet (``monai.networks.nets.UNet``).

MONAI's UNet is used rather than a home-grown one: it is well tested, supports 2D and 3D via
``spatial_dims`` and residual units, and is what hospital teams already know from MONAI bundles.
"""

from __future__ import annotations

from typing import Sequence

import torch.nn as nn


def build_unet(
    spatial_dims: int,
    in_channels: int,
    out_channels: int,
    channels: Sequence[int] = (16, 32, 64, 128),
    strides: Sequence[int] = (2, 2, 2),
    num_res_units: int = 1,
    dropout: float = 0.0,
    norm: str = "instance",
) -> nn.Module:
    """A residual U-Net.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for a single-modality scan).
        out_channels: number of classes including background; the network outputs logits of
            shape ``(B, out_channels, *spatial)``.
        channels: feature channels per resolution level.
        strides: downsampling stride between levels (``len(channels) - 1`` values).
        num_res_units: residual units per block.
        dropout: dropout probability (MC-dropout methods switch it on at inference).
        norm: ``"instance"`` or ``"batch"``.
    """
    from monai.networks.nets import UNet

    if len(strides) != len(channels) - 1:
        raise ValueError(f"need len(channels) - 1 = {len(channels) - 1} strides, got {len(strides)}")
    return UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        strides=tuple(strides),
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
    )
