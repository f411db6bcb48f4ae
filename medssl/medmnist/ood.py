"""Out-of-distribution (OOD) detection scores and their metrics.

Every score is oriented the same way: **higher means more in-distribution**. The metrics treat
in-distribution samples as the positive class, as in Hendrycks & Gimpel (2017) and the OpenOOD
benchmark (Yang et al., NeurIPS 2022 Datasets & Benchmarks):

* AUROC: ``roc_auc_score`` with in = 1, out = 0, on the scores.
* AUPR-In: average precision with in-distribution positive, on the scores.
* AUPR-Out: average precision with OOD positive, on the negated scores.
* FPR95: the fraction of OOD samples accepted when the threshold keeps 95 % of in-distribution
  samples. Threshold convention: a sample is accepted when ``score >= t``, and ``t`` is the
  largest threshold that accepts at least 95 % of the in-distribution samples, i.e. the
  ``ceil(0.95 * n_in)``-th largest in-distribution score. This is the first point of sklearn's
  ROC curve (``drop_intermediate=False``) whose TPR reaches 0.95.

An AUROC below 0.5 means the score is inverted on that pair (the OOD set looks more
in-distribution than the in-distribution test set): a finding about the detector, reported as
such and left out of averages, not a number to average with the others.

Near and far OOD (:func:`ood_relation`): a pair of MedMNIST datasets is **near** when both come
from the same imaging modality (:data:`MODALITY`: e.g. PneumoniaMNIST and ChestMNIST, both chest
X-rays; the three OrganMNIST views of the same abdominal CTs; the microscopy sets of cells and
tissue), **far** otherwise (e.g. breast ultrasound vs chest X-ray). The grouping is by acquisition
modality, from the MedMNIST v2 table (Yang et al. 2023, Table 1), not by a learned distance.
"""

from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["MODALITY", "max_softmax", "energy", "MahalanobisScorer", "ood_metrics", "ood_relation", "fpr_at_tpr",
           "roc_curve_points"]

#: imaging modality of every MedMNIST dataset (MedMNIST v2, Table 1), the basis of near / far OOD
MODALITY: dict[str, str] = {
    "pathmnist": "microscopy",  # colon pathology (H&E)
    "chestmnist": "x-ray",  # chest X-ray
    "dermamnist": "dermatoscopy",
    "octmnist": "oct",  # retinal OCT
    "pneumoniamnist": "x-ray",  # chest X-ray
    "retinamnist": "fundus",  # fundus camera
    "breastmnist": "ultrasound",  # breast ultrasound
    "bloodmnist": "microscopy",  # blood cell microscope
    "tissuemnist": "microscopy",  # kidney cortex microscope
    "organamnist": "ct",  # abdominal CT (axial)
    "organcmnist": "ct",  # (coronal)
    "organsmnist": "ct",  # (sagittal)
    "organmnist3d": "ct",
    "nodulemnist3d": "ct",  # chest CT
    "adrenalmnist3d": "ct",  # shapes from abdominal CT
    "fracturemnist3d": "ct",  # chest CT
    "vesselmnist3d": "mra",  # shapes from brain MRA
    "synapsemnist3d": "microscopy",  # electron microscope
}


def ood_relation(in_flag: str, out_flag: str) -> str:
    """``"near"`` when the two datasets share an imaging modality (:data:`MODALITY`), else ``"far"``
    (an unknown dataset counts as far)."""
    a, b = MODALITY.get(str(in_flag).lower()), MODALITY.get(str(out_flag).lower())
    return "near" if a is not None and a == b else "far"


def _logits(logits) -> torch.Tensor:
    x = torch.as_tensor(np.asarray(logits) if not isinstance(logits, torch.Tensor) else logits).double()
    if x.ndim != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(x.shape)}")
    return x


def max_softmax(logits) -> np.ndarray:
    """Maximum softmax probability (Hendrycks & Gimpel, ICLR 2017): ``max_c softmax(z)_c``.

    Args:
        logits: ``(N, C)`` logits.

    Returns:
        ``(N,)`` scores in ``[1/C, 1]``.
    """
    return _logits(logits).softmax(1).amax(1).numpy()


def energy(logits, T: float = 1.0) -> np.ndarray:
    """Negative free energy (Liu et al., "Energy-based Out-of-distribution Detection", NeurIPS 2020,
    Eq. 4 with the sign flipped): ``T * logsumexp(z / T)``, higher = more in-distribution.

    Args:
        logits: ``(N, C)`` logits.
        T: temperature.

    Returns:
        ``(N,)`` scores.
    """
    return (T * torch.logsumexp(_logits(logits) / T, dim=1)).numpy()


