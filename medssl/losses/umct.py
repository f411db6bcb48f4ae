"""Losses and pseudo-label fusion of UMCT (uncertainty-aware multi-view co-training).

Xia et al., "3D Semi-Supervised Learning with Uncertainty-Aware Multi-View Co-Training",
WACV 2020 (arXiv 1811.12506); extended in "Uncertainty-aware multi-view co-training for
semi-supervised medical image segmentation and domain adaptation", MedIA 2020 (arXiv 2006.16806).

N views of one volume (rotations / axis permutations) are segmented by N networks. Everything
here works in the *common frame*: the caller maps each view's output back with the inverse of
its view transform before calling these functions, so voxel ``v`` means the same place in every
view.

Equation map (numbering of the WACV 2020 paper as we reconstructed it; the stored copies we
could read gave the equations' content, from a summary of the extended version, but not their
numbers, so check the numbers against the PDF before quoting them elsewhere):

* Eq. (1): objective ``sum_{(X,Y) in S} L_sup(X, Y) + lambda_cot * sum_{X in U} L_cot(X)``.
  ``lambda_cot`` is ramped up over training: :func:`sigmoid_rampup`.
* Eq. (2): ``L_sup(X, Y) = sum_i L(p_i(X), Y)``: :class:`SupervisedMultiViewLoss`.
* Eq. (3): ``L_cot(X) = sum_i L(p_i(X), Y_hat_i)``: :class:`CoTrainingLoss`.
* Eq. (4), uncertainty-weighted label fusion (UWLF):
  ``Y_hat_i = sum_{j != i} c_j p_j(X) / sum_{j != i} c_j`` with the confidence
  ``c_j = 1 / U_j``: :func:`inverse_uncertainty_weights`, :func:`uncertainty_weighted_fusion`.
* Eq. (5), epistemic uncertainty by MC dropout (Gal & Ghahramani 2016; Kendall & Gal 2017):
  ``U_e(y) ~ 1/K sum_k y_k^2 - (1/K sum_k y_k)^2``, the variance of K stochastic passes:
  :func:`mc_statistics` with ``kind="variance"``.

One file on purpose: the statistics, the fusion (training's leave-one-out and test time's over all
views), the confidence, the ramp and the losses share this equation map and its departures.

Where this module departs from, or has to fill in, the paper (each is repeated where it applies):

* The paper sums over views in Eqs. (2)-(3); we average (divide by N), so the loss scale does
  not change with the number of views. The factor N is absorbed by ``lambda_cot``.
* ``c_j = 1 / U_j`` explodes where ``U_j`` is 0 (a saturated softmax, or all K passes equal);
  we use ``1 / max(U_j, floor)``. The paper does not say how it guards this.
* Whether ``U_j`` (hence ``c_j``) is a voxel map or one number per volume is not settled by the
  text we could read: ``c(p_j(X))`` is written per prediction, while the uncertainty is
  estimated voxel-wise. ``level="voxel"`` (default) weights each voxel by its own uncertainty,
  as the unofficial re-implementation we looked at does; ``level="sample"`` averages the
  uncertainty over the volume first and gives one weight per view and sample.
* The paper's "confidence score" is the fusion weight ``c_j`` above (unbounded, view-wise). The
  per-sample loss weight in [0, 1] of :func:`sample_confidence` (one minus the normalised
  entropy of the fused pseudo-label) is our addition, which down-weights samples on which the
  other views' fused opinion is itself unsure. Pass ``confidence=1`` to get the paper's loss.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "fuse_all_views",
    "normalised_entropy",
    "mc_view_statistics",
    "mc_statistics",
    "inverse_uncertainty_weights",
    "uncertainty_weighted_fusion",
    "sample_confidence",
    "sigmoid_rampup",
    "CoTrainingLoss",
    "SupervisedMultiViewLoss",
]


def _check_min_ndim(name: str, tensor: torch.Tensor, min_ndim: int, layout: str) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.ndim < min_ndim:
        raise ValueError(
            f"{name} must have shape {layout} with at least one spatial dimension, "
            f"got shape {tuple(tensor.shape)}"
        )


def _entropy(probs: torch.Tensor, dim: int, eps: float) -> torch.Tensor:
    """``-sum_c p_c log max(p_c, eps)`` along ``dim`` (0 log 0 counts as 0), keepdim."""
    return -(probs * probs.clamp_min(eps).log()).sum(dim=dim, keepdim=True)


def normalised_entropy(probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Entropy over the class axis 1 divided by ``log C``: ``(B, C, ...) -> (B, 1, ...)`` in [0, 1]
    (the voxel-wise uncertainty written with pseudo-labels)."""
    return _entropy(probs, dim=1, eps=eps) / math.log(probs.shape[1])


