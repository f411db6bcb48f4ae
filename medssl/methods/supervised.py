"""Supervised 3D segmentation: the baseline every semi-supervised method must beat.

A MONAI U-Net trained with Dice + cross-entropy (``monai.losses.DiceCELoss``) on random patches
from the labeled cases, validated by sliding-window inference on whole test volumes.
"""

from __future__ import annotations

import torch.nn as nn

from medssl.methods.base import SegmentationMethod


class SupervisedSegmentation(SegmentationMethod):
    """Backbone + Dice/CE loss.

    Args:
        net: a network mapping ``(B, 1, *spatial)`` to logits ``(B, C, *spatial)``.
        **kwargs: see :class:`~medssl.methods.base.SegmentationMethod`.
    """

    def __init__(self, net: nn.Module, **kwargs):
        super().__init__(**kwargs)
        from monai.losses import DiceCELoss

        self.net = net
        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int):
        logits = self(batch["image"])
        loss = self.loss(logits.float(), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss
