"""OOD scores and metrics against sklearn and hand computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from medssl.medmnist.ood import MahalanobisScorer, energy, fpr_at_tpr, max_softmax, ood_metrics, roc_curve_points


def test_msp_and_energy_by_hand():
    logits = np.array([[2.0, 0.0], [0.0, 0.0], [1.0, 1.0]])
    msp = max_softmax(logits)
    np.testing.assert_allclose(msp, [math.exp(2) / (math.exp(2) + 1), 0.5, 0.5])
    # T * logsumexp(z / T): log(e^2 + 1), log 2, 1 + log 2; with T = 2: 2 * log(e^1 + e^0)
    np.testing.assert_allclose(energy(logits), [math.log(math.exp(2) + 1), math.log(2), 1 + math.log(2)])
    np.testing.assert_allclose(energy(logits, T=2.0)[0], 2 * math.log(math.e + 1))


def test_metrics_match_sklearn():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.normal(1.0, 1.0, 50), rng.normal(0.0, 1.0, 40)
    y, s = np.r_[np.ones(50), np.zeros(40)], np.r_[s_in, s_out]
    m = ood_metrics(s_in, s_out)
    assert m["auroc"] == pytest.approx(roc_auc_score(y, s))
    assert m["aupr_in"] == pytest.approx(average_precision_score(y, s))
    assert m["aupr_out"] == pytest.approx(average_precision_score(1 - y, -s))
    # FPR95 = FPR at the first point of the full ROC curve whose TPR reaches 0.95
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert m["fpr95"] == pytest.approx(fpr[np.searchsorted(tpr, 0.95)])


def test_fpr95_by_hand():
    # 20 in-distribution scores 1..20: keeping >= 95 % = 19 of them needs threshold t = 2 (the
    # 19th largest), accepted when score >= t. OOD scores: 0.5, 1.5, 2 (tie: accepted), 2.5, 30
    # -> 3 of 5 accepted: FPR95 = 0.6.
    s_in = np.arange(1, 21, dtype=float)
    s_out = np.array([0.5, 1.5, 2.0, 2.5, 30.0])
    assert ood_metrics(s_in, s_out)["fpr95"] == pytest.approx(0.6)
    # 10 in scores: ceil(9.5) = 10 must be kept, so t = the smallest in score (1) -> 4 of 5 accepted
    assert fpr_at_tpr(np.arange(1, 11), s_out) == pytest.approx(0.8)
    assert ood_metrics([5.0, 6.0], [1.0, 2.0]) == {"auroc": 1.0, "aupr_in": 1.0, "aupr_out": 1.0, "fpr95": 0.0}


def test_roc_curve_points_thinned():
    rng = np.random.default_rng(1)
    pts = roc_curve_points(rng.normal(1, 1, 500), rng.normal(0, 1, 500), max_points=50)
    assert len(pts["fpr"]) == len(pts["tpr"]) <= 50
    assert (pts["fpr"][0], pts["tpr"][0], pts["fpr"][-1], pts["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(pts["fpr"]) >= 0) and np.all(np.diff(pts["tpr"]) >= 0)


@pytest.mark.parametrize("shrinkage", ["ledoit_wolf", 0.1])
def test_mahalanobis_two_blobs(shrinkage):
    rng = np.random.default_rng(0)
    cov = np.array([[1.0, 0.8], [0.8, 1.0]])
    x = np.r_[rng.multivariate_normal([0, 0], cov, 200), rng.multivariate_normal([6, 0], cov, 200)]
    y = np.r_[np.zeros(200, int), np.ones(200, int)]
    scorer = MahalanobisScorer(shrinkage).fit(x, y)
    np.testing.assert_allclose(scorer.means, [[0, 0], [6, 0]], atol=0.2)
    inside = scorer.score(np.r_[rng.multivariate_normal([0, 0], cov, 50), rng.multivariate_normal([6, 0], cov, 50)])
    far = scorer.score(np.array([[3.0, 10.0], [-8.0, 0.0], [20.0, 20.0], [3.0, -3.0]]))
    assert inside.min() > far.max()
    assert ood_metrics(inside, far)["auroc"] == 1.0
    # the shared covariance is anisotropic: along the correlated direction distances are shorter
    along, across = scorer.score(np.array([[1.0, 1.0], [1.0, -1.0]]))
    assert along > across
    # score = -min_c squared distance, checked against a direct computation for one point
    p = np.array([2.0, 1.0])
    direct = min((p - m) @ scorer.precision @ (p - m) for m in scorer.means)
    assert scorer.score(p[None])[0] == pytest.approx(-direct)


def test_near_and_far_ood_by_modality():
    from medssl.medmnist.files import medmnist_flags
    from medssl.medmnist.ood import MODALITY, ood_relation

    assert set(MODALITY) == set(medmnist_flags())  # every dataset has a modality
    assert ood_relation("pneumoniamnist", "chestmnist") == "near"  # both chest X-ray
    assert ood_relation("organamnist", "organsmnist") == "near"  # the same abdominal CTs
    assert ood_relation("breastmnist", "pneumoniamnist") == "far"  # ultrasound vs X-ray
    assert ood_relation("BreastMNIST", "dermamnist") == "far" and ood_relation("x", "x") == "far"
