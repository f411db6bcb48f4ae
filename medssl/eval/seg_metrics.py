"""Segmentation metrics of one case: Dice and the 95th-percentile Hausdorff distance per class.

Used by training validation, the final test evaluation and (next) inference reports. Both come
from MONAI (``compute_dice``, ``compute_hausdorff_distance``); this module fixes the conventions
medssl reports with: background excluded, a class absent from both prediction and reference is
NaN (and left out of means, not counted as 1), HD95 in mm using the case's voxel spacing, and an
infinite HD95 (a class present on one side only) reported as NaN.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import torch


def dice_hd95(
    pred_label: torch.Tensor, ref_label: torch.Tensor, num_classes: int, spacing: Sequence[float] | None = None
) -> torch.Tensor:
    """Per-class Dice and HD95 of a batch of label maps.

    Args:
        pred_label: ``(B, 1, *spatial)`` integer predicted labels.
        ref_label: ``(B, 1, *spatial)`` integer reference labels.
        num_classes: classes including background (C).
        spacing: voxel size in mm along the spatial axes (HD95 in voxels when None).

    Returns:
        ``(B, 2 * (C - 1))``: Dice of classes 1..C-1, then their HD95 (mm); NaN where a class is
        absent from both (Dice) or from either side (HD95).
    """
    from monai.metrics import compute_dice, compute_hausdorff_distance
    from monai.networks.utils import one_hot

    pred = one_hot(pred_label, num_classes)
    gt = one_hot(ref_label, num_classes)
    dice = compute_dice(pred, gt, include_background=False, ignore_empty=True)
    with warnings.catch_warnings():  # MONAI warns for every empty class; NaN marks those
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(pred, gt, include_background=False, percentile=95,
                                        spacing=None if spacing is None else list(spacing))
    hd = torch.where(torch.isfinite(hd), hd, torch.full_like(hd, float("nan")))
    return torch.cat([dice, hd], 1)


def summarize(per_case: torch.Tensor, class_names: Sequence[str], prefix: str) -> dict[str, float]:
    """Means over cases (NaN-aware) of :func:`dice_hd95` rows, as ``{prefix}/dice_<class>``,
    ``{prefix}/dice_mean``, ``{prefix}/hd95_<class>``, ``{prefix}/hd95_mean``."""
    k = len(class_names) - 1
    width = 2 * k
    per_class = torch.nanmean(per_case, 0) if per_case.numel() else torch.full((width,), float("nan"))
    dice, hd95 = per_class[:k], per_class[k:]
    out = {f"{prefix}/dice_{name}": float(v) for name, v in zip(class_names[1:], dice)}
    out[f"{prefix}/dice_mean"] = float(torch.nanmean(dice))
    out.update({f"{prefix}/hd95_{name}": float(v) for name, v in zip(class_names[1:], hd95)})
    out[f"{prefix}/hd95_mean"] = float(torch.nanmean(hd95))
    return out
