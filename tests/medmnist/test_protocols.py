"""Linear probe, weighted kNN and fine-tuning on tiny synthetic data."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn

from medssl.medmnist.finetune import fine_tune
from medssl.medmnist.metrics import classification_metrics
from medssl.medmnist.protocols import (
    ProbeData,
    fit_linear_head,
    knn_classify,
    knn_k_grid,
    knn_probe,
    linear_probe,
    selection_key,
)
from medssl.medmnist.subsample import class_balanced_subset


def _separable(n: int, d: int = 8, classes: int = 3, seed: int = 0):
    """Gaussian clusters around well-separated class centres (linearly separable in practice)."""
    centres = np.random.default_rng(99).normal(size=(classes, d)) * 4  # the same for every split
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    return (centres[y] + rng.normal(size=(n, d))).astype(np.float32), y


def test_linear_probe_separable_multiclass():
    (xtr, ytr), (xva, yva), (xte, yte) = (_separable(n, seed=s) for n, s in ((120, 1), (60, 2), (60, 3)))
    data = ProbeData(xtr, ytr, xva, yva, xte, "multi-class")
    grid = dict(lrs=(1e-2, 1e-1), wds=(0.0, 1e-1), epochs=30, batch_size=64)
    probs, params, val_auroc = linear_probe(data, **grid)
    assert probs.shape == (60, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert classification_metrics(yte, probs, "multi-class")["auroc"] > 0.99
    assert params["lr"] in (1e-2, 1e-1) and params["wd"] in (0.0, 1e-1)
    assert val_auroc > 0.99
    again = linear_probe(data, **grid)
    np.testing.assert_array_equal(probs, again[0])
    assert params == again[1]
    # the selected head rebuilt alone (as the OOD step does) predicts the same test probabilities
    head = fit_linear_head(xtr, ytr, "multi-class", params["lr"], params["wd"], epochs=30, batch_size=64)
    with torch.no_grad():
        np.testing.assert_allclose(head(torch.from_numpy(xte)).softmax(1).numpy(), probs, rtol=1e-5, atol=1e-6)


def test_linear_probe_multilabel_and_binary():
    x, y = _separable(200, classes=2, seed=4)
    multi = np.stack([y, 1 - y, (x[:, 0] > np.median(x[:, 0])).astype(int)], 1)
    data = ProbeData(x[:100], multi[:100], x[100:150], multi[100:150], x[150:], "multilabel")
    probs, _, val_auroc = linear_probe(data, lrs=(1e-1,), wds=(0.0,), epochs=50, batch_size=512)
    assert probs.shape == (50, 3) and val_auroc > 0.95
    assert classification_metrics(multi[150:], probs, "multilabel")["auroc"] > 0.95
    data = ProbeData(x[:100], y[:100, None], x[100:150], y[100:150, None], x[150:], "binary")
    probs, _, _ = linear_probe(data, lrs=(1e-1,), wds=(0.0,), epochs=20)
    assert probs.shape == (50, 2)
    assert classification_metrics(y[150:], probs, "binary")["auroc"] > 0.99


def test_probe_selection_ignores_the_test_features():
    """Selection sees train and val only: other test features change the test probabilities, never
    the selected hyper-parameters or their validation AUROC."""
    (xtr, ytr), (xva, yva), (xte, _) = (_separable(n, seed=s) for n, s in ((60, 1), (40, 2), (40, 3)))
    noise = np.random.default_rng(7).normal(size=xte.shape).astype(np.float32)
    for probe, kw in ((linear_probe, dict(lrs=(1e-3, 1e-1), wds=(0.0, 1e-1), epochs=10)),
                      (knn_probe, dict(ks=(3, 10, 30), temps=(0.07, 0.5)))):
        a = probe(ProbeData(xtr, ytr, xva, yva, xte, "multi-class"), **kw)
        b = probe(ProbeData(xtr, ytr, xva, yva, noise, "multi-class"), **kw)
        assert a[1] == b[1] and a[2] == b[2]
        assert not np.allclose(a[0], b[0])


def test_knn_hand_computed():
    # class 0 at (2, 0); class 1 at (0, 5) and (-1, 0). Query (3, 4) ~ (0.6, 0.8) after normalising:
    # cosine similarities 0.6, 0.8, -0.6; the k=2 neighbours are (0, 5) [class 1, s=0.8] and
    # (2, 0) [class 0, s=0.6]. With T = 1: p1 = e^0.8 / (e^0.8 + e^0.6) = 1 / (1 + e^-0.2).
    train = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])
    labels = np.array([0, 1, 1])
    probs = knn_classify(train, labels, np.array([[3.0, 4.0]]), k=2, temperature=1.0, num_classes=2)
    p1 = 1 / (1 + math.exp(-0.2))
    np.testing.assert_allclose(probs, [[1 - p1, p1]], rtol=1e-6)
    # k=3 adds class 1 at s=-0.6; T=0.5 sharpens the weights to exp(s / 0.5)
    w = np.exp(np.array([0.6, 0.8, -0.6]) / 0.5)
    probs = knn_classify(train, labels, np.array([[3.0, 4.0]]), k=3, temperature=0.5, num_classes=2)
    np.testing.assert_allclose(probs, [[w[0] / w.sum(), (w[1] + w[2]) / w.sum()]], rtol=1e-6)
    # k larger than N is capped; multi-label targets give the weighted mean of the label vectors
    multi = np.array([[1, 0], [0, 1], [1, 1]])
    probs = knn_classify(train, multi, np.array([[3.0, 4.0]]), k=10, temperature=0.5, num_classes=2)
    np.testing.assert_allclose(probs, [[(w[0] + w[2]) / w.sum(), (w[1] + w[2]) / w.sum()]], rtol=1e-6)


def test_knn_probe_selects_on_val():
    (xtr, ytr), (xva, yva), (xte, yte) = (_separable(n, seed=s) for n, s in ((40, 1), (30, 2), (30, 3)))
    probs, params, val_auroc = knn_probe(ProbeData(xtr, ytr, xva, yva, xte, "multi-class"), ks=(5, 20, 100))
    assert params["k"] in (5, 20) and params["temperature"] in (0.07, 0.1, 0.5)  # 100 >= N=40 is dropped
    assert params["vote"] == "balanced"
    assert probs.shape == (30, 3) and val_auroc > 0.95
    assert classification_metrics(yte, probs, "multi-class")["auroc"] > 0.95


def test_knn_k_grid_stays_below_the_labeled_count():
    assert knn_k_grid((10, 20, 50, 100), 546) == [10, 20, 50, 100]
    assert knn_k_grid((10, 20, 50, 100), 55) == [10, 20, 50]  # BreastMNIST 10 %: 100 dropped
    assert knn_k_grid((10, 20, 50, 100), 5) == [1, 3]  # 1 %: k = N = 5 would be the whole labeled set
    assert knn_k_grid((3, 10), 5) == [3]
    assert knn_k_grid((10,), 2) == [1] and knn_k_grid((10,), 1) == [1]


def test_knn_balanced_vote_hand_computed():
    # three class-0 samples and one class-1 sample; a query with similarity 1 to every one of them
    # (all on one ray): plain vote 3/4 : 1/4, balanced (each class / its count) 1/2 : 1/2.
    train = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0], [4.0, 0.0]])
    labels = np.array([0, 0, 0, 1])
    query = np.array([[5.0, 0.0]])
    plain = knn_classify(train, labels, query, k=4, temperature=0.1, num_classes=2)
    balanced = knn_classify(train, labels, query, k=4, temperature=0.1, num_classes=2, balanced=True)
    np.testing.assert_allclose(plain, [[0.75, 0.25]], rtol=1e-6)
    np.testing.assert_allclose(balanced, [[0.5, 0.5]], rtol=1e-6)
    # with other similarities: p_c proportional to sum_{i in c} w_i / n_c
    train = np.array([[2.0, 0.0], [0.0, 5.0], [-1.0, 0.0]])  # cosines 0.6, 0.8, -0.6 to (3, 4)
    w = np.exp(np.array([0.6, 0.8, -0.6]) / 0.5)
    v0, v1 = w[0] / 1, (w[1] + w[2]) / 2
    probs = knn_classify(train, np.array([0, 1, 1]), np.array([[3.0, 4.0]]), k=3, temperature=0.5, num_classes=2,
                         balanced=True)
    np.testing.assert_allclose(probs, [[v0 / (v0 + v1), v1 / (v0 + v1)]], rtol=1e-6)


def _imbalanced(n0: int, n1: int, seed: int):
    """Two overlapping Gaussian classes in 16-D (class 1 shifted), n0 of class 0 and n1 of class 1,
    around a common offset: like post-ReLU backbone features, all cosine similarities are close to 1."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(n0, int), np.ones(n1, int)]
    x = 6.0 + rng.normal(size=(n0 + n1, 16)) + np.where(y[:, None] == 1, 1.0, -1.0) * (np.arange(16) < 4)
    return x.astype(np.float32), y


