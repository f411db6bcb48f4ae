"""MoCo v3: query encoder + predictor against a momentum key encoder, symmetric InfoNCE.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021;
facebookresearch/moco-v3 ``moco/builder.py``. The momentum encoder is an EMA copy of backbone +
projector (not of the predictor), updated by :meth:`SSLMethod.momentum_update` from 0.99 to 1 on
a cosine schedule (``--moco-m-cos``). Projector and predictor end with a BatchNorm without affine
parameters, as ``_build_mlp``. Defaults for MedMNIST: hidden 1024 (paper 4096), output 256,
``T = 0.2`` (the ViT recipe; the ResNet recipe uses 1.0). The loss ``L(q1, k2) + L(q2, k1)`` is
:class:`~medssl.methods.image_ssl.base.PredictorMomentumMethod`'s.
"""

from __future__ import annotations

from torch import nn

from medssl.losses.image_ssl import InfoNCELoss
from medssl.methods.image_ssl.base import PredictorMomentumMethod, momentum_copy
from medssl.nets.heads import MLPHead


class MoCoV3(PredictorMomentumMethod):
    """MoCo v3. Args: backbone; hidden_dim, proj_dim: MLP sizes; temperature; base_momentum."""

    aug_preset = "mocov3"
    vit_base_lr = 1.5e-4  # MoCo v3's rate for ViTs with AdamW (per 256 images); ResNets: base_lr
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