def mc_statistics(
    probs: torch.Tensor,
    kind: Literal["entropy", "variance"] = "entropy",
    eps: float = 1e-8,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean prediction and voxel-wise uncertainty of K stochastic (MC-dropout) passes.

    The passes are softmax outputs of one network with dropout left on (Gal & Ghahramani 2016);
    their mean approximates the predictive distribution.

    * ``kind="variance"`` is what Xia et al. 2020 use (Eq. (5), the epistemic uncertainty
      ``1/K sum_k y_k^2 - (1/K sum_k y_k)^2``): the variance across the K passes
      (``unbiased=False``), averaged over the C classes to give one map. For C = 2 both
      classes have the same variance, so the average equals the paper's per-class value.
    * ``kind="entropy"`` is the predictive entropy of the mean, ``-sum_c p_c log p_c``, in nats
      (at most ``log C``). It is not the paper's measure but is commonly used for the same
      purpose (e.g. UA-MT, Yu et al. 2019) and is larger in scale than the variance, which
      matters for the ``floor`` of :func:`inverse_uncertainty_weights`.

    Args:
        probs: ``(K, B, C, *spatial)`` class probabilities of K stochastic passes.
        kind: ``"entropy"`` or ``"variance"``.
        eps: lower bound inside the logarithm of the entropy.

    Returns:
        ``(mean_prob, uncertainty)``: ``(B, C, *spatial)`` and ``(B, 1, *spatial)``.

    Raises:
        ValueError: if ``probs`` is not ``(K, B, C, *spatial)`` or ``kind`` is unknown.
    """
    _check_min_ndim("probs", probs, 4, "(K, B, C, *spatial)")
    if probs.shape[0] < 1:
        raise ValueError("probs must hold at least one stochastic pass (K >= 1)")
    mean = probs.mean(dim=0)
    if kind == "entropy":
        uncertainty = _entropy(mean, dim=1, eps=eps)
    elif kind == "variance":
        uncertainty = probs.var(dim=0, unbiased=False).mean(dim=1, keepdim=True)
    else:
        raise ValueError(f"kind must be 'entropy' or 'variance', got {kind!r}")
    return mean, uncertainty


def mc_view_statistics(
    view_probs: torch.Tensor, kind: Literal["entropy", "variance"] = "entropy", eps: float = 1e-8
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`mc_statistics` of each of N views.

    Args:
        view_probs: ``(N, K, B, C, *spatial)`` K stochastic passes of N views.
        kind, eps: see :func:`mc_statistics`.

    Returns:
        ``(mean, uncertainty)``: ``(N, B, C, *spatial)`` and ``(N, B, 1, *spatial)``.
    """
    _check_min_ndim("view_probs", view_probs, 5, "(N, K, B, C, *spatial)")
    stats = [mc_statistics(p, kind=kind, eps=eps) for p in view_probs]
    return torch.stack([m for m, _ in stats]), torch.stack([u for _, u in stats])


def _check_views(view_probs: torch.Tensor, view_uncertainty: torch.Tensor) -> None:
    _check_min_ndim("view_probs", view_probs, 4, "(N, B, C, *spatial)")
    n, b, _, *spatial = view_probs.shape
    expected = (n, b, 1, *spatial)
    if not isinstance(view_uncertainty, torch.Tensor):
        raise TypeError(
            f"view_uncertainty must be a torch.Tensor, got {type(view_uncertainty).__name__}"
        )
    if tuple(view_uncertainty.shape) != expected:
        raise ValueError(
            f"view_uncertainty must have shape (N, B, 1, *spatial) = {expected} to match "
            f"view_probs {tuple(view_probs.shape)}, got {tuple(view_uncertainty.shape)}"
        )


def inverse_uncertainty_weights(
    view_uncertainty: torch.Tensor,
    floor: float = 1e-3,
    level: Literal["voxel", "sample"] = "voxel",
) -> torch.Tensor:
    """The paper's confidence of each view, ``c_j = 1 / U_j`` (Eq. (4) of Xia et al. 2020).

    ``U_j`` is clamped from below at ``floor`` (our addition: the paper gives no guard), so a
    view that is certain somewhere weighs at most ``1 / floor``, and never infinitely.

    Args:
        view_uncertainty: ``(N, B, 1, *spatial)`` uncertainty maps of N views, non-negative.
        floor: smallest uncertainty used, > 0. Choose it relative to the measure's scale:
            the variance of a probability is at most 0.25, the entropy at most ``log C``.
        level: ``"voxel"``: a weight per voxel, ``(N, B, 1, *spatial)``; ``"sample"``: the
            uncertainty is first averaged over the volume, ``(N, B, 1, 1, ...)`` (one ``1`` per
            spatial dimension, so it broadcasts against the maps).

    Returns:
        Positive weights, ``(N, B, 1, *spatial)`` or ``(N, B, 1, 1, ...)``.

    Raises:
        ValueError: on a bad shape, ``floor <= 0`` or an unknown ``level``.
    """
    _check_min_ndim("view_uncertainty", view_uncertainty, 4, "(N, B, 1, *spatial)")
    if view_uncertainty.shape[2] != 1:
        raise ValueError(
            "view_uncertainty must have one channel, shape (N, B, 1, *spatial), "
            f"got {tuple(view_uncertainty.shape)}"
        )
    if not floor > 0:
        raise ValueError(f"floor must be > 0, got {floor}")
    if level == "sample":
        spatial_dims = tuple(range(3, view_uncertainty.ndim))
        view_uncertainty = view_uncertainty.mean(dim=spatial_dims, keepdim=True)
    elif level != "voxel":
        raise ValueError(f"level must be 'voxel' or 'sample', got {level!r}")
    return 1.0 / view_uncertainty.clamp_min(floor)


def uncertainty_weighted_fusion(
    view_probs: torch.Tensor,
    view_uncertainty: torch.Tensor,
    floor: float = 1e-3,
    weighting: Literal["uncertainty", "average"] = "uncertainty",
    level: Literal["voxel", "sample"] = "voxel",
) -> torch.Tensor:
    """Pseudo-label of each view fused from the OTHER views (UWLF, Eq. (4) of Xia et al. 2020).

    ``fused_i = sum_{j != i} w_j p_j / sum_{j != i} w_j`` with ``w_j = 1 / max(u_j, floor)``
    (:func:`inverse_uncertainty_weights`). View i's own prediction never enters its own
    pseudo-label: that is what makes this co-training rather than self-training.
    ``weighting="average"`` sets every ``w_j = 1``: the plain mean of the other views, the
    ablation without uncertainty weighting (the uncertainties are then only shape-checked).

    The sum over ``j != i`` is taken with an exact 0/1 mask, not as "total minus own term", so
    a view with a huge weight cannot leave rounding residue in the other views' labels.
    Gradients flow through this function if its inputs carry them; pseudo-labels are normally
    computed under ``torch.no_grad()`` (and :class:`CoTrainingLoss` detaches them anyway).

    Args:
        view_probs: ``(N, B, C, *spatial)`` class probabilities of N views, in the common frame.
        view_uncertainty: ``(N, B, 1, *spatial)`` their uncertainty maps (e.g. from
            :func:`mc_statistics`); ignored with ``weighting="average"``.
        floor: see :func:`inverse_uncertainty_weights`.
        weighting: ``"uncertainty"`` (UMCT) or ``"average"`` (ablation).
        level: ``"voxel"`` or ``"sample"``, see :func:`inverse_uncertainty_weights`.

    Returns:
        ``(N, B, C, *spatial)``: entry i is the pseudo-label distribution for view i; each
        voxel sums to 1 over C when the inputs do.

    Raises:
        ValueError: on bad shapes, fewer than 2 views, or an unknown ``weighting``.
    """
    _check_views(view_probs, view_uncertainty)
    n = view_probs.shape[0]
    if n < 2:
        raise ValueError(f"fusion needs at least 2 views, got N={n}")
    if weighting == "uncertainty":
        weights = inverse_uncertainty_weights(view_uncertainty, floor=floor, level=level)
    elif weighting == "average":
        weights = torch.ones_like(view_uncertainty)
    else:
        raise ValueError(f"weighting must be 'uncertainty' or 'average', got {weighting!r}")
    weights = weights.to(view_probs.dtype)
    others = 1.0 - torch.eye(n, dtype=view_probs.dtype, device=view_probs.device)  # (N, N)
    numerator = torch.tensordot(others, weights * view_probs, dims=1)  # (N, B, C, *spatial)
    denominator = torch.tensordot(others, weights.expand_as(view_uncertainty), dims=1)
    return numerator / denominator


def fuse_all_views(
    view_probs: torch.Tensor,
    view_uncertainty: torch.Tensor,
    floor: float = 1e-3,
    weighting: Literal["uncertainty", "average"] = "uncertainty",
) -> torch.Tensor:
    """Test-time fusion of ALL N views with the weights of Eq. (4): ``sum_j w_j p_j / sum_j w_j``.

    The same inverse-uncertainty weights as :func:`uncertainty_weighted_fusion` (or equal ones
    with ``weighting="average"``), but no view is left out: at test time the ensemble's opinion
    is every view's. Used by the predictor for validation-free inference and pseudo-labels.

    Args:
        view_probs: ``(N, B, C, *spatial)``; view_uncertainty: ``(N, B, 1, *spatial)``.
        floor, weighting: see :func:`uncertainty_weighted_fusion`.

    Returns:
        ``(B, C, *spatial)``.
    """
    _check_views(view_probs, view_uncertainty)
    if weighting == "average":
        return view_probs.mean(0)
    if weighting != "uncertainty":
        raise ValueError(f"weighting must be 'uncertainty' or 'average', got {weighting!r}")
    w = inverse_uncertainty_weights(view_uncertainty, floor=floor)
    return (w * view_probs).sum(0) / w.sum(0)


def sample_confidence(fused_probs: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Per-view, per-sample confidence in [0, 1] of a fused pseudo-label (our addition).

    ``c_ib = 1 - mean_voxels H(fused_ib) / log C``, with ``H`` the entropy over classes: 1 for
    a one-hot pseudo-label everywhere, 0 for a uniform one everywhere. Used as the per-sample
    weight of :class:`CoTrainingLoss`.

    This is not an equation of Xia et al. 2020: their "confidence score" is the fusion weight
    ``1 / U_j`` of Eq. (4) (see :func:`inverse_uncertainty_weights`), which is unbounded and
    weighs views, not loss terms. Bounding and normalising it this way keeps the co-training
    loss on the scale of a cross-entropy and lets a sample on which the other views' fused
    opinion is unsure contribute less.

    Args:
        fused_probs: ``(N, B, C, *spatial)`` pseudo-label distributions (e.g. from
            :func:`uncertainty_weighted_fusion`), C >= 2.
        eps: lower bound inside the logarithm.

    Returns:
        ``(N, B)`` confidences in [0, 1].

    Raises:
        ValueError: on a bad shape or C < 2.
    """
    _check_min_ndim("fused_probs", fused_probs, 4, "(N, B, C, *spatial)")
    n_classes = fused_probs.shape[2]
    if n_classes < 2:
        raise ValueError(f"sample_confidence needs C >= 2 classes, got C={n_classes}")
    entropy = _entropy(fused_probs, dim=2, eps=eps).flatten(start_dim=2).mean(dim=2)  # (N, B)
    return (1.0 - entropy / math.log(n_classes)).clamp(0.0, 1.0)


def sigmoid_rampup(
    step: float, rampup_steps: float, max_weight: float = 1.0, start_step: float = 0
) -> float:
    """Sigmoid-shaped ramp-up of a loss weight, e.g. ``lambda_cot`` of Eq. (1).

    ``lambda(t) = max_weight * exp(-5 (1 - t')^2)`` with
    ``t' = clip((step - start_step) / rampup_steps, 0, 1)`` (Laine & Aila, "Temporal Ensembling",
    ICLR 2017), the schedule used by UMCT-style co-training and mean-teacher code. It is 0 before
    ``start_step``, ``max_weight * exp(-5)`` at ``start_step`` and ``max_weight`` from
    ``start_step + rampup_steps`` on; ``rampup_steps=0`` gives ``max_weight`` at once.

    Args:
        step: current step (iteration or epoch).
        rampup_steps: length of the ramp, >= 0.
        max_weight: weight reached at the end of the ramp.
        start_step: step at which the ramp starts.

    Returns:
        The weight, a Python float.

    Raises:
        ValueError: if ``rampup_steps < 0``.
    """
    if rampup_steps < 0:
        raise ValueError(f"rampup_steps must be >= 0, got {rampup_steps}")
    if step < start_step:
        return 0.0
    if rampup_steps == 0:
        return float(max_weight)
    t = min(max((step - start_step) / rampup_steps, 0.0), 1.0)
    return float(max_weight * math.exp(-5.0 * (1.0 - t) ** 2))


def _check_same_views(view_logits: torch.Tensor, other: torch.Tensor, other_name: str) -> None:
    _check_min_ndim("view_logits", view_logits, 4, "(N, B, C, *spatial)")
    if other.shape != view_logits.shape:
        raise ValueError(
            f"{other_name} must have the same shape as view_logits (N, B, C, *spatial) = "
            f"{tuple(view_logits.shape)}, got {tuple(other.shape)}"
        )


class CoTrainingLoss(nn.Module):
    """Confidence-weighted co-training loss on unlabeled data (Eq. (3) of Xia et al. 2020).

    For view i and sample b, ``L_ib`` compares view i's prediction with its pseudo-label
    ``Y_hat_i`` (from :func:`uncertainty_weighted_fusion`, so built from the other views):

    * ``loss_type="ce"``: cross-entropy averaged over voxels. ``hard=True`` uses the argmax of
      the pseudo-label as target; ``hard=False`` the soft distribution,
      ``-sum_c q_c log softmax(z)_c``.
    * ``loss_type="dice_ce"``: that cross-entropy plus a soft Dice loss over this sample's
      volume (``monai.losses.DiceLoss(softmax=True)``, averaged over classes, background
      included), with a one-hot (``hard``) or soft target.

    The result is ``sum_{i,b} c_ib L_ib / (N * B)`` with ``c = confidence`` (``reduction="mean"``),
    or ``sum_{i,b} c_ib L_ib / B`` (``reduction="sum"``: summed over views as in the paper's
    Eq. (3), averaged over the batch). Averaging keeps the scale independent of N (the factor then
    goes into ``lambda_cot``). Pseudo-labels and confidences are detached: no gradient reaches the
    views that produced them through this loss. The loss is computed in float32.

    Args:
        loss_type: ``"ce"`` or ``"dice_ce"``.
        hard: argmax targets (True) or soft targets (False).
        reduction: over views, ``"mean"`` (medssl's default) or ``"sum"`` (the paper).

    Shapes (forward):
        view_logits: ``(N, B, C, *spatial)`` logits of N views, in the common frame.
        pseudo_probs: ``(N, B, C, *spatial)`` pseudo-label distributions.
        confidence: ``(N, B)`` per-view, per-sample weights (e.g. :func:`sample_confidence`,
            or ones for the paper's unweighted loss).
        Returns a scalar.
    """

    def __init__(
        self, loss_type: Literal["ce", "dice_ce"] = "ce", hard: bool = True, reduction: Literal["mean", "sum"] = "mean"
    ):
        super().__init__()
        if loss_type not in ("ce", "dice_ce"):
            raise ValueError(f"loss_type must be 'ce' or 'dice_ce', got {loss_type!r}")
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction
        self.loss_type = loss_type
        self.hard = hard
        self._dice = None
        if loss_type == "dice_ce":
            from monai.losses import DiceLoss

            self._dice = DiceLoss(softmax=True, reduction="none")

    def per_sample(self, view_logits: torch.Tensor, pseudo_probs: torch.Tensor) -> torch.Tensor:
        """Unweighted ``L_ib``, shape ``(N, B)``; inputs as in :meth:`forward`."""
        _check_same_views(view_logits, pseudo_probs, "pseudo_probs")
        n, b, c, *spatial = view_logits.shape
        logits = view_logits.float().reshape(n * b, c, *spatial)
        target = pseudo_probs.detach().float().reshape(n * b, c, *spatial)
        log_p = F.log_softmax(logits, dim=1)
        if self.hard:
            index = target.argmax(dim=1, keepdim=True)
            target = torch.zeros_like(target).scatter_(1, index, 1.0)
        ce = -(target * log_p).sum(dim=1).flatten(start_dim=1).mean(dim=1)  # (N*B,)
        loss = ce
        if self._dice is not None:
            dice = self._dice(logits, target).flatten(start_dim=1).mean(dim=1)  # (N*B,)
            loss = ce + dice
        return loss.reshape(n, b)

    def forward(
        self, view_logits: torch.Tensor, pseudo_probs: torch.Tensor, confidence: torch.Tensor
    ) -> torch.Tensor:
        """Confidence-weighted mean of :meth:`per_sample`; see the class docstring."""
        _check_same_views(view_logits, pseudo_probs, "pseudo_probs")
        n, b = view_logits.shape[:2]
        if tuple(confidence.shape) != (n, b):
            raise ValueError(
                f"confidence must have shape (N, B) = {(n, b)}, got {tuple(confidence.shape)}"
            )
        per_sample = self.per_sample(view_logits, pseudo_probs)
        return (confidence.detach().float() * per_sample).sum() / (b if self.reduction == "sum" else n * b)


class SupervisedMultiViewLoss(nn.Module):
    """Dice + cross-entropy of every view against the label (Eq. (2) of Xia et al. 2020).

    ``monai.losses.DiceCELoss(to_onehot_y=True, softmax=True)`` per view, averaged over the N
    views (the paper sums; the factor N is a constant). Views and label share the common frame.
    Computed in float32.

    Shapes (forward):
        view_logits: ``(N, B, C, *spatial)`` logits of N views.
        label: ``(B, 1, *spatial)`` integer class indices (any numeric dtype).
        Returns a scalar.
    """

    def __init__(self):
        super().__init__()
        from monai.losses import DiceCELoss

        self.loss = DiceCELoss(to_onehot_y=True, softmax=True)

    def forward(self, view_logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        _check_min_ndim("view_logits", view_logits, 4, "(N, B, C, *spatial)")
        n, b, _, *spatial = view_logits.shape
        if tuple(label.shape) != (b, 1, *spatial):
            raise ValueError(
                f"label must have shape (B, 1, *spatial) = {(b, 1, *spatial)} to match "
                f"view_logits {tuple(view_logits.shape)}, got {tuple(label.shape)}"
            )
        return sum(self.loss(view_logits[i].float(), label) for i in range(n)) / n
