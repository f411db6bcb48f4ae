"""Losses: tensors in, scalar (or per-sample tensor) out, with explicit shape checks.

``umct``: the pieces of uncertainty-aware multi-view co-training (Xia et al. 2020): MC-dropout
statistics, uncertainty-weighted label fusion of the other views, per-sample confidence, the
sigmoid ramp-up of the co-training weight, the co-training loss and the multi-view supervised
loss. MONAI is imported only when a loss that needs it is built.

``contrastive``: the global (G^R, G^D-, G^D) and local (L^R, L^D) contrastive losses of
Chaitanya et al. (NeurIPS 2020) and the local-region layout.

``image_ssl``: the losses of the image-level self-supervised methods of ``medssl.methods.image_ssl``.
"""

from medssl.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss, local_region_starts

from medssl.losses.umct import (
    CoTrainingLoss,
    SupervisedMultiViewLoss,
    inverse_uncertainty_weights,
    mc_statistics,
    sample_confidence,
    sigmoid_rampup,
    uncertainty_weighted_fusion,
)

__all__ = [
    "GlobalContrastiveLoss",
    "LocalContrastiveLoss",
    "local_region_starts",
    "CoTrainingLoss",
    "SupervisedMultiViewLoss",
    "inverse_uncertainty_weights",
    "mc_statistics",
    "sample_confidence",
    "sigmoid_rampup",
    "uncertainty_weighted_fusion",
]
