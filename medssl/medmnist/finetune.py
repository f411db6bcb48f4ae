"""Full fine-tuning of a backbone and a head on in-memory ``uint8`` images, keeping the epoch
with the best validation AUROC (the selection rule of :mod:`medssl.medmnist.protocols`; the test
split is only predicted with the selected epoch's weights)."""

from __future__ import annotations

import copy
import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from medssl.core.runtime import autocast, warn_bf16_conv3d_on_cpu
from medssl.errors import TrainingDiverged
from medssl.medmnist.metrics import classification_metrics, normalize_task
from medssl.medmnist.protocols import (
    ArrayLike,
    as_targets,
    epoch_batches,
    rng_devices,
    selection_key,
    task_loss,
    to_probs,
)

__all__ = ["PRECISIONS", "fine_tune"]

#: accepted precision names -> :func:`medssl.core.runtime.autocast`'s (Lightning's names too)
PRECISIONS = {"32": "32", "32-true": "32", "bf16": "bf16", "bf16-mixed": "bf16"}


def _images(x: ArrayLike) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim < 3:
        raise ValueError(f"images must have shape (N, C, *spatial), got {tuple(x.shape)}")
    return x


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _predict(model: nn.Module, images: torch.Tensor, task: str, batch_size: int, device: torch.device,
             precision: str) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad(), autocast(device, precision):
        for idx in torch.arange(len(images)).split(batch_size):
            out.append(to_probs(model(_as_float(images[idx].to(device))), task).cpu())
    return torch.cat(out).numpy()


def fine_tune(
    backbone: nn.Module,
    head: nn.Module,
    train: tuple[ArrayLike, ArrayLike],
    val: tuple[ArrayLike, ArrayLike],
    test: ArrayLike | tuple[ArrayLike, ArrayLike],
    task: str,
    epochs: int = 10,
    lr: float = 1e-3,
    batch_size: int = 128,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    precision: str = "32",
    seed: int = 0,
    weight_decay: float = 0.01,
    device: str | torch.device | None = None,
    progress: bool = True,
    select_on: str = "auroc",
    on_epoch: Callable[[dict], None] | None = None,
) -> tuple[np.ndarray, dict]:
    """Full fine-tuning of ``head(backbone(x))``, keeping the epoch with the best validation AUROC.

    AdamW over all parameters with a per-step cosine schedule to zero. Each batch is made by
    indexing the in-memory image tensor (no ``DataLoader``, no per-sample work): ``uint8`` images
    are scaled to [0, 1] (float images are used as they are), moved to ``device``, and, for
    training batches only, passed through ``augment`` (a batch-level callable, ``(B, C, *spatial)``
    in and out, which may draw from torch's global generator: that generator is seeded with
    ``seed`` for the duration of the call and restored afterwards). After every epoch the
    validation split is scored and the best state (validation AUROC, ties and undefined AUROC by
    ACC, earliest epoch on a full tie) is copied in memory; at the end it is loaded back into
    ``backbone`` and ``head``, which are trained in place, and used to predict the test split.

    Args:
        backbone: maps ``(B, C, *spatial)`` images to ``(B, D)`` features (e.g. a pretrained
            encoder with pooling).
        head: maps ``(B, D)`` to ``(B, C)`` logits (binary: ``C = 2``, or 1 logit trained with
            BCE), or ``(B, L)`` logits for multi-label.
        train: ``(images, labels)``: ``(N, C, *spatial)`` ``uint8`` (or float) images, labels as in
            :func:`medssl.medmnist.metrics.classification_metrics`.
        val: ``(images, labels)`` for model selection.
        test: test images, or ``(images, labels)`` (labels are ignored).
        task: a name in :data:`medssl.medmnist.metrics.TASKS`.
        epochs: training epochs.
        lr: peak AdamW learning rate.
        batch_size: training batch size (evaluation uses twice this).
        augment: optional batch augmentation, applied to training batches on ``device``.
        precision: ``"32"`` or ``"bf16"`` (bfloat16 autocast, also on CPU; losses in float32).
        seed: seeds batch order, dropout and ``augment`` (not the modules' initialisation, which
            the caller owns).
        weight_decay: AdamW weight decay.
        device: where to train (default: where ``backbone``'s parameters are).
        progress: show a tqdm bar over epochs.
        select_on: the validation metric that picks the epoch, ``"auroc"`` or ``"acc"``
            (:func:`~medssl.medmnist.protocols.selection_key`).
        on_epoch: called after every epoch with that epoch's history entry (progress lines).

    Returns:
        ``(test_probs, history)``: probabilities as :func:`medssl.medmnist.protocols.linear_probe` returns them, and
        ``{"epochs": [{"epoch", "train_loss", "lr", "val_acc", "val_balanced_acc", "val_auroc"}],
        "best_epoch": int, "best_val": {"acc", "balanced_acc", "auroc"}}`` (epochs count from 1).
    """
    from tqdm.auto import tqdm

    task = normalize_task(task)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    precision = PRECISIONS[precision]
    if device is None:
        device = next(iter(backbone.parameters()), torch.empty(0)).device
    device = torch.device(device)
    x_train, y_train = _images(train[0]), as_targets(train[1], task)
    warn_bf16_conv3d_on_cpu(device, x_train.ndim - 2, precision)
    x_val, y_val = _images(val[0]), np.asarray(val[1])
    x_test = _images(test[0] if isinstance(test, (tuple, list)) else test)
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} training images but {len(y_train)} labels")
    model = nn.Sequential(backbone, head).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * len(epoch_batches(len(x_train), batch_size, None))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    history: dict = {"epochs": [], "best_epoch": 0, "best_val": None}
    best_state = None
    with torch.random.fork_rng(devices=rng_devices(device)):
        torch.manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc="fine-tune", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            losses, epoch_lr = [], sched.get_last_lr()[0]
            for idx in epoch_batches(len(x_train), batch_size, generator):
                x = _as_float(x_train[idx].to(device))
                if augment is not None:
                    x = augment(x)
                with autocast(device, precision):
                    loss = task_loss(model(x), y_train[idx].to(device), task)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                if not math.isfinite(losses[-1]):
                    raise TrainingDiverged(
                        f"fine-tuning loss is {losses[-1]} at epoch {epoch}, step {len(losses)}: lower the learning "
                        f"rate (now {lr:g}) or use precision '32' (bf16 Conv3d backward on CPU can return NaN)"
                    )
            val_probs = _predict(model, x_val, task, 2 * batch_size, device, precision)
            metrics = classification_metrics(y_val, val_probs, task)
            history["epochs"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                                      "lr": epoch_lr, **{f"val_{k}": v for k, v in metrics.items()}})
            if best_state is None or selection_key(metrics, select_on) > selection_key(history["best_val"], select_on):
                best_state = copy.deepcopy(model.state_dict())
                history["best_epoch"], history["best_val"] = epoch, metrics
            bar.set_postfix(loss=history["epochs"][-1]["train_loss"], val_auroc=metrics["auroc"])
            if on_epoch is not None:
                on_epoch({**history["epochs"][-1], "epochs": epochs})
    if best_state is not None:
        model.load_state_dict(best_state)
    return _predict(model, x_test, task, 2 * batch_size, device, precision), history
