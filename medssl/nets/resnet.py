"""ResNet backbone factory over MONAI's ResNet (``monai.networks.nets.ResNet``), 2D and 3D.

The backbone contract used by the SSL methods: ``backbone(x) -> (B, backbone.out_dim)`` pooled
features (global average pooling, no classifier). MONAI's ResNet is used rather than
torchvision's so that one factory covers 2D and 3D through ``spatial_dims`` (and torchvision
must not be installed here, see GUIDE section 3).
"""

from __future__ import annotations

import torch.nn as nn

#: depth -> (MONAI factory name, pooled feature width)
_DEPTHS = {18: ("resnet18", 512), 50: ("resnet50", 2048)}


def build_resnet(
    depth: int = 18,
    spatial_dims: int = 2,
    in_channels: int = 1,
    small_input: bool = True,
    norm: str = "batch",
) -> nn.Module:
    """A ResNet-18/50 feature extractor returning pooled features.

    ``small_input=True`` is the CIFAR / MedMNIST-28 stem (3x3 conv1 with stride 1, no max-pool),
    as used by SimCLR on CIFAR-10 (Chen et al. 2020, appendix B.9) and by the MedMNIST v2
    reference ResNets for 28 px inputs (Yang et al. 2023): a standard stem would shrink a 28 px
    image to 7 px before the first residual block. ``small_input=False`` is the standard
    7x7 / stride-2 conv1 + max-pool stem, for inputs of 64 px and more.

    Speed: on CPU, bf16 autocast with a channels-last input is about 2x faster than fp32
    (GUIDE section 3): ``x.to(memory_format=torch.channels_last)`` in 2D,
    ``torch.channels_last_3d`` in 3D (and the same for the module: ``net.to(memory_format=...)``).
    Nothing in the network needs changing for it.

    Args:
        depth: 18 (basic blocks, 512 features) or 50 (bottleneck blocks, 2048 features).
        spatial_dims: 2 or 3.
        in_channels: input channels (1 for grayscale / a single-modality scan, 3 for RGB).
        small_input: 3x3/stride-1 stem without max-pool (28 px inputs) instead of the
            7x7/stride-2 stem with max-pool.
        norm: normalisation layer, a MONAI norm name (``"batch"``, ``"instance"``, ...).

    Returns:
        A MONAI ``ResNet`` without its fully connected layer, mapping ``(B, in_channels, H, W)``
        (2D) or ``(B, in_channels, H, W, D)`` (3D) to ``(B, out_dim)``; ``out_dim`` (512 or 2048)
        is set as an attribute. Parameters: about 11.2M (2D) / 33.2M (3D) for depth 18.

    Raises:
        ValueError: for a depth other than 18 or 50, or ``spatial_dims`` other than 2 or 3.
    """
    from monai.networks import nets

    if depth not in _DEPTHS:
        raise ValueError(f"ResNet depth must be one of {sorted(_DEPTHS)}, got {depth}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    factory, out_dim = _DEPTHS[depth]
    net = getattr(nets, factory)(
        spatial_dims=spatial_dims,
        n_input_channels=in_channels,
        conv1_t_size=3 if small_input else 7,
        conv1_t_stride=1 if small_input else 2,
        no_max_pool=small_input,
        feed_forward=False,  # no fc: forward returns the flattened global-average-pooled features
        norm=norm,
    )
    net.out_dim = out_dim
    return net
