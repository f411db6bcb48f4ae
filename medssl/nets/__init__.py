"""Networks: factories over ``monai.networks`` with ``spatial_dims`` so 2D and 3D share code."""

from __future__ import annotations

from medssl.nets.multiview_unet import MultiViewAsymUNet
from medssl.nets.resnet import build_resnet
from medssl.nets.unet import build_unet
from medssl.nets.vit import build_vit

#: network name -> factory taking plain keyword arguments (explicit registry, no discovery)
NETWORKS = {
    "unet": build_unet,
    "multiview_asym_unet": MultiViewAsymUNet,
    "resnet": build_resnet,
    "vit": build_vit,
}


def build_network(name: str, **kwargs):
    """Build a registered network by name with plain keyword arguments."""
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; available: {sorted(NETWORKS)}")
    return NETWORKS[name](**kwargs)
