"""Supervised 3D segmentation: the baseline every semi-supervised method must beat.

A MONAI U-Net (or the one-view asymmetric U-Net that a contrastive stage pretrains) trained with
Dice + cross-entropy (``monai.losses.DiceCELoss``) on random patches from the labeled cases,
validated by sliding-window inference on whole validation volumes.
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

    @classmethod
    def from_config(cls, cfg, spec) -> SupervisedSegmentation:
        from medssl.nets import build_network

        m = cfg.model
        if m.name == "multiview_asym_unet":  # one view: the network a contrastive stage pretrains
            net = build_network("multiview_asym_unet", num_views=1, in_channels=spec.num_channels, out_channels=spec.num_classes,
                                channels=m.channels, dropout=m.dropout, spatial_dims=3, squeeze_views=True)
        else:
            net = build_network(m.name, spatial_dims=3, in_channels=spec.num_channels, out_channels=spec.num_classes,
                                channels=m.channels, strides=m.strides, num_res_units=m.num_res_units,
                                dropout=m.dropout, norm=m.norm)
        return cls(net=net, **cls.seg_kwargs(cfg, spec))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch: dict, batch_idx: int):
        logits = self(batch["image"])
        loss = self.loss(logits.float(), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss
