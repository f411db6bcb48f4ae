"""SimSiam: a shared encoder, a predictor and a stop-gradient; no negatives, no momentum.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021, Eq. (4):
``L = D(p1, stopgrad(z2)) / 2 + D(p2, stopgrad(z1)) / 2``. Projector ends with BatchNorm
(no affine); the predictor is a bottleneck (hidden = output / 4), as in the paper. Defaults for
MedMNIST: projector ``-> 512 -> 512`` in 2 layers (the paper's CIFAR variant; ImageNet uses
3 layers of 2048), predictor ``512 -> 128 -> 512``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import NegativeCosineLoss
from medssl.methods.image_ssl.base import SSLMethod, two_views
from medssl.nets.heads import MLPHead


class SimSiam(SSLMethod):
    """SimSiam. Args: backbone; proj_dim: projector width/output; pred_hidden_dim: predictor bottleneck."""

    aug_preset = "simsiam"

    def __init__(self, backbone: nn.Module, proj_dim: int = 512, pred_hidden_dim: int = 128) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, proj_dim, proj_dim, num_layers=2, last_bn=True)
        self.predictor = MLPHead(proj_dim, pred_hidden_dim, proj_dim, num_layers=2)
        self.criterion = NegativeCosineLoss(mode="simsiam")  # detaches its target: the stop-grad

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "SimSiam")
        z1 = self.projector(self.backbone(x1))
        z2 = self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = 0.5 * (self.criterion(p1, z2) + self.criterion(p2, z1))
        # collapse monitor of Sec. 4.1: per-dimension std of l2-normalised z, ~1/sqrt(d) if healthy
        z_std = nn.functional.normalize(z1.detach(), dim=1).std(0).mean()
        return loss, {"loss": loss.detach(), "z_std": z_std}
