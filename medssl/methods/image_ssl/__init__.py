"""Image-level self-supervised methods (MedMNIST, 2D and 3D), and the supervised baseline.

Image-level: each method learns a backbone's pooled features from augmented views of whole
images (:mod:`medssl.engines.image_ssl`), unlike the segmentation pretraining of
``medssl.methods.contrastive`` (Chaitanya et al.) or UMCT's views of a volume.

One file per method; each composes ``backbone + heads (medssl.nets.heads) + loss
(medssl.losses.image_ssl)`` on :class:`~medssl.methods.image_ssl.base.SSLMethod`, overrides
``training_loss`` and declares what it needs from the loop (base lr, clipping, views, labels).
An explicit registry: ``build_ssl_method("simclr", backbone, **kwargs)``. Adding a method is one
file plus one line in :data:`SSL_METHODS` (and its name in
``medssl.medmnist.config.MEDMNIST_SSL_METHODS``, which a test keeps in step).
"""

from __future__ import annotations

from torch import nn

from medssl.methods.image_ssl.barlow import BarlowTwins
from medssl.methods.image_ssl.base import SSLMethod, cosine_momentum, ema_update, momentum_copy
from medssl.methods.image_ssl.byol import BYOL
from medssl.methods.image_ssl.dino import DINO
from medssl.methods.image_ssl.mocov3 import MoCoV3
from medssl.methods.image_ssl.nnclr import NNCLR
from medssl.methods.image_ssl.simclr import SimCLR
from medssl.methods.image_ssl.simsiam import SimSiam
from medssl.methods.image_ssl.supervised import Supervised
from medssl.methods.image_ssl.vicreg import VICReg

#: method name -> class (explicit registry, no discovery by class name)
SSL_METHODS: dict[str, type[SSLMethod]] = {
    "simclr": SimCLR,
    "mocov3": MoCoV3,
    "byol": BYOL,
    "simsiam": SimSiam,
    "dino": DINO,
    "barlow": BarlowTwins,
    "vicreg": VICReg,
    "nnclr": NNCLR,
    "supervised": Supervised,
}


def build_ssl_method(name: str, backbone: nn.Module, **kwargs) -> SSLMethod:
    """Build the method registered under ``name`` around ``backbone`` with plain keyword arguments.

    Raises:
        KeyError: ``name`` is not registered (the message lists the registered names).
    """
    if name not in SSL_METHODS:
        raise KeyError(f"unknown SSL method {name!r}; available: {sorted(SSL_METHODS)}")
    return SSL_METHODS[name](backbone, **kwargs)


__all__ = [
    "SSL_METHODS",
    "SSLMethod",
    "BarlowTwins",
    "BYOL",
    "DINO",
    "MoCoV3",
    "NNCLR",
    "SimCLR",
    "SimSiam",
    "Supervised",
    "VICReg",
    "build_ssl_method",
    "cosine_momentum",
    "ema_update",
    "momentum_copy",
]
