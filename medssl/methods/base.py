"""The small shared base of segmentation methods: optimiser, schedule and validation.

A method subclasses :class:`SegmentationMethod` and overrides :meth:`training_step` (and
:meth:`predict_logits` if its inference differs, e.g. a multi-view ensemble). Everything else
(sliding-window validation, per-class Dice, DDP gathering, LR schedule, RNG state in the
checkpoint) lives here once. Constructors take plain keyword arguments; only the engine knows
about config objects.
"""

from __future__ import annotations

from typing import Sequence

import pytorch_lightning as pl
import torch


def lr_lambda(kind: str, max_steps: int, warmup_steps: int = 0):
    """``LambdaLR`` factor per step: :func:`medssl.core.schedules.lr_factor`."""
    from functools import partial

    from medssl.core.schedules import lr_factor

    return partial(lr_factor, total_steps=max_steps, warmup_steps=warmup_steps, kind=kind)


class MedsslModule(pl.LightningModule):
    """What every medssl LightningModule shares: optimiser + LR schedule and checkpoint state.

    Args:
        optimizer: ``"adamw"`` or ``"sgd"``; lr, weight_decay: its settings.
        scheduler: ``"cosine"``, ``"poly"`` or ``"constant"``; warmup_steps, max_steps: its span.
        extra_state: JSON-able dict stored in every checkpoint under ``"medssl"`` (the resolved
            config, so that inference can rebuild the model).
    """

    def __init__(
        self,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        scheduler: str = "cosine",
        warmup_steps: int = 0,
        max_steps: int = 1000,
        extra_state: dict | None = None,
    ):
        super().__init__()
        self.opt_cfg = dict(name=optimizer, lr=lr, weight_decay=weight_decay)
        self.sched_cfg = dict(kind=scheduler, warmup_steps=warmup_steps, max_steps=max_steps)
        self.extra_state = dict(extra_state or {})

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        if self.opt_cfg["name"] == "sgd":
            opt = torch.optim.SGD(params, lr=self.opt_cfg["lr"], momentum=0.99, nesterov=True,
                                  weight_decay=self.opt_cfg["weight_decay"])
        else:
            opt = torch.optim.AdamW(params, lr=self.opt_cfg["lr"], weight_decay=self.opt_cfg["weight_decay"])
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(**self.sched_cfg))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def checkpoint_state(self) -> dict:
        """JSON-able state stored under ``checkpoint["medssl"]`` (subclasses add to it)."""
        return dict(self.extra_state)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Plain tensors and JSON types only, so the file loads with torch.load(weights_only=True).
        checkpoint["medssl"] = {**self.checkpoint_state(), "torch_rng_state": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("medssl", {})
        if "torch_rng_state" in state:  # dropout etc. continue exactly as in an uninterrupted run
            torch.set_rng_state(state["torch_rng_state"])


class SegmentationMethod(MedsslModule):
    """Base of the segmentation methods.

    Args:
        num_classes: output classes including background.
        class_names: names of the classes (index = label value).
        roi_size: sliding-window ROI for validation (usually the training patch size).
        sw_batch_size: windows per forward pass in validation.
        overlap: sliding-window overlap.
        **kwargs: optimiser, schedule and checkpoint settings, see :class:`MedsslModule`.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str],
        roi_size: Sequence[int],
        sw_batch_size: int = 2,
        overlap: float = 0.25,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.class_names = list(class_names)
        self.roi_size = tuple(int(r) for r in roi_size)
        self.sw_batch_size = sw_batch_size
        self.overlap = overlap
        self._val_dice: list[torch.Tensor] = []
        self.last_val_metrics: dict = {}

    # ------------------------------------------------------------------ inference
    def predict_logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, C, *spatial)`` for a whole volume ``(B, 1, *spatial)`` by sliding window."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(
            image, self.roi_size, self.sw_batch_size, self, overlap=self.overlap, mode="gaussian"
        )

    # ----------------------------------------------------------------- validation
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        import warnings

        from monai.metrics import compute_dice, compute_hausdorff_distance
        from monai.networks.utils import one_hot

        logits = self.predict_logits(batch["image"]).float()
        pred = one_hot(logits.argmax(1, keepdim=True), self.num_classes)
        gt = one_hot(batch["label"], self.num_classes)
        # (B, C-1), NaN where a class is absent from both
        dice = compute_dice(pred, gt, include_background=False, ignore_empty=True)
        with warnings.catch_warnings():  # MONAI warns for every empty class; NaN marks those
            warnings.simplefilter("ignore")
            spacing = batch["spacing"][0].tolist() if "spacing" in batch else None
            hd = compute_hausdorff_distance(pred, gt, include_background=False, percentile=95, spacing=spacing)
        hd = torch.where(torch.isfinite(hd), hd, torch.full_like(hd, float("nan")))
        self._val_dice.append(torch.cat([dice, hd], 1).detach().float().cpu())

    def on_validation_epoch_start(self) -> None:
        self._val_dice = []

    def on_validation_epoch_end(self) -> None:
        width = 2 * (self.num_classes - 1)  # Dice then HD95 per foreground class
        local = torch.cat(self._val_dice) if self._val_dice else torch.zeros(0, width)
        if self.trainer.world_size > 1:
            # ranks hold different numbers of cases: pad with NaN rows, gather, drop padding.
            n = torch.tensor([local.shape[0]], device=self.device)
            max_n = int(self.all_gather(n).max())
            pad = torch.full((max_n - local.shape[0], local.shape[1]), float("nan"))
            gathered = self.all_gather(torch.cat([local, pad]).to(self.device)).reshape(-1, local.shape[1]).cpu()
            local = gathered[~torch.isnan(gathered).all(1)]
        per_class = torch.nanmean(local, 0) if local.numel() else torch.full((width,), float("nan"))
        dice, hd95 = per_class[: self.num_classes - 1], per_class[self.num_classes - 1:]
        metrics = {f"val/dice_{name}": float(v) for name, v in zip(self.class_names[1:], dice)}
        metrics["val/dice_mean"] = float(torch.nanmean(dice))
        metrics.update({f"val/hd95_{name}": float(v) for name, v in zip(self.class_names[1:], hd95)})
        metrics["val/hd95_mean"] = float(torch.nanmean(hd95))
        self.last_val_metrics = {"step": int(self.global_step), "n_cases": int(local.shape[0]), **metrics}
        self.log_dict(metrics, prog_bar=False, sync_dist=False, rank_zero_only=True)
        self.log("val_dice", metrics["val/dice_mean"], prog_bar=True, rank_zero_only=True)

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        return {**self.extra_state, "class_names": self.class_names}
