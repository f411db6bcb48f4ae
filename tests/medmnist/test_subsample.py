"""Class-balanced label subsets."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.medmnist.subsample import class_balanced_subset, class_count

# BreastMNIST-like training labels: 399 of class 1, 147 of class 0 (546), shuffled.
BREAST = np.random.default_rng(123).permutation(np.r_[np.zeros(147, int), np.ones(399, int)])[:, None]


@pytest.mark.parametrize(
    "fraction, expected",
    # half-up rounding by hand: 1 %: 399 * 0.01 = 3.99 -> 4, 147 * 0.01 = 1.47 -> 1;
    # 10 %: 39.9 -> 40, 14.7 -> 15.
    [(0.01, {0: 1, 1: 4}), (0.1, {0: 15, 1: 40}), (1.0, {0: 147, 1: 399})],
)
def test_exact_counts_per_class(fraction, expected):
    idx = class_balanced_subset(BREAST, fraction, seed=0)
    values, counts = np.unique(BREAST[idx, 0], return_counts=True)
    assert dict(zip(values.tolist(), counts.tolist())) == expected
    assert len(np.unique(idx)) == len(idx) and np.all(np.diff(idx) > 0)


def test_full_fraction_is_every_index():
    np.testing.assert_array_equal(class_balanced_subset(BREAST, 1.0, seed=5), np.arange(546))


def test_rounding_rule_and_floor():
    assert class_count(150, 0.01) == 2  # 1.5 rounds half-up, not to even
    assert class_count(250, 0.01) == 3  # 2.5 -> 3
    assert class_count(20, 0.01) == 1  # 0.2 -> 0, raised to min_per_class
    assert class_count(20, 0.01, min_per_class=5) == 5
    assert class_count(3, 0.01, min_per_class=5) == 3  # capped by the class size


def test_every_class_kept_even_rare_ones():
    labels = np.r_[np.zeros(1000, int), np.ones(30, int), np.full(2, 2)]
    idx = class_balanced_subset(labels, 0.01, seed=0)
    assert sorted(np.unique(labels[idx]).tolist()) == [0, 1, 2]
    assert np.bincount(labels[idx]).tolist() == [10, 1, 1]


def test_deterministic_per_seed_and_seeds_differ():
    a = class_balanced_subset(BREAST, 0.1, seed=7)
    np.testing.assert_array_equal(a, class_balanced_subset(BREAST, 0.1, seed=7))
    assert not np.array_equal(a, class_balanced_subset(BREAST, 0.1, seed=8))


def test_nested_over_fractions_for_one_seed():
    small, large = class_balanced_subset(BREAST, 0.01, 3), class_balanced_subset(BREAST, 0.1, 3)
    assert set(small) <= set(large)


def test_multilabel_strata_and_every_label_present():
    rng = np.random.default_rng(0)
    labels = (rng.random((2000, 5)) < [0.5, 0.2, 0.05, 0.01, 0.002]).astype(int)
    idx = class_balanced_subset(labels, 0.01, seed=1)
    sub = labels[idx]
    assert (sub.sum(0) >= 1).all() and ((1 - sub).sum(0) >= 1).all()  # both values of every label
    assert 15 <= len(idx) <= 30  # about 1 % of 2000 plus a few top-ups
    np.testing.assert_array_equal(idx, class_balanced_subset(labels, 0.01, seed=1))
    # the all-negative label set is the largest stratum and keeps about 1 % of itself
    none = (labels.sum(1) == 0).sum()
    assert abs((sub.sum(1) == 0).sum() - 0.01 * none) <= 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="fraction"):
        class_balanced_subset(BREAST, 0.0, seed=0)
    with pytest.raises(ValueError, match="shape"):
        class_balanced_subset(np.zeros((2, 2, 2)), 0.5, seed=0)
