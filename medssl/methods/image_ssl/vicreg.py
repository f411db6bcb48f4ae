"""VICReg: invariance + variance hinge + covariance decorrelation on an expander's outputs.

Bardes, Ponce & LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022. Expander: 3 Linear layers with BN + ReLU between them.
Defaults for MedMNIST: width 2048 (paper 8192), coefficients (25, 25, 1) as the paper.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import VICRegLoss
from medssl.methods.image_ssl.base import SSLMethod, two_views
from medssl.nets.heads import MLPHead


class VICReg(SSLMethod):
    """VICReg. Args: backbone; proj_dim: expander width and output; sim, var, cov: loss weights."""

    aug_preset = "vicreg"

    def __init__(
        self, backbone: nn.Module, proj_dim: int = 2048, sim: float = 25.0, var: float = 25.0, cov: float = 1.0
    ) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, proj_dim, proj_dim, num_layers=3)
        self.criterion = VICRegLoss(sim, var, cov)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "VICReg")
        loss = self.criterion(self.projector(self.backbone(x1)), self.projector(self.backbone(x2)))
        return loss, {"loss": loss.detach()}
