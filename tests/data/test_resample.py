"""Reorientation and resampling to a planned grid and back: a structure stays where it is in the
world, and the way back gives the input's exact grid (LPS, RAS, oblique and anisotropic inputs)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from medssl.data.resample import CANONICAL, from_grid, orientation_code, to_grid
from medssl.data.volume import Volume


def _world_centroid(vol: Volume, mask: np.ndarray) -> np.ndarray:
    idx = np.argwhere(mask).mean(0)
    return vol.affine_lps[:3, :3] @ idx + vol.affine_lps[:3, 3]


def _scan(direction, spacing=(1.0, 1.0, 1.0), shape=(40, 36, 30), centre_world=(12.0, -7.0, 20.0), radius=6.0):
    """A ball of radius ``radius`` mm centred at ``centre_world`` (LPS mm) on a grid centred near it."""
    direction = np.asarray(direction, float).reshape(3, 3)
    spacing = np.asarray(spacing, float)
    half = direction @ (spacing * (np.asarray(shape) - 1) / 2.0)
    origin = np.asarray(centre_world) + np.array([3.0, -2.0, 1.0]) - half  # ball a little off centre
    vol = Volume(np.zeros(shape, np.uint8), spacing, origin, direction)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ (direction @ np.diag(spacing)).T + origin
    inside = np.linalg.norm(world - centre_world, axis=1) <= radius
    return vol.with_array(inside.reshape(shape).astype(np.uint8)), np.asarray(centre_world)


OBLIQUE = Rotation.from_euler("xyz", [20, -10, 35], degrees=True).as_matrix()
CASES = {
    "LPS": (np.eye(3), (1.0, 1.0, 1.0)),
    "RAS": (np.diag([-1.0, -1.0, 1.0]), (1.0, 1.0, 1.0)),
    "permuted": (np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float), (0.8, 1.2, 1.0)),
    "oblique": (OBLIQUE, (1.0, 1.0, 1.0)),
    "anisotropic": (np.diag([-1.0, -1.0, 1.0]), (0.7, 0.7, 4.0)),
}


@pytest.mark.parametrize("name", list(CASES))
def test_centroid_survives_the_plan_and_the_way_back(name):
    direction, spacing = CASES[name]
    shape = (40, 36, 8) if name == "anisotropic" else (40, 36, 30)
    vol, centre = _scan(direction, spacing, shape)
    assert np.linalg.norm(_world_centroid(vol, vol.array > 0) - centre) < 0.6

    planned, gm = to_grid(vol, (1.5, 1.5, 1.5), order=0)
    assert np.allclose(planned.spacing, 1.5)
    if name != "oblique":  # axis-aligned scans end in the canonical orientation exactly
        assert orientation_code(planned) == CANONICAL and np.allclose(planned.direction, np.eye(3))
    assert np.linalg.norm(_world_centroid(planned, planned.array > 0) - centre) < 1.0

    back = from_grid(planned.array, planned, gm, order=0)
    assert back.shape == vol.shape
    assert np.linalg.norm(_world_centroid(vol, back > 0) - centre) < 1.0
    dice = 2 * np.logical_and(back > 0, vol.array > 0).sum() / ((back > 0).sum() + (vol.array > 0).sum())
    assert dice > (0.6 if name == "anisotropic" else 0.85)


def test_probabilities_go_back_before_the_argmax():
    vol, _ = _scan(np.diag([-1.0, -1.0, 1.0]), (0.7, 0.7, 4.0), (40, 36, 8))
    planned, gm = to_grid(vol.with_array(vol.array.astype(np.float32)), (1.5, 1.5, 1.5), order=1)
    probs = np.stack([1.0 - planned.array, planned.array]).astype(np.float32)
    back = from_grid(probs, planned, gm, order=1)
    assert back.shape == (2, *vol.shape)
    np.testing.assert_allclose(back.sum(0)[back.sum(0) > 0], 1.0, atol=1e-4)  # still a distribution


def test_no_spacing_keeps_voxels_and_only_reorients():
    vol, _ = _scan(np.diag([-1.0, -1.0, 1.0]))
    planned, gm = to_grid(vol, None)
    assert planned.shape == vol.shape and np.array_equal(planned.array, vol.array[::-1, ::-1, :])
    assert np.array_equal(from_grid(planned.array, planned, gm, order=0), vol.array)


def _sitk_resample(arr, src, dst, order):
    """SimpleITK's resampler on the same grids: the reference the separable path must equal."""
    import SimpleITK as sitk

    from medssl.data import resample

    img = resample._xyz_image(arr, src["spacing"], src["origin"], src["direction"])
    pixel = img.GetPixelID() if order == 0 else sitk.sitkFloat32
    direction = np.asarray(dst["direction"], float).reshape(3, 3)[:, ::-1].reshape(-1).tolist()
    out = sitk.Resample(img, [int(n) for n in dst["shape"][::-1]], sitk.Transform(),
                        sitk.sitkLinear if order else sitk.sitkNearestNeighbor, list(dst["origin"]),
                        [float(s) for s in dst["spacing"][::-1]], direction, 0.0, pixel)
    return sitk.GetArrayFromImage(out)