def test_knn_at_one_percent_of_an_imbalanced_set_predicts_both_classes():
    """BreastMNIST's counts (399 : 147 training images); 1 % is 4 + 1 labeled samples. The old
    protocol (k capped to N = 5, plain vote) gives every test image the same neighbours and predicts
    the majority class for all of them; the protocol now (k below N chosen on validation, class-
    balanced vote) predicts both classes, with a balanced accuracy above chance."""
    (xtr, ytr), (xva, yva), (xte, yte) = (_imbalanced(a, b, s) for a, b, s in ((399, 147, 0), (57, 21, 1), (114, 42, 2)))
    idx = class_balanced_subset(ytr, 0.01, seed=0)
    assert len(idx) == 5 and ytr[idx].sum() == 1
    old = knn_classify(xtr[idx], ytr[idx], xte, k=5, temperature=0.5, num_classes=2)
    assert set(old.argmax(1)) == {0}  # the degenerate case this fixes
    probs, params, _ = knn_probe(ProbeData(xtr[idx], ytr[idx], xva, yva, xte, "binary"),
                                 ks=(10, 20, 50, 100), temps=(0.07, 0.1, 0.5))
    pred = probs.argmax(1)
    assert params["k"] in (1, 3) and params["vote"] == "balanced"
    assert set(pred) == {0, 1}
    assert classification_metrics(yte, probs, "binary")["balanced_acc"] > 0.6


