"""Class-balanced label subsets for the 1 / 10 / 100 % label-fraction protocol.

A label fraction ``f`` keeps, in every class ``c`` with ``n_c`` training samples,

    k_c = min(n_c, max(min_per_class, floor(f * n_c + 1/2)))

samples, drawn without replacement. The rounding is half-up (not Python's half-to-even ``round``),
so the counts are easy to state by hand: BreastMNIST's 546 training images, two classes of 399
and 147, give 3.99 -> 4 and 1.47 -> 1 at 1 % (5 images), 39.9 -> 40 and 14.7 -> 15 at 10 % (55).

Determinism and nesting: one generator ``np.random.default_rng(seed)`` draws one permutation of
every class, classes in sorted order, and the first ``k_c`` of it are kept. The permutations do not
depend on ``f``, so for a fixed seed the subsets are nested (the 1 % subset is inside the 10 %
subset), and the only effect of the seed is which samples are drawn.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["class_balanced_subset", "class_count"]


def class_count(n: int, fraction: float, min_per_class: int = 1) -> int:
    """How many of ``n`` samples of one class (or stratum) a label fraction keeps.

    Args:
        n: samples in the class.
        fraction: label fraction in (0, 1].
        min_per_class: floor on the count (capped by ``n``).

    Returns:
        ``min(n, max(min_per_class, floor(fraction * n + 0.5)))``; 0 when ``n`` is 0.
    """
    # round(., 9) first so that 0.1 * 147 = 14.700000000000001 and 0.01 * 150 = 1.5000000000000002
    # land where a human computing by hand expects them.
    k = math.floor(round(fraction * n, 9) + 0.5)
    return int(min(n, max(min_per_class, k)))


def _check(labels: np.ndarray, fraction: float, min_per_class: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 2) or len(labels) == 0:
        raise ValueError(f"labels must be a non-empty (N,) or (N, L) array, got shape {labels.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    if min_per_class < 0:
        raise ValueError(f"min_per_class must be >= 0, got {min_per_class}")
    return labels


def class_balanced_subset(labels: np.ndarray, fraction: float, seed: int, min_per_class: int = 1) -> np.ndarray:
    """Indices of a class-balanced (stratified) subset holding ``fraction`` of the labels.

    Single-label tasks (``labels`` of shape ``(N,)`` or ``(N, 1)``, as MedMNIST stores them): every
    class keeps :func:`class_count` samples, so every class present in ``labels`` stays present.

    Multi-label tasks (``labels`` of shape ``(N, L)``, 0/1): each sample's label set (the row, e.g.
    ``(0, 1, 0, 1)``) is its stratum, and each stratum keeps ``floor(f * n_s + 1/2)`` samples with
    no per-stratum minimum (ChestMNIST has hundreds of rare label combinations; one sample from
    each would swamp a 1 % subset). Afterwards, for every label (column) that has fewer than
    ``min_per_class`` positives in the subset, further samples carrying that label are added, in a
    seeded random order, until it has ``min_per_class`` (or all of them); the same is done for
    negatives. So every label keeps both values where the full set has them, which is what a
    per-label loss and per-label AUROC need. The result can therefore be a few samples larger than
    ``f * N``. Subsets of one seed are nested over fractions before this top-up, not always after.

    Args:
        labels: ``(N,)`` / ``(N, 1)`` integer class labels, or ``(N, L)`` 0/1 multi-label targets.
        fraction: label fraction in (0, 1]; 1.0 returns every index.
        seed: seed of ``np.random.default_rng``; the same seed gives the same subset.
        min_per_class: least number of samples kept per class (per label value for multi-label),
            capped by what exists.

    Returns:
        Sorted ``int64`` indices into ``labels``.

    Raises:
        ValueError: on an empty or badly shaped ``labels`` or a fraction outside (0, 1].
    """
    labels = _check(labels, fraction, min_per_class)
    n = len(labels)
    if fraction == 1.0:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if labels.ndim == 1:
        keep = []
        for c in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == c))
            keep.append(members[: class_count(len(members), fraction, min_per_class)])
        return np.sort(np.concatenate(keep)).astype(np.int64)

    binary = labels.astype(bool)
    _, stratum = np.unique(binary, axis=0, return_inverse=True)
    stratum = stratum.reshape(-1)
    chosen = np.zeros(n, dtype=bool)
    for s in range(int(stratum.max()) + 1):
        members = rng.permutation(np.flatnonzero(stratum == s))
        chosen[members[: class_count(len(members), fraction, 0)]] = True
    order = rng.permutation(n)  # drawn once, after the strata, so the strata draws do not depend on L
    for j in range(binary.shape[1]):
        for value in (True, False):
            has = binary[order, j] == value
            missing = min(min_per_class, int(has.sum())) - int((binary[chosen, j] == value).sum())
            if missing > 0:
                extra = order[has & ~chosen[order]][:missing]
                chosen[extra] = True
    return np.flatnonzero(chosen).astype(np.int64)
