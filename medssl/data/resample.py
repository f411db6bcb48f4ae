"""Reorientation and resampling of volumes, and the exact way back to a scan's own grid.

Everything goes through SimpleITK (a well-kept resampler that honours spacing, origin and direction
cosines; a hand-written one would repeat its edge cases). Arrays stay ``(x, y, z)`` as everywhere in
medssl; SimpleITK's ``(z, y, x)`` order is converted here and nowhere else.

Forward (:func:`to_grid`): reorient by axis permutation and flips only (no interpolation) so the
array axes point to patient Left, Posterior, Superior as nearly as the scan allows (an oblique scan
keeps its residual rotation in ``direction``), then resample to the target spacing in that frame.
Back (:func:`from_grid`): resample onto the reoriented input grid, then undo the permutation and
flips: the result has the input's exact shape, spacing, origin and direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from medssl.data.volume import Volume

#: the canonical orientation: SimpleITK's DICOMOrient code whose direction is the identity
#: (array axes towards patient Left, Posterior, Superior; nibabel's RAS+ code of it is "LPS")
CANONICAL = "LPS"

#: interpolation orders: 0 nearest (labels), 1 linear, 3 B-spline
_INTERP = {0: "sitkNearestNeighbor", 1: "sitkLinear", 3: "sitkBSpline"}


def to_sitk(vol: Volume, array: np.ndarray | None = None):
    """A SimpleITK image of ``vol`` (or of ``array`` with ``vol``'s geometry)."""
    import SimpleITK as sitk

    arr = vol.array if array is None else array
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(arr).transpose(2, 1, 0)))
    img.SetSpacing([float(s) for s in vol.spacing])
    img.SetOrigin([float(o) for o in vol.origin])
    img.SetDirection([float(d) for d in np.asarray(vol.direction).reshape(-1)])
    return img


def from_sitk(img, meta: dict | None = None) -> Volume:
    """A :class:`Volume` of a 3D SimpleITK image."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    return Volume(np.asarray(arr), img.GetSpacing(), img.GetOrigin(), np.asarray(img.GetDirection()).reshape(3, 3),
                  dict(meta or {}))


def orientation_code(vol: Volume) -> str:
    """SimpleITK's DICOMOrient code of ``vol``'s axes (``"LPS"`` for the identity direction)."""
    import SimpleITK as sitk

    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in vol.direction.reshape(-1)])


@dataclass(frozen=True)
class GridMap:
    """How a scan was brought onto a planned grid, to go back exactly.

    Attributes:
        source: the input's geometry (``Volume.geometry_dict`` without orientation).
        code: the input's orientation code (undone last on the way back).
        reoriented: the geometry after reorientation, before resampling.
    """

    source: dict
    code: str
    reoriented: dict


def _geom(vol: Volume) -> dict:
    return {"shape": list(vol.shape), "spacing": list(vol.spacing), "origin": list(vol.origin),
            "direction": np.asarray(vol.direction).reshape(-1).tolist()}


def target_shape(shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]) -> tuple[int, int, int]:
    """The shape that covers the same extent at ``target`` spacing (at least one voxel per axis)."""
    return tuple(max(1, int(round(n * s / t))) for n, s, t in zip(shape, spacing, target))


def to_grid(vol: Volume, spacing: Sequence[float] | None, order: int = 1, orient: bool = True) -> tuple[Volume, GridMap]:
    """``vol`` reoriented to :data:`CANONICAL` (``orient``) and resampled to ``spacing`` (``None``:
    keep the voxel size) with interpolation ``order`` (0 for labels).

    Returns:
        The volume on the new grid (float32 for order > 0, the input dtype for order 0) and the
        :class:`GridMap` that :func:`from_grid` needs.
    """
    import SimpleITK as sitk

    code = orientation_code(vol)
    img = to_sitk(vol)
    if orient and code != CANONICAL:
        img = sitk.DICOMOrient(img, CANONICAL)
    reoriented = from_sitk(img)
    gm = GridMap(source=_geom(vol), code=code if orient else CANONICAL, reoriented=_geom(reoriented))
    if spacing is None or np.allclose(img.GetSpacing(), spacing, rtol=0, atol=1e-6):
        return reoriented.with_array(reoriented.array, **vol.meta), gm
    size = target_shape(img.GetSize(), img.GetSpacing(), spacing)
    # the new grid covers the same extent: its first voxel centre moves by half the size change
    origin = np.asarray(img.GetOrigin()) + np.asarray(img.GetDirection()).reshape(3, 3) @ (
        (np.asarray(spacing) - np.asarray(img.GetSpacing())) / 2.0)
    pixel = img.GetPixelID() if order == 0 else sitk.sitkFloat32
    out = sitk.Resample(img, [int(s) for s in size], sitk.Transform(), getattr(sitk, _INTERP[order]),
                        [float(o) for o in origin], [float(s) for s in spacing], img.GetDirection(), 0.0, pixel)
    return from_sitk(out, vol.meta), gm


def from_grid(array: np.ndarray, grid: Volume, gm: GridMap, order: int = 1) -> np.ndarray:
    """``array`` (on ``grid``, the planned grid; ``(X, Y, Z)`` or ``(C, X, Y, Z)``) on the input's
    own grid: resampled onto the reoriented input grid (``order``: 1 for probabilities, 0 for
    labels), then the reorientation undone. Shape ``(*source shape)`` or ``(C, *source shape)``."""
    import SimpleITK as sitk

    arr = np.asarray(array)
    if arr.ndim == 4:
        return np.stack([from_grid(a, grid, gm, order) for a in arr])
    ref = Volume(np.zeros(gm.reoriented["shape"], np.uint8), gm.reoriented["spacing"], gm.reoriented["origin"],
                 np.asarray(gm.reoriented["direction"]).reshape(3, 3))
    img = to_sitk(grid, arr)
    if tuple(arr.shape) != tuple(gm.reoriented["shape"]) or not np.allclose(grid.spacing, ref.spacing, atol=1e-6):
        pixel = img.GetPixelID() if order == 0 else sitk.sitkFloat32
        img = sitk.Resample(img, to_sitk(ref), sitk.Transform(), getattr(sitk, _INTERP[order]), 0.0, pixel)
    if gm.code != CANONICAL:
        img = sitk.DICOMOrient(img, gm.code)
    out = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    if tuple(out.shape) != tuple(gm.source["shape"]):  # never expected: DICOMOrient is a permutation
        raise RuntimeError(f"mapping back gave shape {out.shape}, the input has {tuple(gm.source['shape'])}")
    return np.ascontiguousarray(out)
