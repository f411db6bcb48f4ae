"""Evaluation protocols for a pretrained backbone: linear probe and weighted kNN on frozen
features; the selection rule and the helpers they share with fine-tuning
(:mod:`medssl.medmnist.finetune`).

The linear probe and kNN work on precomputed features (one forward pass of the frozen backbone,
done by the caller), so this module does not care how features are produced. Fine-tuning trains
the backbone and a head on in-memory ``uint8`` image tensors.

Model selection: every protocol picks its hyper-parameters (linear: learning rate x weight decay;
kNN: k x temperature) or its epoch (fine-tuning) by **validation AUROC**, the headline MedMNIST
metric, with validation ACC breaking ties and standing in where AUROC is undefined (a validation
split with one class); ``select_on="acc"`` swaps the two (the Bundele et al. benchmark selects its
linear probe on validation accuracy). On a full tie the first candidate in grid order (or the
earliest epoch) is kept. The test split is only predicted with the selected candidate; nothing is
retrained on train + val.

kNN with few labels (:func:`knn_k_grid`, :func:`knn_probe`): with ``k`` equal to the number ``N``
of labeled samples every query has the same neighbours (the whole labeled set), so the plain vote
is the class frequencies reweighted by similarity, and at a 1 % subset (BreastMNIST: 4 benign and
1 malignant image) it predicts the majority class for everything. Two fixes, both stated in the
record's ``params``: ``k`` stays below ``N`` (configured ``ks >= N`` are dropped; if none is left,
the odd numbers 1, 3, 5, 7, 9 below ``N``), and the vote is class-balanced by default (each
neighbour's weight divided by its class's count in the labeled set, so every class brings the same
prior mass: the prior correction of a kernel density classifier; DINO's plain vote is
``vote="plain"``). For a binary task the balanced and the plain vote rank the test samples the same
way (the AUROC is unchanged); the predicted class, and so ACC, is what changes.

:data:`PROTOCOL_VERSION` numbers the behaviour of each protocol's code; it is part of the results'
resume key (:mod:`medssl.medmnist.plan`), so a change in this file that changes results is bumped
there and never reuses stale records.

The linear probe and kNN take a :class:`ProbeData`: train / val features with labels and test
features WITHOUT labels, so the test split cannot reach a selection by construction (a test in
``tests/medmnist/test_run.py`` also permutes the test labels of a whole run and finds the same
selections).

Outputs are probabilities in the layout :func:`medssl.medmnist.metrics.classification_metrics`
expects: ``(N, C)`` softmax probabilities for binary (``C = 2``) and multi-class tasks, ``(N, L)``
sigmoid probabilities for multi-label tasks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from medssl.medmnist.metrics import classification_metrics, normalize_task

__all__ = ["PROTOCOL_VERSION", "ProbeData", "LinearHead", "fit_linear_head", "linear_probe", "knn_classify",
           "knn_k_grid", "knn_probe", "selection_key"]

#: behaviour version of each protocol's code, part of the resume key of its results (bump on a change
#: that changes results). knn 2: k below N and the class-balanced vote.
PROTOCOL_VERSION = {"linear": 1, "knn": 2, "finetune": 1}
#: what a selection can be made on
SELECT_ON = ("auroc", "acc")

ArrayLike = np.ndarray | torch.Tensor


@dataclass(frozen=True)
class ProbeData:
    """What a probe on frozen features sees: train and val features with labels, test features
    without (the test labels never enter a protocol; the caller scores the returned probabilities).

    Attributes:
        train: ``(N_train, D)`` features.
        train_y: ``(N_train,)`` / ``(N_train, 1)`` class labels or ``(N_train, L)`` 0/1 targets.
        val: ``(N_val, D)`` features.
        val_y: validation labels, as ``train_y``.
        test: ``(N_test, D)`` features.
        task: a name in :data:`medssl.medmnist.metrics.TASKS`.
    """

    train: ArrayLike
    train_y: ArrayLike
    val: ArrayLike
    val_y: ArrayLike
    test: ArrayLike
    task: str

    def tensors(self, device: torch.device, num_classes: int | None):
        """``(task, x_train, x_val, x_test, y_train, outputs)`` on ``device``: float32 features,
        train targets as :func:`as_targets` makes them, and the number of outputs."""
        task = normalize_task(self.task)
        xtr, xva, xte = (_feats(f, device) for f in (self.train, self.val, self.test))
        ytr = as_targets(self.train_y, task).to(device)
        return task, xtr, xva, xte, ytr, _num_outputs(task, num_classes, ytr, as_targets(self.val_y, task))


def _feats(x: ArrayLike, device: torch.device) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.ndim != 2:
        raise ValueError(f"features must have shape (N, D), got {tuple(x.shape)}")
    return x.to(device=device, dtype=torch.float32)


def as_targets(y: ArrayLike, task: str) -> torch.Tensor:
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


def to_probs(logits: torch.Tensor, task: str) -> torch.Tensor:
    logits = logits.float()
    if task == "multilabel":
        return torch.sigmoid(logits)
    if task == "binary" and logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        return torch.stack([1 - p, p], 1)
    return logits.softmax(1)


def task_loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    logits = logits.float()
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, y.float())
    if task == "binary" and logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float())
    return F.cross_entropy(logits, y)


def selection_key(metrics: dict[str, float], on: str = "auroc") -> tuple[float, float]:
    """Validation AUROC first (``nan`` ranks last), ACC second; ``on="acc"``: ACC first, AUROC second."""
    if on not in SELECT_ON:
        raise ValueError(f"select_on must be one of {SELECT_ON}, got {on!r}")
    auroc = metrics["auroc"]
    auroc = -math.inf if math.isnan(auroc) else auroc
    return (auroc, metrics["acc"]) if on == "auroc" else (metrics["acc"], auroc)


def rng_devices(device: torch.device) -> list:
    return [device] if device.type == "cuda" else []


def epoch_batches(n: int, batch_size: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """Index batches of one epoch; shuffled when a generator is given. A trailing batch of one
    sample is dropped (batch norm cannot train on it) unless it is the only batch."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    batches = list(order.split(batch_size))
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches.pop()
    return batches


