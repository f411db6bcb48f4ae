"""Evaluation protocols for a pretrained backbone: linear probe, weighted kNN, full fine-tuning.

The linear probe and kNN work on precomputed features (one forward pass of the frozen backbone,
done by the caller), so this module does not care how features are produced. Fine-tuning trains
the backbone and a head on in-memory ``uint8`` image tensors.

Model selection: every protocol picks its hyper-parameters (linear: learning rate x weight decay;
kNN: k x temperature) or its epoch (fine-tuning) by **validation AUROC**, the headline MedMNIST
metric, with validation ACC breaking ties and standing in where AUROC is undefined (a validation
split with one class); on a full tie the first candidate in grid order (or the earliest epoch) is
kept. The test split is only predicted with the selected candidate; nothing is retrained on
train + val.

Outputs are probabilities in the layout :func:`medssl.eval.metrics.classification_metrics`
expects: ``(N, C)`` softmax probabilities for binary (``C = 2``) and multi-class tasks, ``(N, L)``
sigmoid probabilities for multi-label tasks.
"""

from __future__ import annotations

import copy
import math
from contextlib import nullcontext
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medssl.core.runtime import warn_bf16_conv3d_on_cpu
from medssl.errors import TrainingDiverged
from medssl.eval.metrics import classification_metrics, normalize_task

__all__ = ["linear_probe", "knn_classify", "knn_probe", "fine_tune"]

ArrayLike = np.ndarray | torch.Tensor


def _feats(x: ArrayLike, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(x.shape)}")
    return x.to(device=device, dtype=torch.float32)


def _labels(y: ArrayLike, task: str) -> torch.Tensor:
    """``(N,)`` long class indices, or ``(N, L)`` float targets for multi-label."""
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y)
    if task == "multilabel":
        if y.ndim != 2:
            raise ValueError(f"multi-label targets must have shape (N, L), got {tuple(y.shape)}")
        return y.float()
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"single-label targets must have shape (N,) or (N, 1), got {tuple(y.shape)}")
    return y.long()


def _num_outputs(task: str, num_classes: int | None, *ys: torch.Tensor) -> int:
    if task == "multilabel":
        return ys[0].shape[1]
    if task == "binary":
        return 2
    return num_classes if num_classes is not None else int(max(int(y.max()) for y in ys)) + 1


def _to_probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    logits = logits.float()
    if task == "multilabel":
        return torch.sigmoid(logits)
    if task == "binary" and logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return logits.softmax(1)


def _loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    logits = logits.float()
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    if task == "binary" and logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


def _selection_key(metrics: dict[str, float]) -> tuple[float, float]:
    """Validation AUROC first (``nan`` ranks last), ACC second."""
    auroc = metrics["auroc"]
    return (-math.inf if math.isnan(auroc) else auroc, metrics["acc"])


def _rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def _batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches of one epoch; shuffled when a generator is given. A trailing batch of one
    sample is dropped (batch norm cannot train on it) unless it is the only batch."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


# ---------------------------------------------------------------- linear probe


