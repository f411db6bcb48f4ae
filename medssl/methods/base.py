"""The small shared base of segmentation methods: optimiser, schedule, evaluation, declared needs.

A method subclasses :class:`SegmentationMethod` (or :class:`MedsslModule` for a pretraining
stage) and overrides :meth:`training_step`, :meth:`from_config` and, if its inference differs
(a multi-view ensemble, MC dropout), :meth:`predict_window`. What a method needs from the engine
is declared on the class and read by the engine, which never branches on a method's name
(GUIDE item 14):

* ``is_pretraining``: a self-supervised stage (no labels, no Dice validation, checkpoints every
  ``val_every`` steps);
* ``uses_unlabeled``: training batches also carry an unlabeled patch (``u_image``);
* ``data_kind``: which batches it trains on (``"patches"``: labeled random patches;
  ``"partitions"``: one image per partition per volume, see :mod:`medssl.data.partitions`).

Everything else (sliding-window validation and the final test through
:class:`~medssl.inference.predictor.Predictor`, per-class Dice/HD95, DDP gathering, LR
schedule, RNG state in the checkpoint) lives here once. Constructors take plain keyword
arguments; :meth:`from_config` is the one place a method meets the typed config.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import pytorch_lightning as pl
import torch

if TYPE_CHECKING:  # configs are read by the engines and by from_config only
    from medssl.config import RunConfig
    from medssl.data.dataset import DatasetSpec


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

    #: a self-supervised stage: no labels, no validation, ``last.ckpt`` is the result
    is_pretraining: bool = False
    #: batches it trains on, see the module docstring
    data_kind: str = "patches"

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

    @property
    def in_channels(self) -> int | None:
        """Input channels of the dataset it was built for (``None`` when unknown)."""
        names = (self.extra_state.get("dataset") or {}).get("channel_names")
        return len(names) if names else None

    @property
    def uses_unlabeled(self) -> bool:
        """Whether training batches must carry an unlabeled patch (``u_image``)."""
        return False

    @classmethod
    def from_config(cls, cfg: RunConfig, spec: DatasetSpec) -> MedsslModule:
        """The method, with its network, from a typed run config and the dataset's spec."""
        raise NotImplementedError(f"{cls.__name__} does not define from_config")

    @staticmethod
    def optim_kwargs(cfg: RunConfig, spec: DatasetSpec) -> dict:
        """Optimiser, schedule and checkpoint keyword arguments every method takes."""
        import json

        return dict(
            optimizer=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
            scheduler=cfg.optim.scheduler, warmup_steps=cfg.optim.warmup_steps, max_steps=cfg.trainer.max_steps,
            extra_state={"config": json.loads(json.dumps(cfg.model_dump(mode="json"))), "dataset": spec.to_json()},
        )

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
        self._eval_rows: list[torch.Tensor] = []
        self.last_val_metrics: dict = {}
        self.test_metrics: dict = {}

    @staticmethod
    def seg_kwargs(cfg: RunConfig, spec: DatasetSpec) -> dict:
        """The keyword arguments of :class:`SegmentationMethod` plus :meth:`optim_kwargs`."""
        return dict(
            num_classes=spec.num_classes, class_names=spec.class_names,
            roi_size=cfg.val.roi_size or cfg.data.patch_size, sw_batch_size=cfg.val.sw_batch_size,
            overlap=cfg.val.overlap, **MedsslModule.optim_kwargs(cfg, spec),
        )

    # ------------------------------------------------------------------ inference
    def predict_window(self, x: torch.Tensor, mc_samples: int = 1, precision: str = "32") -> dict[str, torch.Tensor]:
        """Outputs of one sliding window for the :class:`~medssl.inference.predictor.Predictor`.

        Args:
            x: ``(B, 1, *roi)`` normalised image windows.
            mc_samples: stochastic (MC-dropout) passes; 1 = one deterministic pass.
            precision: ``"bf16"`` runs the network under autocast.

        Returns:
            ``{"probs": (B, C, *roi)}`` class probabilities; methods with several views or MC
            passes add ``"views"`` ``(B, N * C, *roi)`` and ``"uncertainty"`` ``(B, 1, *roi)``.
        """
        from medssl.core.runtime import autocast

        with autocast(x.device, precision):
            logits = self(x)
        return {"probs": torch.softmax(logits.float(), dim=1)}

    def predictor(self):
        """A :class:`~medssl.inference.predictor.Predictor` around this model's forward."""
        from medssl.inference.predictor import Predictor

        return Predictor(self, roi_size=self.roi_size, sw_batch_size=self.sw_batch_size, overlap=self.overlap)

    # ------------------------------------------------- validation and final test
    def _evaluate_batch(self, batch: dict) -> None:
        from medssl.eval.seg_metrics import dice_hd95

        scores = self.predictor().scores(batch["image"]).float()
        spacing = batch["spacing"][0].tolist() if "spacing" in batch else None
        if "grid_map" in batch:  # a planned grid: probabilities back to the scan's own grid, then the argmax
            pred = _native_argmax(torch.softmax(scores, 1)[0], batch["grid"][0], batch["grid_map"][0])[None, None]
        else:
            pred = scores.argmax(1, keepdim=True)
        rows = dice_hd95(pred.to(batch["label"].device), batch["label"], self.num_classes, spacing)
        self._eval_rows.append(rows.detach().float().cpu())

    def _gather_rows(self) -> torch.Tensor:
        width = 2 * (self.num_classes - 1)  # Dice then HD95 per foreground class
        local = torch.cat(self._eval_rows) if self._eval_rows else torch.zeros(0, width)
        if self.trainer.world_size > 1:
            # ranks hold different numbers of cases: pad with NaN rows, gather, drop padding.
            n = torch.tensor([local.shape[0]], device=self.device)
            max_n = int(self.all_gather(n).max())
            pad = torch.full((max_n - local.shape[0], local.shape[1]), float("nan"))
            gathered = self.all_gather(torch.cat([local, pad]).to(self.device)).reshape(-1, local.shape[1]).cpu()
            local = gathered[~torch.isnan(gathered).all(1)]
        return local

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def test_step(self, batch: dict, batch_idx: int) -> None:
        self._evaluate_batch(batch)

    def on_validation_epoch_start(self) -> None:
        self._eval_rows = []

    def on_test_epoch_start(self) -> None:
        self._eval_rows = []

    def on_validation_epoch_end(self) -> None:
        from medssl.eval.seg_metrics import summarize

        rows = self._gather_rows()
        metrics = summarize(rows, self.class_names, "val")
        self.last_val_metrics = {"step": int(self.global_step), "n_cases": int(rows.shape[0]), **metrics}
        self.log_dict(metrics, prog_bar=False, sync_dist=False, rank_zero_only=True)
        self.log("val_dice", metrics["val/dice_mean"], prog_bar=True, rank_zero_only=True)

    def on_test_epoch_end(self) -> None:
        from medssl.eval.seg_metrics import summarize

        rows = self._gather_rows()
        self.test_metrics = {"n_cases": int(rows.shape[0]), **summarize(rows, self.class_names, "test")}

    # ---------------------------------------------------------------- checkpoints
    def checkpoint_state(self) -> dict:
        return {**self.extra_state, "class_names": self.class_names}


def _native_argmax(probs: torch.Tensor, grid_json: str, grid_map_json: str) -> torch.Tensor:
    """The label map on a scan's own grid from class probabilities ``(C, ...)`` on a planned grid."""
    import json

    import numpy as np

    from medssl.data.resample import GridMap, from_grid
    from medssl.data.volume import Volume

    geom = json.loads(grid_json)
    grid = Volume.from_geometry(np.zeros(geom["shape"], np.uint8), geom)
    back = from_grid(probs.detach().cpu().numpy(), grid, GridMap(**json.loads(grid_map_json)), order=1)
    return torch.from_numpy(back.argmax(0).astype(np.int64))
