"""BYOL: online encoder + predictor regress an EMA target encoder, ``2 - 2 cos``, symmetric.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020. The target (backbone + projector) is an
EMA copy updated by :meth:`SSLMethod.momentum_update` on the cosine schedule of Sec. 3.2; the loss
``L(p1, t2) + L(p2, t1)`` is :class:`~medssl.methods.image_ssl.base.PredictorMomentumMethod`'s.
Defaults for MedMNIST: MLPs ``-> 1024 -> 256`` (paper 4096 -> 256), ``base_momentum = 0.99``
(solo-learn's CIFAR recipe; the paper uses 0.996 with long ImageNet schedules).
"""

from __future__ import annotations

from torch import nn

from medssl.losses.image_ssl import NegativeCosineLoss
from medssl.methods.image_ssl.base import PredictorMomentumMethod, momentum_copy
from medssl.nets.heads import MLPHead


class BYOL(PredictorMomentumMethod):
    """BYOL. Args: backbone; hidden_dim, proj_dim: MLP sizes; base_momentum: EMA start value."""

    aug_preset = "byol"
    momentum_pairs = (("backbone", "target_backbone"), ("projector", "target_projector"))

    def __init__(
        self, backbone: nn.Module, hidden_dim: int = 1024, proj_dim: int = 256, base_momentum: float = 0.99
    ) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, hidden_dim, proj_dim, num_layers=2)
        self.predictor = MLPHead(proj_dim, hidden_dim, proj_dim, num_layers=2)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.base_momentum = base_momentum
        self.criterion = NegativeCosineLoss(mode="byol")
