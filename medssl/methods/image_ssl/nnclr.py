"""NNCLR: contrast the other view against the nearest neighbour of this view in a support queue.

Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning of
Visual Representations", ICCV 2021; solo-learn ``solo/methods/nnclr.py``. Projections of view 1
are enqueued after each training step (the support set is a buffer, saved in checkpoints).
Defaults for MedMNIST: projector ``-> 1024 -> 256`` ending in BN (paper 3 layers of 2048),
predictor ``256 -> 1024 -> 256`` (paper 4096), queue 4096 (paper 98304), ``T = 0.1``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import NNCLRLoss, NNMemoryBank
from medssl.methods.image_ssl.base import SSLMethod, two_views
from medssl.nets.heads import MLPHead


class NNCLR(SSLMethod):
    """NNCLR. Args: backbone; hidden_dim, proj_dim, pred_hidden_dim: MLP sizes; queue_size; temperature."""

    aug_preset = "nnclr"

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 1024,
        proj_dim: int = 256,
        pred_hidden_dim: int = 1024,
        queue_size: int = 4096,
        temperature: float = 0.1,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, hidden_dim, proj_dim, num_layers=2, last_bn=True)
        self.predictor = MLPHead(proj_dim, pred_hidden_dim, proj_dim, num_layers=2)
        self.support = NNMemoryBank(queue_size, proj_dim)
        self.criterion = NNCLRLoss(temperature)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "NNCLR")
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        nn1, nn2 = self.support.nearest(z1), self.support.nearest(z2)
        loss = 0.5 * (self.criterion(nn1, p2) + self.criterion(nn2, p1))
        if self.training:
            self.support.update(z1)
        return loss, {"loss": loss.detach()}
