"""Classification metrics as MedMNIST reports them (ACC, AUROC) plus balanced ACC.

Conventions follow the official MedMNIST evaluator (``medmnist/evaluator.py``, ``getACC`` and
``getAUC``; Yang et al., "MedMNIST v2", Scientific Data 2023), so numbers are comparable with the
published tables:

* binary: the positive-class probability is the last column of ``probs`` (or ``probs`` itself if
  1D); prediction ``p > 0.5``; AUROC of that probability.
* multi-class (and ordinal regression, which MedMNIST scores as multi-class): prediction
  ``argmax``; AUROC is the one-vs-rest macro average, the same number as
  ``sklearn.metrics.roc_auc_score(y, probs, multi_class="ovr")`` when every class occurs.
* multi-label: prediction ``p > 0.5`` per label; ACC is the mean over labels of the per-label
  accuracy; AUROC the mean over labels of the per-label AUROC.

Absent classes (a small test split, or a 1 % label subset evaluated on its own): AUROC is
undefined for a class without positives or without negatives, so the one-vs-rest (multi-label:
per-label) average runs over the classes (labels) for which it is defined, and is ``nan`` when
there is none. MedMNIST's evaluator would raise instead. Balanced ACC is sklearn's: the mean
recall over the classes present in ``y_true`` (multi-label: the mean over labels of each label's
balanced accuracy).
"""

from __future__ import annotations

import math
import warnings

import numpy as np

__all__ = ["TASKS", "normalize_task", "classification_metrics"]

#: accepted task names -> canonical name. The MedMNIST ``INFO[flag]["task"]`` strings are accepted.
TASKS: dict[str, str] = {
    "binary": "binary",
    "binary-class": "binary",
    "multiclass": "multiclass",
    "multi-class": "multiclass",
    "ordinal-regression": "multiclass",
    "multilabel": "multilabel",
    "multi-label": "multilabel",
    "multi-label, binary-class": "multilabel",
}


def normalize_task(task: str) -> str:
    """``"binary"``, ``"multiclass"`` or ``"multilabel"`` for any name in :data:`TASKS`."""
    try:
        return TASKS[task]
    except KeyError:
        raise ValueError(f"unknown task {task!r}; use one of {sorted(TASKS)}") from None


def _single_labels(y_true: np.ndarray) -> np.ndarray:
    y = np.asarray(y_true)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"single-label targets must have shape (N,) or (N, 1), got {y.shape}")
    return y.astype(np.int64)


def _auroc(y: np.ndarray, score: np.ndarray) -> float:
    """Binary AUROC, ``nan`` when ``y`` holds one value only."""
    from sklearn.metrics import roc_auc_score

    if y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, score))


def _balanced_acc(y: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import balanced_accuracy_score

    with warnings.catch_warnings():  # "y_pred contains classes not in y_true": intended, see module doc
        warnings.simplefilter("ignore", UserWarning)
        return float(balanced_accuracy_score(y, pred))


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, task: str) -> dict[str, float]:
    """ACC, balanced ACC and AUROC of predicted probabilities.

    Args:
        y_true: ``(N,)`` or ``(N, 1)`` integer labels, or ``(N, L)`` 0/1 targets for multi-label.
        probs: ``(N, C)`` class probabilities (binary: ``(N, 2)`` or ``(N,)`` positive-class
            probability; multi-label: ``(N, L)`` per-label probabilities).
        task: a name in :data:`TASKS`.

    Returns:
        ``{"acc", "balanced_acc", "auroc"}`` as floats; ``auroc`` is ``nan`` when no class (label)
        has both positives and negatives in ``y_true``.
    """
    task = normalize_task(task)
    probs = np.asarray(probs, dtype=np.float64)
    if len(probs) == 0:
        raise ValueError("no samples to evaluate")
    if task == "multilabel":
        y = np.asarray(y_true).astype(np.int64)
        if y.shape != probs.shape or y.ndim != 2:
            raise ValueError(f"multi-label targets {y.shape} and probs {probs.shape} must both be (N, L)")
        pred = (probs > 0.5).astype(np.int64)
        labels = range(y.shape[1])
        return {
            "acc": float(np.mean([np.mean(pred[:, j] == y[:, j]) for j in labels])),
            "balanced_acc": float(np.mean([_balanced_acc(y[:, j], pred[:, j]) for j in labels])),
            "auroc": _nanmean([_auroc(y[:, j], probs[:, j]) for j in labels]),
        }
    y = _single_labels(y_true)
    if len(y) != len(probs):
        raise ValueError(f"{len(y)} targets but {len(probs)} rows of probabilities")
    if task == "binary":
        pos = probs if probs.ndim == 1 else probs[:, -1]
        pred = (pos > 0.5).astype(np.int64)
        auroc = _auroc(y, pos)
    else:
        if probs.ndim != 2 or y.max() >= probs.shape[1]:
            raise ValueError(f"multi-class probs must be (N, C) with C > max label, got {probs.shape}")
        pred = probs.argmax(1)
        auroc = _nanmean([_auroc((y == c).astype(np.int64), probs[:, c]) for c in np.unique(y)])
    return {"acc": float(np.mean(pred == y)), "balanced_acc": _balanced_acc(y, pred), "auroc": auroc}
