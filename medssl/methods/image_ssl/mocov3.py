"""MoCo v3: query encoder + predictor against a momentum key encoder, symmetric InfoNCE.

Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021;
facebookresearch/moco-v3. The momentum encoder is an EMA copy of backbone + projector (not of the
predictor), updated by :meth:`SSLMethod.momentum_update` from 0.99 to 1 on a cosine schedule
(``--moco-m-cos``). The loss ``L(q1, k2) + L(q2, k1)`` is
:class:`~medssl.methods.image_ssl.base.PredictorMomentumMethod`'s, each term
:class:`~medssl.losses.image_ssl.InfoNCELoss` (``2T * CE``).

The official code builds the heads per backbone family (``moco/builder.py`` of the release:
``MoCo_ResNet`` / ``MoCo_ViT`` over ``_build_mlp(num_layers, in, mlp_dim, out, last_bn=True)``,
every Linear ``bias=False``, hidden blocks Linear-BN-ReLU, the last Linear followed by
``BatchNorm1d(affine=False)`` when ``last_bn``), and ``main_moco.py`` sets the temperature:

=========  ======================  ==============================  ==================
backbone   projector               predictor                       temperature
=========  ======================  ==============================  ==================
ResNet     2 layers, last BN       2 layers, **no** last BN        1.0 (``--moco-t``
                                   (``_build_mlp(..., False)``)    default)
ViT        3 layers, last BN       2 layers, last BN               0.2 (CONFIG.md)
=========  ======================  ==============================  ==================

:meth:`MoCoV3.default_kwargs` declares these per architecture, so the engine (which never looks
at a method's name) builds the ResNet recipe on a ResNet and the ViT recipe on a ViT; the
constructor's own defaults are the ResNet recipe (medssl's usual backbone). Explicit
``method_kwargs`` win. Kept from medssl, not the paper: MLP width 1024 (paper 4096; output 256 as
the paper) for small images, and the optimiser: AdamW at ``base_lr`` per 256 images for ResNets
(the official ResNet recipe is LARS, lr 0.6 x B/256 in the release, weight decay 1e-6), and the
paper's 1.5e-4 for ViTs (``vit_base_lr``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from medssl.losses.image_ssl import InfoNCELoss
from medssl.methods.image_ssl.base import PredictorMomentumMethod, momentum_copy
from medssl.nets.heads import MLPHead

#: the official per-family settings (see the module doc): ResNet / ViT
RESNET_SETTINGS: dict[str, Any] = {"temperature": 1.0, "proj_layers": 2, "predictor_last_bn": False}
VIT_SETTINGS: dict[str, Any] = {"temperature": 0.2, "proj_layers": 3, "predictor_last_bn": True}


class MoCoV3(PredictorMomentumMethod):
    """MoCo v3. Args: backbone; hidden_dim, proj_dim: MLP sizes; temperature: InfoNCE ``T``;
    base_momentum: EMA start; proj_layers: Linear layers of the projector (2 ResNet, 3 ViT);
    predictor_last_bn: BatchNorm (no affine) after the predictor's last Linear (ViT only)."""

    aug_preset = "mocov3"
    vit_base_lr = 1.5e-4  # MoCo v3's rate for ViTs with AdamW (per 256 images); ResNets: base_lr
    momentum_pairs = (("backbone", "momentum_backbone"), ("projector", "momentum_projector"))

    @classmethod
    def default_kwargs(cls, arch: str, num_classes: int | None = None) -> dict[str, Any]:
        """The official recipe of the backbone family: :data:`VIT_SETTINGS` on a ViT,
        :data:`RESNET_SETTINGS` otherwise (ResNets)."""
        return dict(VIT_SETTINGS if arch.startswith("vit") else RESNET_SETTINGS)

    def __init__(
        self,
        backbone: nn.Module,
        hidden_dim: int = 1024,
        proj_dim: int = 256,
        temperature: float = RESNET_SETTINGS["temperature"],
        base_momentum: float = 0.99,
        proj_layers: int = RESNET_SETTINGS["proj_layers"],
        predictor_last_bn: bool = RESNET_SETTINGS["predictor_last_bn"],
    ) -> None:
        super().__init__(backbone)
        # MLPHead drops the bias of every Linear followed by BatchNorm; the official MLPs have none at all
        self.projector = MLPHead(self.feature_dim, hidden_dim, proj_dim, num_layers=proj_layers, last_bn=True)
        self.predictor = MLPHead(proj_dim, hidden_dim, proj_dim, num_layers=2, last_bn=predictor_last_bn)
        last = self.predictor.mlp[-1]
        if isinstance(last, nn.Linear) and last.bias is not None:  # ResNet recipe: no last BN, still no bias
            self.predictor.mlp[-1] = nn.Linear(last.in_features, last.out_features, bias=False)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.base_momentum = base_momentum
        self.criterion = InfoNCELoss(temperature)
