"""SimCLR: two views, a projector, NT-Xent with the other 2N - 2 views as negatives.

Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020.
Defaults for 28 px MedMNIST and small backbones: a 2-layer projector ``feature_dim -> 512 ->
128`` (the paper: hidden = feature size 2048, output 128) and ``T = 0.5`` (the paper's small-batch
/ CIFAR choice).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import NTXentLoss
from medssl.methods.image_ssl.base import SSLMethod, two_views
from medssl.nets.heads import MLPHead


class SimCLR(SSLMethod):
    """SimCLR. Args: backbone; hidden_dim, proj_dim: projector sizes; temperature: NT-Xent ``T``."""

    aug_preset = "simclr"

    def __init__(
        self, backbone: nn.Module, hidden_dim: int = 512, proj_dim: int = 128, temperature: float = 0.5
    ) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, hidden_dim, proj_dim, num_layers=2)
        self.criterion = NTXentLoss(temperature)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "SimCLR")
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        loss = self.criterion(z1, z2)
        return loss, {"loss": loss.detach()}
