"""Patch cutting and patch-start sampling (medssl.data.patches)."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.data.patches import crop_patch, random_patch_start, sample_patch_start


def _arange(shape=(4, 4, 4), dtype=np.int16) -> np.ndarray:
    return np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------------- crop_patch
def test_crop_inside_is_a_c_contiguous_copy():
    a = _arange()
    p = crop_patch(a, (1, 0, 2), (2, 3, 2))
    np.testing.assert_array_equal(p, a[1:3, 0:3, 2:4])
    assert p.flags.c_contiguous and p.dtype == np.int16
    assert not np.shares_memory(p, a)
    whole = crop_patch(a, (0, 0, 0), (4, 4, 4))  # even a box equal to the array is a copy
    assert not np.shares_memory(whole, a)


def test_crop_partly_outside_pads_by_hand():
    a = _arange()  # a[x, y, z] = 16 x + 4 y + z
    p = crop_patch(a, (-1, 2, 3), (2, 3, 2), pad_value=-7)
    # x = -1 (pad), 0; y = 2, 3, 4 (pad); z = 3, 4 (pad)
    expected = np.array(
        [
            [[-7, -7], [-7, -7], [-7, -7]],
            [[11, -7], [15, -7], [-7, -7]],
        ],
        dtype=np.int16,
    )
    np.testing.assert_array_equal(p, expected)
    assert p.shape == (2, 3, 2) and p.dtype == np.int16 and p.flags.c_contiguous


def test_crop_fully_outside_is_all_padding_and_larger_than_array():
    a = _arange()
    np.testing.assert_array_equal(crop_patch(a, (10, 0, 0), (2, 2, 2), pad_value=5), np.full((2, 2, 2), 5))
    big = crop_patch(a, (-1, -1, -1), (6, 6, 6))
    assert big.shape == (6, 6, 6)
    np.testing.assert_array_equal(big[1:5, 1:5, 1:5], a)
    assert big.sum() == a.sum()  # the border is pad_value 0


def test_crop_fortran_ordered_memmap(tmp_path):
    a = np.asfortranarray(_arange((5, 6, 7), np.float32))
    np.save(tmp_path / "a.npy", a)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    p = crop_patch(mm, (3, -2, 1), (4, 4, 4))
    assert type(p) is np.ndarray and p.flags.c_contiguous
    ref = np.zeros((4, 4, 4), np.float32)
    ref[:2, 2:, :] = a[3:5, 0:2, 1:5]
    np.testing.assert_array_equal(p, ref)


def test_crop_keeps_leading_channel_axes():
    a = np.stack([_arange(), -_arange()])  # (2, 4, 4, 4)
    p = crop_patch(a, (3, 3, 3), (2, 2, 2))
    assert p.shape == (2, 2, 2, 2)
    assert p[0, 0, 0, 0] == a[0, 3, 3, 3] and p[1, 0, 0, 0] == a[1, 3, 3, 3]
    assert (p[:, 1] == 0).all()


def test_crop_rejects_mismatched_axes():
    with pytest.raises(ValueError):
        crop_patch(_arange(), (0, 0), (2, 2, 2))
    with pytest.raises(ValueError):
        crop_patch(_arange(), (0, 0, 0), (2, 0, 2))


# ---------------------------------------------------------------------------- random starts
def test_random_start_in_bounds_over_random_shapes():
    rng = np.random.default_rng(1234)
    for _ in range(500):
        ndim = int(rng.integers(2, 4))
        size = tuple(int(s) for s in rng.integers(1, 40, ndim))
        shape = tuple(int(s + extra) for s, extra in zip(size, rng.integers(0, 60, ndim)))
        start = random_patch_start(shape, size, rng)
        assert all(isinstance(s, int) for s in start)
        assert all(0 <= s <= d - z for s, d, z in zip(start, shape, size)), (shape, size, start)
        # with a centre: inside and containing it
        center = tuple(int(rng.integers(0, d)) for d in shape)
        start = random_patch_start(shape, size, rng, center=center, jitter=float(rng.uniform(0, 0.5)))
        assert all(0 <= s <= d - z for s, d, z in zip(start, shape, size)), (shape, size, start)
        assert all(s <= c < s + z for s, c, z in zip(start, center, size)), (shape, size, center, start)


def test_random_start_is_uniform_over_all_positions():
    rng = np.random.default_rng(0)
    starts = [random_patch_start((10, 3), (4, 3), rng)[0] for _ in range(2000)]
    counts = np.bincount(starts, minlength=7)
    assert len(counts) == 7 and counts.min() > 200  # every start 0..6 is drawn, ~286 each


def test_random_start_centres_axes_smaller_than_patch():
    rng = np.random.default_rng(0)
    for _ in range(20):
        start = random_patch_start((10, 50, 3), (16, 20, 8), rng, center=(2, 30, 1))
        assert start[0] == -3 and start[2] == -2  # (16-10)//2 and (8-3)//2 of padding before
        assert 30 - 20 < start[1] <= 30
        p = crop_patch(np.ones((10, 50, 3)), start, (16, 20, 8))
        assert p[3:13, :, 2:5].all() and p.sum() == 10 * 20 * 3


def test_random_start_center_without_jitter_is_centred():
    start = random_patch_start((100, 100, 100), (10, 20, 30), np.random.default_rng(0), center=(50, 50, 50), jitter=0)
    assert start == (45, 40, 35)
    # near the border it is pushed inside
    start = random_patch_start((100, 100, 100), (10, 20, 30), 0, center=(0, 99, 50), jitter=0)
    assert start == (0, 80, 35)


def test_random_start_rejects_center_outside():
    with pytest.raises(ValueError):
        random_patch_start((10, 10, 10), (4, 4, 4), 0, center=(10, 0, 0))


def test_sample_patch_start_fg_fraction():
    rng = np.random.default_rng(7)
    shape, size = (200, 200, 100), (16, 16, 16)
    fg = {1: np.array([[150, 150, 80]], np.int32), 2: np.zeros((0, 3), np.int32)}
    hits = 0
    for _ in range(1000):
        s = sample_patch_start(shape, size, rng, fg, fg_fraction=0.5)
        hits += all(a <= c < a + z for a, c, z in zip(s, (150, 150, 80), size))
    # foreground half always contains the voxel; a uniform start does so with p ~ 2e-4
    assert 420 < hits < 580
    always = [sample_patch_start(shape, size, rng, fg, fg_fraction=1.0) for _ in range(50)]
    assert all(all(a <= c < a + z for a, c, z in zip(s, (150, 150, 80), size)) for s in always)
    # no locations (or only empty classes): uniform, no error
    assert len(sample_patch_start(shape, size, rng, {2: np.zeros((0, 3))}, fg_fraction=1.0)) == 3
    assert len(sample_patch_start(shape, size, rng, None)) == 3


def test_sample_patch_start_is_deterministic_per_seed():
    fg = {1: np.array([[5, 5, 5], [30, 30, 30]]), 3: np.array([[50, 10, 20]])}
    a = [sample_patch_start((64, 64, 64), (8, 8, 8), np.random.default_rng(3), fg) for _ in range(5)]
    b = [sample_patch_start((64, 64, 64), (8, 8, 8), np.random.default_rng(3), fg) for _ in range(5)]
    assert a == b
