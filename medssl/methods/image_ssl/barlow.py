"""Barlow Twins: make the cross-correlation of two views' embeddings the identity.

Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021.
The projector (an "expander") is 3 Linear layers with BN + ReLU between them and no BN at the end
(the loss batch-normalises). Defaults for MedMNIST: width 2048 (paper 8192), ``lambd = 5e-3``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import BarlowTwinsLoss
from medssl.methods.image_ssl.base import SSLMethod, two_views
from medssl.nets.heads import MLPHead


class BarlowTwins(SSLMethod):
    """Barlow Twins. Args: backbone; proj_dim: expander width and output; lambd: off-diagonal weight."""

    aug_preset = "barlow"

    def __init__(self, backbone: nn.Module, proj_dim: int = 2048, lambd: float = 5e-3) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, proj_dim, proj_dim, num_layers=3)
        self.criterion = BarlowTwinsLoss(lambd)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "BarlowTwins")
        loss = self.criterion(self.projector(self.backbone(x1)), self.projector(self.backbone(x2)))
        return loss, {"loss": loss.detach()}