class MahalanobisScorer:
    """Class-conditional Gaussians with a shared covariance (Lee et al., "A Simple Unified
    Framework for Detecting Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018,
    Eq. 1-2), without their input pre-processing and layer ensemble.

    ``fit`` estimates the class means ``mu_c`` and the covariance of the class-centred features
    with Ledoit-Wolf shrinkage (sklearn ``LedoitWolf``, well-conditioned even with fewer samples
    than dimensions), or with a ridge ``Sigma + shrinkage * mean(diag(Sigma)) * I`` when
    ``shrinkage`` is a number. ``score`` is ``-min_c (x - mu_c)^T Sigma^-1 (x - mu_c)``, the
    negative squared distance to the nearest class mean (the square root would rank the same).

    Args:
        shrinkage: ``"ledoit_wolf"`` or a relative ridge as a float.

    Example:
        >>> scorer = MahalanobisScorer().fit(train_feats, train_labels)
        >>> scores = scorer.score(test_feats)  # higher = more in-distribution
    """

    def __init__(self, shrinkage: str | float = "ledoit_wolf"):
        if not (shrinkage == "ledoit_wolf" or (isinstance(shrinkage, (int, float)) and shrinkage >= 0)):
            raise ValueError(f"shrinkage must be 'ledoit_wolf' or a number >= 0, got {shrinkage!r}")
        self.shrinkage = shrinkage
        self.means: np.ndarray | None = None
        self.precision: np.ndarray | None = None

    def fit(self, train_feats, train_labels=None) -> "MahalanobisScorer":
        """Estimate class means and the shared (shrunk) covariance.

        Args:
            train_feats: ``(N, D)`` in-distribution features.
            train_labels: ``(N,)`` / ``(N, 1)`` class labels; ``None`` for one Gaussian (e.g. a
                multi-label task).

        Returns:
            ``self``.
        """
        x = np.asarray(train_feats, dtype=np.float64)
        if x.ndim != 2 or len(x) < 2:
            raise ValueError(f"need (N >= 2, D) features, got shape {x.shape}")
        y = np.zeros(len(x), dtype=np.int64) if train_labels is None else np.asarray(train_labels).reshape(len(x))
        classes = np.unique(y)
        self.means = np.stack([x[y == c].mean(0) for c in classes])
        centred = x - self.means[np.searchsorted(classes, y)]
        if self.shrinkage == "ledoit_wolf":
            from sklearn.covariance import LedoitWolf

            cov = LedoitWolf(assume_centered=True).fit(centred).covariance_
        else:
            cov = centred.T @ centred / len(x)
            cov = cov + float(self.shrinkage) * max(float(np.mean(np.diag(cov))), 1e-12) * np.eye(x.shape[1])
        self.precision = np.linalg.pinv(cov, hermitian=True)
        return self

    def distances(self, feats) -> np.ndarray:
        """``(N, C)`` squared Mahalanobis distances to every class mean."""
        if self.means is None:
            raise RuntimeError("call fit() before score()")
        x = np.asarray(feats, dtype=np.float64)
        xp, mp = x @ self.precision, self.means @ self.precision  # expanded, no (N, C, D) array
        d = (xp * x).sum(1)[:, None] - 2 * xp @ self.means.T + (mp * self.means).sum(1)[None]
        return np.maximum(d, 0.0)

    def score(self, feats) -> np.ndarray:
        """``(N,)`` scores ``-min_c d_c(x)^2``; higher = more in-distribution."""
        return -self.distances(feats).min(1)


def _scores(scores_in, scores_out) -> tuple[np.ndarray, np.ndarray]:
    s_in = np.asarray(scores_in, dtype=np.float64).reshape(-1)
    s_out = np.asarray(scores_out, dtype=np.float64).reshape(-1)
    if len(s_in) == 0 or len(s_out) == 0:
        raise ValueError("need at least one in-distribution and one OOD score")
    return s_in, s_out


def fpr_at_tpr(scores_in, scores_out, tpr: float = 0.95) -> float:
    """Fraction of OOD scores ``>= t``, ``t`` the ``ceil(tpr * n_in)``-th largest in-distribution
    score (the largest threshold that accepts at least ``tpr`` of the in-distribution samples)."""
    s_in, s_out = _scores(scores_in, scores_out)
    rank = max(1, math.ceil(round(tpr * len(s_in), 9)))
    threshold = np.sort(s_in)[::-1][rank - 1]
    return float(np.mean(s_out >= threshold))


def ood_metrics(scores_in, scores_out) -> dict[str, float]:
    """AUROC, AUPR-In, AUPR-Out and FPR95 (conventions in the module doc).

    Args:
        scores_in: ``(N_in,)`` scores of in-distribution test samples.
        scores_out: ``(N_out,)`` scores of OOD samples.

    Returns:
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}``.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    s_in, s_out = _scores(scores_in, scores_out)
    y = np.r_[np.ones(len(s_in)), np.zeros(len(s_out))]
    s = np.r_[s_in, s_out]
    return {
        "auroc": float(roc_auc_score(y, s)),
        "aupr_in": float(average_precision_score(y, s)),
        "aupr_out": float(average_precision_score(1 - y, -s)),
        "fpr95": fpr_at_tpr(s_in, s_out, 0.95),
    }


def roc_curve_points(scores_in, scores_out, max_points: int = 200) -> dict[str, list[float]]:
    """ROC curve (in-distribution positive) thinned to at most ``max_points`` points, for plots
    and for storing in ``results.json``.

    Args:
        scores_in: in-distribution scores.
        scores_out: OOD scores.
        max_points: most points kept (evenly spaced along sklearn's curve, ends included).

    Returns:
        ``{"fpr": [...], "tpr": [...]}`` from ``(0, 0)`` to ``(1, 1)``.
    """
    from sklearn.metrics import roc_curve

    s_in, s_out = _scores(scores_in, scores_out)
    fpr, tpr, _ = roc_curve(np.r_[np.ones(len(s_in)), np.zeros(len(s_out))], np.r_[s_in, s_out])
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max(max_points, 2)).round().astype(int))
        fpr, tpr = fpr[keep], tpr[keep]
    return {"fpr": [float(v) for v in fpr], "tpr": [float(v) for v in tpr]}
