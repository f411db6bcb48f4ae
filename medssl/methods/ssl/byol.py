"""BYOL: online encoder + predictor regress an EMA target encoder, ``2 - 2 cos``, symmetric.

Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020. The target (backbone + projector) is an
EMA copy updated by :meth:`SSLMethod.momentum_update` on the cosine schedule of Sec. 3.2.
Defaults for MedMNIST: MLPs ``-> 1024 -> 256`` (paper 4096 -> 256), ``base_momentum = 0.99``
(solo-learn's CIFAR recipe; the paper uses 0.996 with long ImageNet schedules).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.ssl import NegativeCosineLoss
from medssl.methods.ssl.base import SSLMethod, momentum_copy, two_views
from medssl.nets.heads import MLPHead


class BYOL(SSLMethod):
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

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "BYOL")
        p1 = self.predictor(self.projector(self.backbone(x1)))
        p2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            t1 = self.target_projector(self.target_backbone(x1))
            t2 = self.target_projector(self.target_backbone(x2))
        loss = self.criterion(p1, t2) + self.criterion(p2, t1)
        return loss, {"loss": loss.detach()}