# ---------------------------------------------------------------- linear probe


def _standardizer(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation per feature of the training features (a constant feature's
    standard deviation is 1: it is only centred)."""
    mean, std = x.mean(0), x.std(0, unbiased=False)
    return mean, torch.where(std > 1e-6, std, torch.ones_like(std))


def _train_linear(x: torch.Tensor, y: torch.Tensor, out: int, task: str, lr: float, wd: float, epochs: int,
                  batch_size: int, seed: int) -> nn.Linear:
    with torch.random.fork_rng(devices=rng_devices(x.device)):
        torch.manual_seed(seed)
        layer = nn.Linear(x.shape[1], out).to(x.device)
    opt = torch.optim.AdamW([{"params": [layer.weight], "weight_decay": wd},
                             {"params": [layer.bias], "weight_decay": 0.0}], lr=lr)
    n = len(x)
    full = batch_size >= n
    generator = None if full else torch.Generator().manual_seed(seed)
    steps = epochs * len(epoch_batches(n, batch_size, None))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(steps, 1))
    for _ in range(epochs):
        for idx in [slice(None)] if full else epoch_batches(n, batch_size, generator):
            idx = idx if full else idx.to(x.device)
            loss = task_loss(layer(x[idx]), y[idx], task)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return layer


class LinearHead(nn.Module):
    """``layer((features - mean) / std)``: a linear head on features standardised as in training."""

    def __init__(self, layer: nn.Linear, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.layer = layer
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.layer((feats - self.mean) / self.std)


def fit_linear_head(
    train_feats: ArrayLike,
    train_y: ArrayLike,
    task: str,
    lr: float,
    wd: float,
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
) -> LinearHead:
    """The linear layer :func:`linear_probe` trains at one grid point (same seed: the same weights),
    as a module on raw features, for scoring other data with the selected head (OOD detection)."""
    task, device = normalize_task(task), torch.device(device)
    x = _feats(train_feats, device)
    y = as_targets(train_y, task).to(device)
    mean, std = _standardizer(x)
    layer = _train_linear((x - mean) / std, y, _num_outputs(task, num_classes, y), task, lr, wd, epochs,
                          batch_size, seed)
    return LinearHead(layer, mean, std)


def linear_probe(
    data: ProbeData,
    lrs: Sequence[float] = (1e-3, 1e-2, 1e-1),
    wds: Sequence[float] = (0.0, 1e-3, 1e-1),
    epochs: int = 100,
    batch_size: int = 256,
    seed: int = 0,
    num_classes: int | None = None,
    device: str | torch.device = "cpu",
    select_on: str = "auroc",
) -> tuple[np.ndarray, dict, float]:
    """Linear probe on frozen features, learning rate x weight decay chosen on validation AUROC.

    Features are standardised with the training split's mean and standard deviation (features
    that are constant on train are only centred). For every grid point a fresh ``nn.Linear`` is
    trained with AdamW (weight decay on the weight only) and a cosine schedule to zero over
    ``epochs`` epochs of shuffled mini-batches (full batch when ``batch_size >= N``), with
    cross-entropy (binary and multi-class: ``C`` logits) or per-label BCE (multi-label). The grid
    point with the best validation AUROC (see the module doc for ties) predicts the test split.

    Args:
        data: train / val features and labels, test features (:class:`ProbeData`).
        lrs: learning rates to try.
        wds: AdamW weight decays to try.
        epochs: epochs per grid point.
        batch_size: mini-batch size.
        seed: seeds the layer initialisation and the batch order (the same for every grid point).
        num_classes: number of classes for multi-class tasks (default: largest train/val label + 1).
        device: where to train.
        select_on: ``"auroc"`` (ACC breaks ties) or ``"acc"`` (AUROC breaks ties).

    Returns:
        ``(test_probs, best_params, val_auroc)``: ``(N_test, C)`` or ``(N_test, L)`` probabilities,
        ``{"lr", "wd"}`` of the selected point, and its validation AUROC (``nan`` if undefined).
    """
    task, xtr, xva, xte, ytr, out = data.tensors(torch.device(device), num_classes)
    if not xtr.shape[1] == xva.shape[1] == xte.shape[1]:
        raise ValueError(f"feature sizes differ: {xtr.shape[1]}, {xva.shape[1]}, {xte.shape[1]}")
    mean, std = _standardizer(xtr)
    xtr, xva, xte = ((x - mean) / std for x in (xtr, xva, xte))
    best = None
    for lr in lrs:
        for wd in wds:
            layer = _train_linear(xtr, ytr, out, task, lr, wd, epochs, batch_size, seed)
            with torch.no_grad():
                metrics = classification_metrics(data.val_y, to_probs(layer(xva), task).cpu().numpy(), task)
            if best is None or selection_key(metrics, select_on) > selection_key(best[2], select_on):
                best = (layer, {"lr": lr, "wd": wd}, metrics)
    if best is None:
        raise ValueError("empty hyper-parameter grid")
    layer, params, metrics = best
    with torch.no_grad():
        test_probs = to_probs(layer(xte), task).cpu().numpy()
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


def _vote(sims: torch.Tensor, idx: torch.Tensor, targets: torch.Tensor, k: int, temperature: float,
          class_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted vote over the first ``k`` neighbours with ``w_i = exp(s_i / T)``.

    Plain (``class_weight=None``): ``sum_i w_i t_i / sum_i w_i``. Balanced: the vote of class ``c``
    is ``sum_i w_i [y_i = c] * class_weight_c``, the row then normalised to sum 1.
    """
    s = sims[:, :k]
    w = torch.exp((s - s[:, :1]) / temperature)  # shifting by the row maximum cancels in the ratio
    votes = (w.unsqueeze(2) * targets[idx[:, :k]]).sum(1)
    if class_weight is None:
        return votes / w.sum(1, keepdim=True)
    votes = votes * class_weight
    return votes / votes.sum(1, keepdim=True).clamp_min(torch.finfo(votes.dtype).tiny)


