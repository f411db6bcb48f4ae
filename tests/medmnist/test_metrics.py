"""Classification metrics against sklearn and the MedMNIST evaluator's conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, roc_auc_score

from medssl.medmnist.metrics import classification_metrics, normalize_task


def test_binary_matches_sklearn_and_medmnist_conventions():
    y = np.array([[0], [0], [1], [1], [1], [0]])  # MedMNIST stores (N, 1)
    pos = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    probs = np.stack([1 - pos, pos], 1)
    m = classification_metrics(y, probs, "binary-class")
    pred = (pos > 0.5).astype(int)
    assert m["acc"] == pytest.approx(accuracy_score(y[:, 0], pred)) == pytest.approx(4 / 6)
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y[:, 0], pred))
    assert m["auroc"] == pytest.approx(roc_auc_score(y[:, 0], pos)) == pytest.approx(8 / 9)
    assert classification_metrics(y, pos, "binary") == m  # 1D positive-class probabilities


def test_multiclass_matches_sklearn_ovr():
    rng = np.random.default_rng(0)
    y = np.array([0, 1, 2, 2, 1, 0, 2, 1, 0, 1])
    probs = rng.dirichlet(np.ones(3), size=10)
    m = classification_metrics(y, probs, "multi-class")
    assert m["acc"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert m["balanced_acc"] == pytest.approx(balanced_accuracy_score(y, probs.argmax(1)))
    assert m["auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr"))


def test_multiclass_absent_class_averages_present_classes():
    y = np.array([0, 0, 1, 1])  # class 2 never occurs
    probs = np.array([[0.7, 0.2, 0.1], [0.3, 0.3, 0.4], [0.2, 0.5, 0.3], [0.6, 0.3, 0.1]])
    m = classification_metrics(y, probs, "ordinal-regression")
    per_class = [roc_auc_score(y == c, probs[:, c]) for c in (0, 1)]
    assert m["auroc"] == pytest.approx(np.mean(per_class))
    assert m["balanced_acc"] == pytest.approx((1 / 2 + 1 / 2) / 2)  # recall over the present classes
    assert math.isnan(classification_metrics([1, 1], [[0.2, 0.8], [0.6, 0.4]], "binary")["auroc"])


def test_multilabel_per_label_means():
    y = np.array([[1, 0, 0], [0, 1, 0], [1, 1, 0], [0, 0, 0]])  # label 2 has no positives
    probs = np.array([[0.9, 0.2, 0.1], [0.4, 0.7, 0.6], [0.3, 0.8, 0.2], [0.1, 0.6, 0.3]])
    m = classification_metrics(y, probs, "multi-label, binary-class")
    pred = (probs > 0.5).astype(int)
    assert m["acc"] == pytest.approx(np.mean([accuracy_score(y[:, j], pred[:, j]) for j in range(3)]))
    assert m["acc"] == pytest.approx((3 / 4 + 3 / 4 + 3 / 4) / 3)
    assert m["auroc"] == pytest.approx(np.mean([roc_auc_score(y[:, j], probs[:, j]) for j in (0, 1)]))


def test_unknown_task():
    with pytest.raises(ValueError, match="unknown task"):
        normalize_task("regression")
