"""Supervised segmentation with a 2D network on slices, evaluated per volume in 3D.

The fine-tuning protocol of Chaitanya et al. (NeurIPS 2020; official code
krishnabits001/domain_specific_cl, ``train_model/ft_pretr_encoder_decoder_net_local_loss.py``):
a 2D U-Net, initialised from the 2D contrastive stages, trained on random 2D slices of the
labeled volumes; validation and test predict every slice of a volume, stack the slice
predictions into a 3D label map and score it per volume (Dice, HD95 per class:
:mod:`medssl.eval.seg_metrics`). A 2D contrastive stage's weights load into this network as
they are (the 3D fine-tuning of ``method: supervised`` with ``model.name: multiview_asym_unet``
inflates them into the in-plane kernels of a 3D network instead).

A slice is a ``(H, W, 1)`` patch (``data.patch_size: [H, W, 1]``, the last axis is the slice
axis), so the engine, its patch sampler and the
:class:`~medssl.inference.predictor.Predictor` are the 3D ones: the sliding window with ROI
``(H, W, 1)`` visits the volume one slice at a time (padding slices smaller than ``H x W``,
tiling larger ones) and :meth:`SliceSupervised.forward` runs the 2D network on the slices of each
window batch. Everything after the forward pass (loss, stitching, metrics, checkpoint selection
on the val split, the one test at the end, ``metrics.json``) is the segmentation engine's.
"""

from __future__ import annotations

import torch

from medssl.methods.supervised import SupervisedSegmentation


class SliceSupervised(SupervisedSegmentation):
    """A 2D network + Dice/CE loss on ``(B, C, H, W, 1)`` slices (see the module docstring).

    Args:
        net: a 2D network mapping ``(B, C, H, W)`` to logits ``(B, K, H, W)``.
        **kwargs: see :class:`~medssl.methods.base.SegmentationMethod`; ``roi_size`` must be
            ``(H, W, 1)``.
    """

    spatial_dims = 2

    def __init__(self, net: torch.nn.Module, **kwargs):
        super().__init__(net=net, **kwargs)
        if len(self.roi_size) != 3 or self.roi_size[2] != 1:
            raise ValueError(f"a 2D network predicts one slice per window: roi_size must be (H, W, 1), got {self.roi_size}")

    @classmethod
    def from_config(cls, cfg, spec) -> SliceSupervised:
        from medssl.errors import ConfigError
        from medssl.nets import build_network

        m, d = cfg.model, cfg.data
        roi = tuple(cfg.val.roi_size or d.patch_size)
        if d.patch_size[2] != 1 or roi[2] != 1:
            raise ConfigError(f"method supervised_2d trains and predicts on slices: data.patch_size and val.roi_size "
                              f"must be [H, W, 1], got {list(d.patch_size)} and {list(roi)}")
        in_channels = len(spec.channel_names)
        if m.name == "multiview_asym_unet":  # one view, 2D: the network a 2D contrastive stage pretrains
            net = build_network("multiview_asym_unet", num_views=1, in_channels=in_channels,
                                out_channels=spec.num_classes, channels=m.channels, dropout=m.dropout, spatial_dims=2,
                                squeeze_views=True, norm=m.norm)
        else:
            net = build_network(m.name, spatial_dims=2, in_channels=in_channels, out_channels=spec.num_classes,
                                channels=m.channels, strides=m.strides, num_res_units=m.num_res_units,
                                dropout=m.dropout, norm=m.norm)
        return cls(net=net, **cls.seg_kwargs(cfg, spec))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W, 1)`` slices (or ``(B, C, H, W)``) -> logits of the same layout."""
        if x.ndim == 5:
            if x.shape[-1] != 1:
                raise ValueError(f"SliceSupervised expects (B, C, H, W, 1) slices, got {tuple(x.shape)}")
            return self.net(x[..., 0])[..., None]
        return self.net(x)
