"""UMCT: uncertainty-aware multi-view co-training for semi-supervised 3D segmentation.

Xia et al., "3D Semi-Supervised Learning with Uncertainty-Aware Multi-View Co-Training",
WACV 2020 (arXiv 1811.12506). Composition:

* views (:mod:`medssl.transforms.umct_views`): exact axis permutations / rotations of each patch;
* backbone (:class:`medssl.nets.multiview_unet.MultiViewAsymUNet`): one sub-network per view
  with asymmetric 3x3x1 + 1x1x3 kernels, all views in one grouped (batched) call;
* losses (:mod:`medssl.losses.umct`): MC-dropout statistics, uncertainty-weighted label fusion,
  per-sample confidence, the sigmoid ramp of the co-training weight and the co-training loss.

One training step: supervised Dice+CE of every view on the labeled patch; after
``stage1_steps``, K MC-dropout passes per view on the unlabeled patch (no gradient) give each
view's mean prediction and uncertainty; view i's pseudo-label fuses the *other* views'
predictions weighted by inverse uncertainty; the co-training loss of view i against it is scaled
by the sample's confidence and by lambda(t). Inference is the views' ensemble.

Ablations by config: ``num_views: 1`` (single-view supervised baseline), ``fusion: average``
(plain average of the other views, no uncertainty weighting), full UMCT.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medssl.losses.umct import (
    CoTrainingLoss,
    fuse_all_views,
    mc_view_statistics,
    sample_confidence,
    sigmoid_rampup,
    uncertainty_weighted_fusion,
)
from medssl.methods.base import SegmentationMethod
from medssl.nets.multiview_unet import enable_mc_dropout
from medssl.transforms.umct_views import make_views


class UMCT(SegmentationMethod):
    """Backbone (multi-view asymmetric U-Net) + views + supervised and co-training losses.

    Args:
        net: a :class:`~medssl.nets.multiview_unet.MultiViewAsymUNet` with ``num_views`` views:
            ``(B, N, S, S, S) -> (B, N, C, S, S, S)``.
        num_views: N (1, 3 or 6).
        fusion: ``"uncertainty"`` (UMCT) or ``"average"`` (ablation).
        uncertainty: ``"entropy"`` or ``"variance"`` of the MC-dropout passes.
        mc_samples: K stochastic passes per view on unlabeled patches.
        floor: lower bound of the uncertainty in the inverse-uncertainty weights.
        lambda_max, rampup_steps, stage1_steps: co-training weight schedule.
        cotrain_loss: ``"ce"`` or ``"dice_ce"``.
        confidence_weighting: scale each unlabeled sample's loss by its confidence (medssl's
            addition; the paper has none).
        view_reduction: the supervised and co-training losses over views: ``"mean"`` (medssl's
            default: the loss scale does not change with N) or ``"sum"`` (the paper's Eqs. (2)-(3)).
        **kwargs: see :class:`~medssl.methods.base.SegmentationMethod`.
    """

    def __init__(
        self,
        net: nn.Module,
        num_views: int = 3,
        fusion: str = "uncertainty",
        uncertainty: str = "entropy",
        mc_samples: int = 4,
        floor: float = 0.05,
        lambda_max: float = 1.0,
        rampup_steps: int = 200,
        stage1_steps: int = 200,
        cotrain_loss: str = "ce",
        confidence_weighting: bool = True,
        view_reduction: str = "mean",
        **kwargs,
    ):
        super().__init__(**kwargs)
        from monai.losses import DiceCELoss

        self.net = net
        self.views = make_views(num_views)
        self.fusion, self.uncertainty_kind = fusion, uncertainty
        self.mc_samples, self.floor = mc_samples, floor
        self.lambda_max, self.rampup_steps, self.stage1_steps = lambda_max, rampup_steps, stage1_steps
        self.confidence_weighting = confidence_weighting
        self.sup_loss = DiceCELoss(to_onehot_y=True, softmax=True)
        if view_reduction not in ("mean", "sum"):
            raise ValueError(f"view_reduction must be 'mean' or 'sum', got {view_reduction!r}")
        self.view_reduction = view_reduction
        self.cot_loss = CoTrainingLoss(loss_type=cotrain_loss, reduction=view_reduction)

    @classmethod
    def from_config(cls, cfg, spec) -> UMCT:
        from medssl.errors import ConfigError, DataError
        from medssl.nets import build_network

        u = cfg.umct
        if len(set(cfg.data.patch_size)) != 1:
            raise ConfigError(f"umct needs cubic patches so that all views share one shape; got data.patch_size={list(cfg.data.patch_size)}")
        if cfg.model.name != "multiview_asym_unet":
            raise ConfigError("umct needs model.name: multiview_asym_unet")
        net = build_network(
            "multiview_asym_unet", num_views=u.num_views, in_channels=spec.num_channels, out_channels=spec.num_classes,
            channels=cfg.model.channels, dropout=cfg.model.dropout, spatial_dims=3,
        )
        if u.init_2d is not None:
            from medssl.core.runtime import rank
            from medssl.core.weights import load_checkpoint
            from medssl.nets.multiview_unet import init_inplane_from_2d

            try:
                loaded, _ = init_inplane_from_2d(net, load_checkpoint(u.init_2d))
            except DataError as exc:
                raise DataError(exc.args[0], u.init_2d) from None
            if rank() == 0:
                print(f"umct.init_2d {u.init_2d}: {len(loaded)} in-plane tensors initialised from the 2D network")
        return cls(
            net=net, num_views=u.num_views, fusion=u.fusion, uncertainty=u.uncertainty, mc_samples=u.mc_samples,
            floor=u.floor, lambda_max=u.lambda_max, rampup_steps=u.rampup_steps, stage1_steps=u.stage1_steps,
            cotrain_loss=u.cotrain_loss, confidence_weighting=u.confidence_weighting,
            view_reduction=u.view_reduction, **cls.seg_kwargs(cfg, spec),
        )

    @property
    def num_views(self) -> int:
        return len(self.views)

    @property
    def uses_unlabeled(self) -> bool:
        """Co-training needs unlabeled patches; one view is the supervised baseline."""
        return len(self.views) > 1

    # ------------------------------------------------------------------ the views
    def view_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Each view's logits mapped back to the common frame.

        Args:
            x: ``(B, 1, S, S, S)`` patches (cubic, so all views share one shape).

        Returns:
            ``(N, B, C, S, S, S)``.
        """
        xv = torch.cat([v.apply(x) for v in self.views], dim=1)  # (B, N, S, S, S)
        out = self.net(xv)  # (B, N, C, S, S, S): all views in one grouped call
        return torch.stack([v.invert(out[:, i]) for i, v in enumerate(self.views)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Ensemble prediction (mean of the views' softmax), ``(B, C, *spatial)``."""
        return torch.softmax(self.view_logits(x).float(), dim=2).mean(0)

    def cotraining_weight(self, step: int) -> float:
        if len(self.views) < 2 or step < self.stage1_steps:
            return 0.0
        return sigmoid_rampup(step, self.rampup_steps, self.lambda_max, start_step=self.stage1_steps)

    @torch.no_grad()
    def mc_view_probs(self, x: torch.Tensor, k: int, dropout: bool = True, precision: str = "32") -> torch.Tensor:
        """K stochastic passes of every view (dropout on, everything else in inference mode).

        Args:
            x: ``(B, 1, S, S, S)``.
            k: passes per view.
            dropout: MC dropout on (off: one deterministic pass, only sensible with ``k=1``).
            precision: ``"bf16"`` runs the network under autocast.

        Returns:
            ``(N, K, B, C, S, S, S)`` softmax probabilities in the common frame.
        """
        from medssl.core.runtime import autocast

        b = x.shape[0]
        was_training = self.net.training
        self.net.eval()
        if dropout:
            enable_mc_dropout(self.net)
        with autocast(x.device, precision):
            logits = self.view_logits(x.repeat(k, 1, 1, 1, 1))
        probs = torch.softmax(logits.float(), dim=2)  # (N, K*B, C, ...)
        self.net.train(was_training)
        return probs.reshape(probs.shape[0], k, b, *probs.shape[2:])

    @torch.no_grad()
    def pseudo_labels(self, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """MC-dropout statistics and fused pseudo-labels for unlabeled patches.

        Args:
            u: ``(B, 1, S, S, S)``.

        Returns:
            ``(pseudo, confidence, uncertainty)``: ``(N, B, C, ...)`` fused pseudo-label
            distributions (view i's from the other views), ``(N, B)`` confidences, and
            ``(N, B, 1, ...)`` each view's uncertainty.
        """
        mean, unc = mc_view_statistics(self.mc_view_probs(u, self.mc_samples), kind=self.uncertainty_kind)
        pseudo = uncertainty_weighted_fusion(mean, unc, floor=self.floor, weighting=self.fusion)
        conf = sample_confidence(pseudo) if self.confidence_weighting else torch.ones(pseudo.shape[:2], device=u.device)
        return pseudo, conf, unc

    @torch.no_grad()
    def predict_window(self, x: torch.Tensor, mc_samples: int = 1, precision: str = "32") -> dict[str, torch.Tensor]:
        """Test-time outputs of one window: every view's MC mean, fused over ALL views with the
        same inverse-uncertainty weights as in training (:func:`~medssl.losses.umct.fuse_all_views`).

        Returns:
            ``probs`` ``(B, C, ...)`` fused; with N > 1 views also ``views`` ``(B, N * C, ...)``.
        """
        n = len(self.views)
        probs = self.mc_view_probs(x, mc_samples, dropout=n > 1 or mc_samples > 1, precision=precision)
        self.net.eval()
        mean, unc = mc_view_statistics(probs, kind=self.uncertainty_kind)
        if n == 1:
            return {"probs": mean[0]}
        fused = fuse_all_views(mean, unc, self.floor, self.fusion)
        views = mean.transpose(0, 1).reshape(x.shape[0], n * mean.shape[2], *mean.shape[3:])
        return {"probs": fused, "views": views}

    # -------------------------------------------------------------------- training
    def training_step(self, batch: dict, batch_idx: int):
        x, y = batch["image"], batch["label"]
        n, b = len(self.views), x.shape[0]
        lam = self.cotraining_weight(self.global_step)
        u = batch.get("u_image")
        if lam > 0 and u is not None:
            pseudo, conf, _ = self.pseudo_labels(u)
            logits = self.view_logits(torch.cat([x, u]))  # labeled + unlabeled in one call
            logits_l, logits_u = logits[:, :b], logits[:, b:]
        else:
            logits_l, logits_u = self.view_logits(x), None
        sup = sum(self.sup_loss(logits_l[i].float(), y) for i in range(n))
        if self.view_reduction == "mean":
            sup = sup / n
        loss = sup
        if logits_u is not None:
            cot = self.cot_loss(logits_u.float(), pseudo, conf)
            loss = sup + lam * cot
            self.log("train/cotrain", cot, batch_size=b)
            self.log("train/confidence", conf.mean(), batch_size=b)
        self.log("train/sup", sup, batch_size=b)
        self.log("train/lambda", lam, batch_size=b)
        self.log("train/loss", loss, prog_bar=True, batch_size=b)
        return loss
