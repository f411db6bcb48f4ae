"""MoCo v3: query encoder + predictor against a momentum key encoder, symmetric InfoNCE.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021;
facebookresearch/moco-v3 ``moco/builder.py``. The momentum encoder is an EMA copy of backbone +
projector (not of the predictor), updated by :meth:`SSLMethod.momentum_update` from 0.99 to 1 on
a cosine schedule (``--moco-m-cos``). Projector and predictor end with a BatchNorm without affine
parameters, as ``_build_mlp``. Defaults for MedMNIST: hidden 1024 (paper 4096), output 256,
``T = 0.2`` (the ViT recipe; the ResNet recipe uses 1.0).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from medssl.losses.ssl import InfoNCELoss
from medssl.methods.ssl.base import SSLMethod, momentum_copy, two_views
from medssl.nets.heads import MLPHead


class MoCoV3(SSLMethod):
    """MoCo v3. Args: backbone; hidden_dim, proj_dim: MLP sizes; temperature; base_momentum."""

    aug_preset = "mocov3"
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 1024,
        proj_dim: int = 256,
        temperature: float = 0.2,
        base_momentum: float = 0.99,
    ) -> None:
        super().__init__(backbone)
        self.projector = MLPHead(self.feature_dim, hidden_dim, proj_dim, num_layers=2, last_bn=True)
        self.predictor = MLPHead(proj_dim, hidden_dim, proj_dim, num_layers=2, last_bn=True)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.base_momentum = base_momentum
        self.criterion = InfoNCELoss(temperature)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, "MoCoV3")
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = self.momentum_projector(self.momentum_backbone(x1))
            k2 = self.momentum_projector(self.momentum_backbone(x2))
        loss = self.criterion(q1, k2) + self.criterion(q2, k1)
        return loss, {"loss": loss.detach()}
