"""Losses: tensors in, scalar (or per-sample tensor) out, with explicit shape checks.

``umct``: the pieces of uncertainty-aware multi-view co-training (Xia et al. 2020): MC-dropout
statistics, uncertainty-weighted label fusion of the other views, per-sample confidence, the
sigmoid ramp-up of the co-training weight, the co-training loss and the multi-view supervised
loss. MONAI is imported only when a loss that needs it is built.
"""

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
    "CoTrainingLoss",
    "SupervisedMultiViewLoss",
    "inverse_uncertainty_weights",
    "mc_statistics",
    "sample_confidence",
    "sigmoid_rampup",
    "uncertainty_weighted_fusion",
]
