"""Self-supervised methods for MedMNIST evaluation, and the supervised baseline.

One file per method; each composes ``backbone + heads (medssl.nets.heads) + loss
(medssl.losses.ssl)`` on :class:`~medssl.methods.ssl.base.SSLMethod` and overrides
``training_loss``. An explicit registry: ``build_ssl_method("simclr", backbone, **kwargs)``.
"""

from __future__ import annotations

from torch import nn

from medssl.methods.ssl.barlow import BarlowTwins
from medssl.methods.ssl.base import SSLMethod, cosine_momentum, ema_update, momentum_copy
from medssl.methods.ssl.byol import BYOL
from medssl.methods.ssl.dino import DINO
from medssl.methods.ssl.mocov3 import MoCoV3
from medssl.methods.ssl.nnclr import NNCLR
from medssl.methods.ssl.simclr import SimCLR
from medssl.methods.ssl.simsiam import SimSiam
from medssl.methods.ssl.supervised import Supervised
from medssl.methods.ssl.vicreg import VICReg

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