@pytest.mark.parametrize("k", range(6))
def test_separable_resampling_equals_simpleitk(k):
    """Parallel grids are resampled in three 1-D passes; values, the zero border beyond half a
    voxel and nearest-neighbour ties equal SimpleITK's on random grids, flips and permutations."""
    from medssl.data.resample import _axis_map, _resample_separable

    rng = np.random.default_rng(k)
    perm = np.array([[0, 0, 1], [1, 0, 0], [0, -1, 0]], float)
    d_src = [np.eye(3), np.diag([-1.0, -1.0, 1.0]), perm][k % 3]
    d_dst = [np.eye(3), perm @ np.diag([1.0, -1.0, 1.0])][k // 3]
    grid = lambda d, lo, hi: {"shape": [int(v) for v in rng.integers(lo, hi, 3)],  # noqa: E731
                              "spacing": rng.uniform(0.5, 3, 3).tolist(), "origin": rng.uniform(-5, 5, 3).tolist(),
                              "direction": d.reshape(-1).tolist()}
    src, dst = grid(d_src, 7, 30), grid(d_dst, 7, 40)
    axes, _ = _axis_map(src["direction"], dst["direction"])
    arr = rng.random(src["shape"]).astype(np.float32)
    ours = _resample_separable(arr, src, dst, axes, 1)
    ref = _sitk_resample(arr, src, dst, 1)
    assert ours.shape == ref.shape == tuple(dst["shape"])
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    assert np.array_equal(ours == 0, ref == 0) and (ref == 0).any()  # the same voxels fall outside
    lab = rng.integers(0, 4, src["shape"]).astype(np.uint8)
    out = _resample_separable(lab, src, dst, axes, 0)
    assert out.dtype == np.uint8 and np.array_equal(out, _sitk_resample(lab, src, dst, 0))


def test_resampler_takes_fortran_arrays_and_reuses_its_buffers():
    """nibabel returns Fortran-ordered arrays (processed through their transpose), and one
    resampler maps many arrays (a case's classes) through the same buffers: each call's result is
    right, whatever came before it."""
    from medssl.data.resample import SeparableResampler, _axis_map

    rng = np.random.default_rng(7)
    src = {"shape": [21, 17, 9], "spacing": [0.7, 0.8, 2.5], "origin": [1.0, 2.0, -3.0],
           "direction": np.diag([-1.0, -1.0, 1.0]).reshape(-1).tolist()}
    dst = {"shape": [12, 11, 16], "spacing": [1.3, 1.3, 1.3], "origin": [-13.0, -11.0, -3.2],
           "direction": np.eye(3).reshape(-1).tolist()}
    resampler = SeparableResampler(src, dst, _axis_map(src["direction"], dst["direction"])[0], 1)
    arrays = [rng.random(src["shape"]).astype(np.float32) for _ in range(3)]
    refs = [_sitk_resample(a, src, dst, 1) for a in arrays]
    for a, ref in zip(arrays, refs):
        np.testing.assert_allclose(resampler(a), ref, atol=1e-6)
        np.testing.assert_allclose(resampler(np.asfortranarray(a)), ref, atol=1e-6)
    ct = rng.integers(-1000, 1000, src["shape"]).astype(np.int16)  # an integer CT in, floats out
    np.testing.assert_allclose(resampler(np.asfortranarray(ct)), _sitk_resample(ct.astype(np.float32), src, dst, 1),
                               atol=1e-3)