def _train_linear(x: torch.Tensor, y: torch.Tensor, out: int, task: str, lr: float, wd: float, epochs: int,
                  batch_size: int, seed: int) -> nn.Linear:
    with torch.random.fork_rng(devices=_rng_devices(x.device)):
        torch.manual_seed(seed)
        layer = nn.Linear(x.shape[1], out).to(x.device)
    opt = torch.optim.AdamW([{"params": [layer.weight], "weight_decay": wd},
                             {"params": [layer.bias], "weight_decay": 0.0}], lr=lr)
    n = len(x)
    full = batch_size >= n
    generator = None if full else torch.Generator().manual_seed(seed)
    steps = epochs * len(_batches(n, batch_size, None))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    for _ in range(epochs):
        for idx in [slice(None)] if full else _batches(n, batch_size, generator):
            idx = idx if full else idx.to(x.device)
            loss = _loss(layer(x[idx]), y[idx], task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return layer


def linear_probe(
    train_feats: ArrayLike,
    train_y: ArrayLike,
    val_feats: ArrayLike,
    val_y: ArrayLike,
    test_feats: ArrayLike,
    task: str,
    lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
    wds: Sequence[float] = (0.0, 1e-3, 1e-1),
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, dict, float]:
    """Linear probe on frozen features, learning rate x weight decay chosen on validation AUROC.

    Features are standardised with the training split's mean and standard deviation (features
    that are constant on train are only centred). For every grid point a fresh ``nn.Linear`` is
    trained with AdamW (weight decay on the weight only) and a cosine schedule to zero over
    ``epochs`` epochs of shuffled mini-batches (full batch when ``batch_size >= N``), with
    cross-entropy (binary and multi-class: ``C`` logits) or per-label BCE (multi-label). The grid
    point with the best validation AUROC (see the module doc for ties) predicts the test split.

    Args:
        train_feats: ``(N_train, D)`` features.
        train_y: ``(N_train,)`` / ``(N_train, 1)`` class labels or ``(N_train, L)`` 0/1 targets.
        val_feats: ``(N_val, D)`` features.
        val_y: validation labels, as ``train_y``.
        test_feats: ``(N_test, D)`` features.
        task: a name in :data:`medssl.eval.metrics.TASKS`.
        lrs: learning rates to try.
        wds: AdamW weight decays to try.
        epochs: epochs per grid point.
        batch_size: mini-batch size.
        seed: seeds the layer initialisation and the batch order (the same for every grid point).
        num_classes: number of classes for multi-class tasks (default: largest train/val label + 1).
        device: where to train.

    Returns:
        ``(test_probs, best_params, val_auroc)``: ``(N_test, C)`` or ``(N_test, L)`` probabilities,
        ``{"lr", "wd"}`` of the selected point, and its validation AUROC (``nan`` if undefined).
    """
    task, device = normalize_task(task), torch.device(device)
    xtr, xva, xte = (_feats(f, device) for f in (train_feats, val_feats, test_feats))
    if not xtr.shape[1] == xva.shape[1] == xte.shape[1]:
        raise ValueError(f"feature sizes differ: {xtr.shape[1]}, {xva.shape[1]}, {xte.shape[1]}")
    ytr = _labels(train_y, task).to(device)
    out = _num_outputs(task, num_classes, ytr, _labels(val_y, task))
    mean, std = xtr.mean(0), xtr.std(0, unbiased=False)
    std = torch.where(std > 1e-6, std, torch.ones_like(std))
    xtr, xva, xte = ((x - mean) / std for x in (xtr, xva, xte))
    best = None
    for lr in lrs:
        for wd in wds:
            layer = _train_linear(xtr, ytr, out, task, lr, wd, epochs, batch_size, seed)
            with torch.no_grad():
                metrics = classification_metrics(val_y, _to_probs(layer(xva), task).cpu().numpy(), task)
            if best is None or _selection_key(metrics) > _selection_key(best[2]):
                best = (layer, {"lr": lr, "wd": wd}, metrics)
    if best is None:
        raise ValueError("empty hyper-parameter grid")
    layer, params, metrics = best
    with torch.no_grad():
        test_probs = _to_probs(layer(xte), task).cpu().numpy()
    return test_probs, params, metrics["auroc"]


# ---------------------------------------------------------------- kNN


def _neighbours(train: torch.Tensor, query: torch.Tensor, k: int, chunk_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine similarities ``(Q, k)`` (descending) and indices of the ``k`` nearest training rows."""
    train = F.normalize(train, dim=1)
    sims, idx = [], []
    for q in F.normalize(query, dim=1).split(chunk_size):
        s, i = (q @ train.T).topk(k, dim=1)
        sims.append(s)
        idx.append(i)
    return torch.cat(sims), torch.cat(idx)


def _vote(sims: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor, k: int, temperature: float) -> torch.Tensor:
    """Weighted vote ``sum_i w_i t_i / sum_i w_i`` with ``w_i = exp(s_i / T)`` over the first ``k``."""
    s = sims[:, :k]
    w = torch.exp((s - s[:, :1]) / temperature)  # shifting by the row maximum cancels in the ratio
    return (w.unsqueeze(2) * targets[idx[:, :k]]).sum(1) / w.sum(1, keepdim=True)


def _vote_targets(y: torch.Tensor, num_classes: int) -> torch.Tensor:
    return y.float() if y.ndim == 2 else F.one_hot(y, num_classes).float()


def knn_classify(
    train_feats: ArrayLike,
    train_y: ArrayLike,
    query_feats: ArrayLike,
    k: int,
    temperature: float,
    num_classes: int,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Weighted k-nearest-neighbour class probabilities on L2-normalised features.

    The kNN monitor of InstDisc (Wu et al., "Unsupervised Feature Learning via Non-Parametric
    Instance Discrimination", CVPR 2018, Sec. 3.4 / Eq. 8) as used by DINO (Caron et al. 2021,
    ``eval_knn.py``): with cosine similarities ``s_i`` of the query to its ``k`` nearest training
    samples and weights ``w_i = exp(s_i / T)``, the probability of class ``c`` is
    ``sum_i w_i [y_i = c] / sum_i w_i``. DINO stops at the unnormalised vote (it only needs the
    argmax); we normalise so the result is a probability for AUROC. For multi-label targets the
    vote is the weighted mean of the neighbours' 0/1 label vectors, one probability per label.

    Args:
        train_feats: ``(N, D)`` training features (normalised here).
        train_y: ``(N,)`` / ``(N, 1)`` class labels, or ``(N, L)`` 0/1 targets (then multi-label,
            and ``num_classes`` must equal ``L``).
        query_feats: ``(Q, D)`` features to classify.
        k: neighbours (capped by ``N``).
        temperature: ``T`` in ``exp(s / T)``.
        num_classes: ``C`` (number of classes; 2 for binary tasks).
        chunk_size: queries per similarity block, to bound memory at ``chunk_size x N`` floats.
        device: where to compute the similarities.

    Returns:
        ``(Q, C)`` probabilities (rows sum to 1 for single-label targets).
    """
    device = torch.device(device)
    xtr = _feats(train_feats, device)
    y = torch.as_tensor(np.asarray(train_y) if not isinstance(train_y, torch.Tensor) else train_y)
    y = _labels(y, "multilabel" if y.ndim == 2 and y.shape[1] > 1 else "multiclass")
    if y.ndim == 2 and y.shape[1] != num_classes:
        raise ValueError(f"multi-label targets have {y.shape[1]} labels but num_classes is {num_classes}")
    k = min(k, len(xtr))
    sims, idx = _neighbours(xtr, _feats(query_feats, device), k, chunk_size)
    return _vote(sims, idx, _vote_targets(y.to(device), num_classes), k, temperature).cpu().numpy()


def knn_probe(
    train_feats: ArrayLike,
    train_y: ArrayLike,
    val_feats: ArrayLike,
    val_y: ArrayLike,
    test_feats: ArrayLike,
    task: str,
    ks: Sequence[int] = (10, 20, 50, 100),
    temps: Sequence[float] = (0.07, 0.1, 0.5),
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, dict, float]:
    """Weighted kNN (:func:`knn_classify`) with k x temperature chosen on validation AUROC.

    ``ks`` are capped by the number of training samples and deduplicated, so a 1 % subset of a
    small dataset still gets a valid grid. Neighbours are searched once for the largest ``k``.

    Args:
        train_feats: ``(N_train, D)`` features.
        train_y: training labels (see :func:`knn_classify`).
        val_feats: ``(N_val, D)`` features.
        val_y: validation labels.
        test_feats: ``(N_test, D)`` features.
        task: a name in :data:`medssl.eval.metrics.TASKS`.
        ks: numbers of neighbours to try.
        temps: temperatures to try.
        num_classes: classes of a multi-class task (default: largest train/val label + 1).
        chunk_size: see :func:`knn_classify`.
        device: where to compute the similarities.

    Returns:
        ``(test_probs, {"k", "temperature"}, val_auroc)``.
    """
    task, device = normalize_task(task), torch.device(device)
    xtr, xva, xte = (_feats(f, device) for f in (train_feats, val_feats, test_feats))
    ytr = _labels(train_y, task).to(device)
    targets = _vote_targets(ytr, _num_outputs(task, num_classes, ytr, _labels(val_y, task)))
    ks = sorted({min(k, len(xtr)) for k in ks})
    if not ks or not temps:
        raise ValueError("empty hyper-parameter grid")
    sims, idx = _neighbours(xtr, xva, ks[-1], chunk_size)
    best = None
    for k in ks:
        for t in temps:
            metrics = classification_metrics(val_y, _vote(sims, idx, targets, k, t).cpu().numpy(), task)
            if best is None or _selection_key(metrics) > _selection_key(best[1]):
                best = ({"k": k, "temperature": t}, metrics)
    params, metrics = best
    sims, idx = _neighbours(xtr, xte, params["k"], chunk_size)
    return _vote(sims, idx, targets, params["k"], params["temperature"]).cpu().numpy(), params, metrics["auroc"]


# ---------------------------------------------------------------- fine-tuning

PRECISIONS = {"32": None, "32-true": None, "bf16": torch.bfloat16, "bf16-mixed": torch.bfloat16}


def _images(x: ArrayLike) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim < 3:
        raise ValueError(f"images must have shape (N, C, *spatial), got {tuple(x.shape)}")
    return x


def _as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()


def _predict(model: nn.Module, images: torch.Tensor, task: str, batch_size: int, device: torch.device,
             autocast) -> np.ndarray:
    model.eval()
    out = []
    with torch.no_grad(), autocast():
        for idx in torch.arange(len(images)).split(batch_size):
            out.append(_to_probs(model(_as_float(images[idx].to(device))), task).cpu())
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
            :func:`medssl.eval.metrics.classification_metrics`.
        val: ``(images, labels)`` for model selection.
        test: test images, or ``(images, labels)`` (labels are ignored).
        task: a name in :data:`medssl.eval.metrics.TASKS`.
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

    Returns:
        ``(test_probs, history)``: probabilities as :func:`linear_probe` returns them, and
        ``{"epochs": [{"epoch", "train_loss", "lr", "val_acc", "val_balanced_acc", "val_auroc"}],
        "best_epoch": int, "best_val": {"acc", "balanced_acc", "auroc"}}`` (epochs count from 1).
    """
    from tqdm.auto import tqdm

    task = normalize_task(task)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if device is None:
        device = next(iter(backbone.parameters()), torch.empty(0)).device
    device = torch.device(device)
    dtype = PRECISIONS[precision]

    def autocast():
        return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()

    x_train, y_train = _images(train[0]), _labels(train[1], task)
    warn_bf16_conv3d_on_cpu(device, x_train.ndim - 2, precision)
    x_val, y_val = _images(val[0]), np.asarray(val[1])
    x_test = _images(test[0] if isinstance(test, (tuple, list)) else test)
    if len(x_train) != len(y_train):
        raise ValueError(f"{len(x_train)} training images but {len(y_train)} labels")
    model = nn.Sequential(backbone, head).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps = epochs * len(_batches(len(x_train), batch_size, None))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    generator = torch.Generator().manual_seed(seed)
    history: dict = {"epochs": [], "best_epoch": 0, "best_val": None}
    best_state = None
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        bar = tqdm(range(1, epochs + 1), desc="fine-tune", disable=not progress, leave=False)
        for epoch in bar:
            model.train()
            losses, epoch_lr = [], sched.get_last_lr()[0]
            for idx in _batches(len(x_train), batch_size, generator):
                x = _as_float(x_train[idx].to(device))
                if augment is not None:
                    x = augment(x)
                with autocast():
                    loss = _loss(model(x), y_train[idx].to(device), task)
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
            val_probs = _predict(model, x_val, task, 2 * batch_size, device, autocast)
            metrics = classification_metrics(y_val, val_probs, task)
            history["epochs"].append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else math.nan,
                                      "lr": epoch_lr, **{f"val_{k}": v for k, v in metrics.items()}})
            if best_state is None or _selection_key(metrics) > _selection_key(history["best_val"]):
                best_state = copy.deepcopy(model.state_dict())
                history["best_epoch"], history["best_val"] = epoch, metrics
            bar.set_postfix(loss=history["epochs"][-1]["train_loss"], val_auroc=metrics["auroc"])
    if best_state is not None:
        model.load_state_dict(best_state)
    return _predict(model, x_test, task, 2 * batch_size, device, autocast), history