def test_selection_on_accuracy():
    a, b = {"auroc": 0.9, "acc": 0.7}, {"auroc": 0.8, "acc": 0.8}
    assert selection_key(a) > selection_key(b) and selection_key(b, "acc") > selection_key(a, "acc")
    with pytest.raises(ValueError, match="select_on"):
        selection_key(a, "f1")


def _toy_images(n: int, seed: int):
    """8x8 uint8 noise images; class 1 is a little brighter top-left, class 0 bottom-right."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randint(0, 120, (n, 1, 8, 8), generator=g)
    x[y == 1, :, :4, :4] += 40
    x[y == 0, :, 4:, 4:] += 40
    return x.to(torch.uint8), y[:, None]


def _mlp(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Dropout(0.1)), nn.Linear(16, 2)


@pytest.mark.parametrize("precision", ["32", "bf16"])
def test_fine_tune_learns_and_is_deterministic(precision):
    train, val, test = _toy_images(64, 0), _toy_images(32, 1), _toy_images(32, 2)
    backbone, head = _mlp()
    b2, h2 = copy.deepcopy(backbone), copy.deepcopy(head)
    with torch.no_grad():
        untrained = classification_metrics(val[1], head(backbone(val[0].float() / 255)).softmax(1).numpy(), "binary")
    assert untrained["auroc"] < 0.5  # this initialisation starts out wrong
    noise = lambda x: x + 0.02 * torch.randn_like(x)  # noqa: E731 (draws from the seeded global generator)
    probs, history = fine_tune(backbone, head, train, val, test, "binary", epochs=5, lr=1e-2, batch_size=16,
                               augment=noise, precision=precision, seed=3, progress=False)
    assert probs.shape == (32, 2)
    epochs = history["epochs"]
    assert len(epochs) == 5 and epochs[-1]["train_loss"] < epochs[0]["train_loss"]
    assert history["best_val"]["auroc"] > 0.9
    assert history["best_val"]["auroc"] == max(e["val_auroc"] for e in epochs)
    assert epochs[history["best_epoch"] - 1]["val_auroc"] == history["best_val"]["auroc"]
    assert classification_metrics(test[1], probs, "binary")["auroc"] > 0.9
    again, _ = fine_tune(b2, h2, train, val, test[0], "binary", epochs=5, lr=1e-2, batch_size=16, augment=noise,
                         precision=precision, seed=3, progress=False)
    np.testing.assert_array_equal(probs, again)


def test_fine_tune_rejects_unknown_precision():
    backbone, head = _mlp()
    data = _toy_images(8, 0)
    with pytest.raises(ValueError, match="precision"):
        fine_tune(backbone, head, data, data, data, "binary", epochs=1, precision="16", progress=False)


def test_fine_tune_stops_with_a_clear_error_when_the_loss_is_nan():
    """A NaN gradient poisons the weights; the next loss is NaN and fine-tuning stops with a
    user-facing error (no sklearn traceback from NaN validation scores)."""
    from medssl.errors import MedsslError, TrainingDiverged

    backbone, head = _mlp()
    data = _toy_images(32, 0)

    class PoisonOnce(nn.Module):  # NaN gradient in the first backward pass only
        def __init__(self):
            super().__init__()
            self.calls = 0

        def forward(self, x):
            self.calls += 1
            if self.calls == 1:
                x.register_hook(lambda g: torch.full_like(g, float("nan")))
            return x

    poisoned = nn.Sequential(PoisonOnce(), head)
    with pytest.raises(TrainingDiverged, match=r"loss is nan at epoch 1, step 2") as info:
        fine_tune(backbone, poisoned, data, data, data, "binary", epochs=2, lr=1e-2, batch_size=16, progress=False)
    assert isinstance(info.value, MedsslError)