def _class_weight(targets: torch.Tensor) -> torch.Tensor:
    """``1 / n_c`` per class of one-hot ``(N, C)`` targets (0 for a class with no sample)."""
    counts = targets.sum(0)
    return torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))


#: the k tried when every configured k reaches the number of labeled samples (those below N are kept)
SMALL_KS = (1, 3, 5, 7, 9)


def knn_k_grid(ks: Sequence[int], n: int) -> list[int]:
    """The numbers of neighbours tried with ``n`` labeled samples: the configured ``ks`` below ``n``;
    if none is, the :data:`SMALL_KS` below ``n``; ``[1]`` for ``n <= 1`` (nothing else exists).

    ``k = n`` is left out: every query would have the whole labeled set as neighbours (see the module
    doc). Example: BreastMNIST at 1 % (``n = 5``) with ``ks = (10, 20, 50, 100)`` gives ``[1, 3]``.
    """
    if n <= 1:
        return [1]
    below = sorted({int(k) for k in ks if 1 <= int(k) < n})
    return below or [k for k in SMALL_KS if k < n]


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
    balanced: bool = False,
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
        balanced: class-balanced vote (single-label targets): each neighbour's weight divided by its
            class's count in ``train_y`` (see the module doc); multi-label votes stay plain.

    Returns:
        ``(Q, C)`` probabilities (rows sum to 1 for single-label targets).
    """
    device = torch.device(device)
    xtr = _feats(train_feats, device)
    y = torch.as_tensor(np.asarray(train_y) if not isinstance(train_y, torch.Tensor) else train_y)
    y = as_targets(y, "multilabel" if y.ndim == 2 and y.shape[1] > 1 else "multiclass")
    if y.ndim == 2 and y.shape[1] != num_classes:
        raise ValueError(f"multi-label targets have {y.shape[1]} labels but num_classes is {num_classes}")
    k = min(k, len(xtr))
    targets = _vote_targets(y.to(device), num_classes)
    weight = _class_weight(targets) if balanced and y.ndim == 1 else None
    sims, idx = _neighbours(xtr, _feats(query_feats, device), k, chunk_size)
    return _vote(sims, idx, targets, k, temperature, weight).cpu().numpy()


def knn_probe(
    data: ProbeData,
    ks: Sequence[int] = (10, 20, 50, 100),
    temps: Sequence[float] = (0.07, 0.1, 0.5),
    num_classes: int | None = None,
    chunk_size: int = 1024,
    device: str | torch.device = "cpu",
    vote: str = "balanced",
    select_on: str = "auroc",
) -> tuple[np.ndarray, dict, float]:
    """Weighted kNN (:func:`knn_classify`) with k x temperature chosen on validation AUROC.

    The k tried are :func:`knn_k_grid` of ``ks`` and the number of labeled samples (always below
    it, see the module doc). Neighbours are searched once for the largest ``k``.

    Args:
        data: train / val features and labels, test features (:class:`ProbeData`).
        ks: numbers of neighbours to try.
        temps: temperatures to try.
        num_classes: classes of a multi-class task (default: largest train/val label + 1).
        chunk_size: see :func:`knn_classify`.
        device: where to compute the similarities.
        vote: ``"balanced"`` (each class's votes divided by its labeled count; single-label tasks)
            or ``"plain"`` (DINO's).
        select_on: ``"auroc"`` or ``"acc"`` (see :func:`selection_key`).

    Returns:
        ``(test_probs, {"k", "temperature", "vote"}, val_auroc)``.
    """
    if vote not in ("balanced", "plain"):
        raise ValueError(f"vote must be 'balanced' or 'plain', got {vote!r}")
    task, xtr, xva, xte, ytr, out = data.tensors(torch.device(device), num_classes)
    targets = _vote_targets(ytr, out)
    weight = _class_weight(targets) if vote == "balanced" and task != "multilabel" else None
    ks = knn_k_grid(ks, len(xtr))
    if not temps:
        raise ValueError("empty hyper-parameter grid")
    sims, idx = _neighbours(xtr, xva, ks[-1], chunk_size)
    best = None
    for k in ks:
        for t in temps:
            probs = _vote(sims, idx, targets, k, t, weight).cpu().numpy()
            metrics = classification_metrics(data.val_y, probs, task)
            if best is None or selection_key(metrics, select_on) > selection_key(best[1], select_on):
                best = ({"k": k, "temperature": t, "vote": vote if weight is not None else "plain"}, metrics)
    params, metrics = best
    sims, idx = _neighbours(xtr, xte, params["k"], chunk_size)
    test = _vote(sims, idx, targets, params["k"], params["temperature"], weight)
    return test.cpu().numpy(), params, metrics["auroc"]
