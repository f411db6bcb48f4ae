"""Threshold, disagreement, world geometry and appearance (pure; hand-computed expectations)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

from napari_medssl.appearance import CT_WINDOW, class_colors, contrast_limits, modality  # noqa: E402
from napari_medssl.geometry import from_display, to_display, world_affine  # noqa: E402
from napari_medssl.overlays import disagreement, merge_thresholded, threshold_label  # noqa: E402


def test_threshold_hides_uncertain_voxels_and_merge_keeps_them():
    label = np.array([[[1, 2, 0, 1]]], np.uint8)
    unc = np.array([[[0.1, 0.6, 0.9, 0.5]]], np.float32)
    shown = threshold_label(label, unc, 0.5)
    assert shown.tolist() == [[[1, 0, 0, 1]]] and shown.dtype == np.uint8
    assert threshold_label(label, unc, 1.0).tolist() == label.tolist()
    assert threshold_label(label, None, 0.2).tolist() == label.tolist()
    # the reviewer erases voxel 0 (visible) and paints class 2 into voxel 2 (hidden)
    edited = np.array([[[0, 0, 2, 1]]], np.uint8)
    merged = merge_thresholded(edited, label, unc, 0.5)
    assert merged.tolist() == [[[0, 2, 2, 1]]]  # voxel 1: hidden, kept; voxel 2: painted wins
    with pytest.raises(ValueError, match="shape"):
        threshold_label(label, unc[..., :2], 0.5)


def test_disagreement_mask():
    a = np.array([[[0, 1, 1, 2]]], np.uint8)
    b = np.array([[[0, 1, 0, 2]]], np.uint8)
    c = np.array([[[0, 1, 1, 1]]], np.uint8)
    assert disagreement([a, b, c]).tolist() == [[[False, False, True, True]]]
    assert not disagreement([a]).any()
    assert disagreement([a, a], fused=b).tolist() == [[[False, False, True, False]]]
    with pytest.raises(ValueError, match="shapes"):
        disagreement([a, a[..., :2]])


def test_world_affine_places_voxels_in_mm():
    spacing, origin = (0.8, 1.2, 3.0), (10.0, -20.0, 5.0)
    direction = np.diag([1.0, -1.0, 1.0])
    aff = world_affine(spacing, origin, direction)
    # display index (z, y, x) = (2, 3, 4) is array index (4, 3, 2): LPS = origin + D @ (s * idx)
    lps = np.array(origin) + direction @ (np.array(spacing) * np.array([4, 3, 2]))
    world = aff @ np.array([2, 3, 4, 1.0])
    assert world[:3] == pytest.approx(lps[::-1])  # world axes are (S, P, L)
    arr = np.arange(24).reshape(2, 3, 4)
    assert to_display(arr).shape == (4, 3, 2) and to_display(arr)[3, 2, 1] == arr[1, 2, 3]
    assert np.shares_memory(to_display(arr), arr) and (from_display(to_display(arr)) == arr).all()


def test_contrast_and_colours(tmp_path):
    img = np.linspace(0, 1000, 8000, dtype=np.float32).reshape(20, 20, 20)
    lo, hi = contrast_limits(img, "MRI")
    assert lo == pytest.approx(5.0, abs=1.0) and hi == pytest.approx(995.0, abs=1.0)
    assert contrast_limits(img, "ct") == CT_WINDOW
    assert contrast_limits(np.zeros((4, 4, 4))) == (0.0, 1.0)
    (tmp_path / "dataset.json").write_text('{"channel_names": {"0": "CT"}}')
    assert modality(tmp_path) == "CT" and modality(tmp_path / "nope") is None
    colors = class_colors(10)
    assert colors[0][3] == 0.0 and colors[1] != colors[2] and colors[1] == colors[8]  # 7 colours, cycled
