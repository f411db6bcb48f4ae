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


def _xyz_image(arr: np.ndarray, spacing, origin, direction):
    """A SimpleITK image of an ``(X, Y, Z)`` C-ordered array without transposing it.

    SimpleITK's fastest axis is numpy's last, so the image's axes are taken as ``(z, y, x)``: its
    spacing and direction columns are given in that order, which leaves every voxel at the same
    world position (the direction may then be left-handed; ITK only needs it invertible). Going
    through ``(z, y, x)`` arrays instead costs two strided copies of every volume, which were most
    of the inference time on a large CT (benchmarks/bench_infer.py)."""
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(np.ascontiguousarray(arr))
    _set_xyz_geometry(img, spacing, origin, direction)
    return img


def _set_xyz_geometry(img, spacing, origin, direction) -> None:
    img.SetSpacing([float(s) for s in list(spacing)[::-1]])
    img.SetOrigin([float(o) for o in origin])
    img.SetDirection([float(d) for d in np.asarray(direction, float).reshape(3, 3)[:, ::-1].reshape(-1)])


def _resample_xyz(arr: np.ndarray, src: dict, dst: dict, order: int, border: bool = False) -> np.ndarray:
    """``arr`` on the grid ``src`` resampled in world coordinates onto the grid ``dst`` (both
    :func:`_geom` dicts), as an ``(X, Y, Z)`` array. Voxels outside ``src`` (beyond half a voxel
    from its edge voxels, as ITK counts it) get 0, or with ``border`` the value of the nearest
    edge voxel: a planned grid covers the scan's field of view to within half a planned voxel, and
    the scan's edge voxels must not come back as "no class at all" (nor flip with rounding).

    Grids whose axes are parallel (the usual case: a planned grid in the canonical orientation
    and an axis-aligned scan) take :func:`_resample_separable`; oblique ones SimpleITK."""
    import SimpleITK as sitk

    mapping = _axis_map(src["direction"], dst["direction"]) if order in (0, 1) else None
    if mapping is not None:
        return _resample_separable(arr, src, dst, mapping[0], order, border)
    img = _xyz_image(arr, src["spacing"], src["origin"], src["direction"])
    f = sitk.ResampleImageFilter()
    f.SetSize([int(n) for n in list(dst["shape"])[::-1]])
    f.SetOutputOrigin([float(o) for o in dst["origin"]])
    f.SetOutputSpacing([float(s) for s in list(dst["spacing"])[::-1]])
    f.SetOutputDirection([float(d) for d in np.asarray(dst["direction"], float).reshape(3, 3)[:, ::-1].reshape(-1)])
    f.SetInterpolator(getattr(sitk, _INTERP[order]))
    f.SetOutputPixelType(img.GetPixelID() if order == 0 else sitk.sitkFloat32)
    f.SetDefaultPixelValue(0.0)
    f.SetUseNearestNeighborExtrapolator(bool(border))
    return sitk.GetArrayFromImage(f.Execute(img))  # (X, Y, Z): the axes were given reversed


def _resample_separable(arr: np.ndarray, src: dict, dst: dict, axes: list[int], order: int,
                        border: bool = False) -> np.ndarray:
    """:func:`_resample_xyz` for grids whose axes are parallel (``dst`` axis ``j`` runs along
    ``src`` axis ``axes[j]``, either way): :class:`SeparableResampler` applied once."""
    return SeparableResampler(src, dst, axes, order, border)(arr).copy()


class SeparableResampler:
    """Resampling between two grids whose axes are parallel, as three 1-D passes.

    Trilinear interpolation of parallel grids is separable, so three passes of 1-D linear
    interpolation give what SimpleITK's resampler gives (edge voxels clamped within half a voxel,
    0 beyond, or the edge value with ``border``; nearest neighbour rounds half up as ITK does;
    tests/data/test_resample.py checks both against SimpleITK) several times faster than
    SimpleITK's general resampler, and without the dense sampling grid of torch's
    ``grid_sample`` (what MONAI's ``Spacing`` uses: three floats per output voxel, 1.9 GB for a
    512 x 512 x 600 CT). ``np.take`` gathers along an axis many times faster than torch's
    ``index_select`` on CPU. The passes and their index / weight vectors are computed once, and
    the work buffers are kept between calls: mapping K class volumes back allocates (and
    page-faults) the scan-sized buffers once, not K times. A Fortran-ordered input (what nibabel
    returns) is processed through its C-ordered transpose.

    Calling it returns an array that is valid until the next call (copy it to keep it).
    """

    #: the second gather of a linear pass is done in slabs of about this size: a 512 x 512 x 600
    #: CT then needs one scan-sized float buffer per resampler, not three
    SLAB_BYTES = 64 << 20

    def __init__(self, src: dict, dst: dict, axes: list[int], order: int, border: bool = False):
        if order not in (0, 1):
            raise ValueError(f"separable resampling takes order 0 or 1, not {order}")
        d_src = np.asarray(src["direction"], float).reshape(3, 3)
        d_dst = np.asarray(dst["direction"], float).reshape(3, 3)
        s_src, s_dst = np.asarray(src["spacing"], float), np.asarray(dst["spacing"], float)
        # continuous source index of dst voxel 0, and the step per dst voxel along each source axis
        base = np.linalg.solve(d_src, np.asarray(dst["origin"], float) - np.asarray(src["origin"], float)) / s_src
        m = np.linalg.solve(d_src, d_dst)
        n_src = [int(n) for n in src["shape"]]
        n_dst = {a: int(dst["shape"][j]) for j, a in enumerate(axes)}
        self.axes, self.order = list(axes), order
        self.passes = []  # (source axis, lo index, hi index or None, weight or None, inside mask or None)
        for a in sorted(range(3), key=lambda a: n_dst[a] / n_src[a]):  # shrinking passes first
            j = axes.index(a)
            n = n_src[a]
            c = base[a] + float(m[a, j]) * s_dst[j] / s_src[a] * np.arange(n_dst[a])
            inside = (c >= -0.5) & (c < n - 0.5)
            if border:
                if c.min() < -1.5 or c.max() > n + 0.5:  # more than a voxel beyond: not the same field of view
                    raise ValueError(f"resampling reaches {max(-c.min(), c.max() - n + 1):.1f} voxels beyond the source grid")
                inside[:] = True
            mask = None if inside.all() else inside
            if order == 0:
                self.passes.append((a, np.clip(np.floor(c + 0.5), 0, n - 1).astype(np.intp), None, None, mask))
            else:
                i0 = np.floor(c)
                self.passes.append((a, np.clip(i0, 0, n - 1).astype(np.intp), np.clip(i0 + 1, 0, n - 1).astype(np.intp),
                                    (c - i0).astype(np.float32), mask))
        self._buffers: dict = {}

    def _buffer(self, key, shape, dtype) -> np.ndarray:
        buf = self._buffers.get(key)
        if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
            buf = self._buffers[key] = np.empty(shape, dtype)
        return buf

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        t = np.asarray(arr)
        flipped = not t.flags.c_contiguous and t.flags.f_contiguous
        if flipped:  # work on the C-ordered transpose: source axis a is its axis 2 - a
            t = t.T
        elif not t.flags.c_contiguous:
            t = np.ascontiguousarray(t)
        for i, (a, lo, hi, w, mask) in enumerate(self.passes):
            ax = 2 - a if flipped else a
            shape = list(t.shape)
            shape[ax] = len(lo)
            wshape = [1, 1, 1]
            wshape[ax] = -1
            out = self._buffer(("out", i), shape, t.dtype if hi is None else np.float32)
            if t.dtype == out.dtype:
                np.take(t, lo, axis=ax, out=out, mode="clip")
            else:  # an integer CT's first pass: gathered in its own type, then converted
                out[...] = np.take(t, lo, axis=ax, mode="clip")
            if hi is not None:  # out += (t[hi] - out) * w, in slabs: no second scan-sized buffer
                k = 0 if ax != 0 else 1
                step = max(1, int(self.SLAB_BYTES // max(1, out.nbytes // shape[k])))
                for s0 in range(0, shape[k], step):
                    sl = [slice(None)] * 3
                    sl[k] = slice(s0, s0 + step)
                    sl = tuple(sl)
                    part = out[sl]
                    diff = np.subtract(np.take(t[sl], hi, axis=ax, mode="clip"), part, dtype=np.float32)
                    diff *= w.reshape(wshape)
                    part += diff
            if mask is not None:
                out *= mask.reshape(wshape).astype(out.dtype)
            t = out
        # t's source axis a has dst axis j's length (a = axes[j]): bring the axes into dst's order
        view = (t.T if flipped else t).transpose(self.axes)
        if view.flags.c_contiguous:
            return view
        final = self._buffer("final", view.shape, view.dtype)
        np.copyto(final, view)
        return final


def _axis_map(d_from: np.ndarray, d_to: np.ndarray) -> tuple[list[int], list[bool]] | None:
    """How the axes of a grid with direction ``d_from`` become those of a grid with direction
    ``d_to`` over the same voxels: ``(axes, flips)`` with output axis ``j`` = input axis
    ``axes[j]``, reversed where ``flips[j]``; ``None`` when the two are not a signed permutation
    of each other."""
    m = np.linalg.solve(np.asarray(d_from, float).reshape(3, 3), np.asarray(d_to, float).reshape(3, 3))
    axes = [int(np.argmax(np.abs(m[:, j]))) for j in range(3)]
    if sorted(axes) != [0, 1, 2] or any(abs(abs(m[a, j]) - 1.0) > 1e-3 for j, a in enumerate(axes)):
        return None
    return axes, [bool(m[a, j] < 0) for j, a in enumerate(axes)]


def _apply_axis_map(arr: np.ndarray, axes: list[int], flips: list[bool]) -> np.ndarray:
    out = np.transpose(arr, axes)
    out = out[tuple(slice(None, None, -1) if f else slice(None) for f in flips)]
    return np.ascontiguousarray(out)


def _canonical_geometry(vol: Volume) -> tuple[dict, list[int], list[bool]]:
    """The geometry of ``vol`` reoriented to :data:`CANONICAL` by an axis permutation and flips
    (no interpolation), and that permutation. Each world axis (L, P, S) takes the array axis most
    nearly parallel to it, largest cosine first (what ITK's DICOMOrient does for all but
    near-45-degree obliques), pointing along it."""
    d = np.asarray(vol.direction, float).reshape(3, 3)
    axes: list[int | None] = [None, None, None]
    used: set[int] = set()
    for flat in np.argsort(-np.abs(d), axis=None):
        world, axis = divmod(int(flat), 3)
        if axes[world] is None and axis not in used:
            axes[world] = axis
            used.add(axis)
    flips = [bool(d[w, a] < 0) for w, a in enumerate(axes)]
    shape, spacing = np.asarray(vol.shape), np.asarray(vol.spacing, float)
    first = np.array([shape[a] - 1 if f else 0 for a, f in sorted(zip(axes, flips))], float)
    origin = np.asarray(vol.origin, float) + d @ (spacing * first)
    direction = np.stack([d[:, a] * (-1.0 if f else 1.0) for a, f in zip(axes, flips)], 1)
    geom = {"shape": [int(shape[a]) for a in axes], "spacing": [float(spacing[a]) for a in axes],
            "origin": origin.tolist(), "direction": direction.reshape(-1).tolist()}
    return geom, axes, flips


def to_grid(vol: Volume, spacing: Sequence[float] | None, order: int = 1, orient: bool = True) -> tuple[Volume, GridMap]:
    """``vol`` reoriented to :data:`CANONICAL` (``orient``) and resampled to ``spacing`` (``None``:
    keep the voxel size) with interpolation ``order`` (0 for labels).

    Reorientation alone is an exact axis permutation and flips; with resampling, the source is
    resampled once, in world coordinates, straight onto the reoriented grid at the new spacing.

    Returns:
        The volume on the new grid (float32 for order > 0, the input dtype for order 0) and the
        :class:`GridMap` that :func:`from_grid` needs.
    """
    code = orientation_code(vol)
    source = _geom(vol)
    if orient:
        reoriented, axes, flips = _canonical_geometry(vol)
    else:
        reoriented, axes, flips = source, [0, 1, 2], [False, False, False]
    gm = GridMap(source=source, code=code if orient else CANONICAL, reoriented=reoriented)
    if spacing is None or np.allclose(reoriented["spacing"], spacing, rtol=0, atol=1e-6):
        arr = _apply_axis_map(np.asarray(vol.array), axes, flips)
        out = Volume(arr, reoriented["spacing"], reoriented["origin"], np.asarray(reoriented["direction"]).reshape(3, 3),
                     dict(vol.meta))
        return out, gm
    d = np.asarray(reoriented["direction"]).reshape(3, 3)
    size = target_shape(reoriented["shape"], reoriented["spacing"], spacing)
    # the new grid covers the same extent: its first voxel centre moves by half the size change
    origin = np.asarray(reoriented["origin"]) + d @ ((np.asarray(spacing, float) - np.asarray(reoriented["spacing"])) / 2.0)
    target = {"shape": list(size), "spacing": [float(s) for s in spacing], "origin": origin.tolist(),
              "direction": reoriented["direction"]}
    arr = np.asarray(vol.array)
    if order > 0 and arr.dtype != np.float32:
        arr = arr.astype(np.float32)
    out = _resample_xyz(arr, source, target, order, border=True)
    return Volume(out, target["spacing"], target["origin"], d, dict(vol.meta)), gm


def from_grid(array: np.ndarray, grid: Volume, gm: GridMap, order: int = 1) -> np.ndarray:
    """``array`` (on ``grid``, the planned grid; ``(X, Y, Z)`` or ``(C, X, Y, Z)``) on the input's
    own grid, shape ``(*source shape)`` or ``(C, *source shape)``.

    One resampling in world coordinates straight onto the input's grid (``order``: 1 for
    probabilities, 0 for labels); when ``grid`` holds the input's own voxels (no spacing change),
    the exact axis permutation and flips instead."""
    arr = np.asarray(array)
    back = back_mapper(grid, gm, order, arr.shape[-3:])
    if arr.ndim == 4:
        first = back(arr[0])
        out = np.empty((len(arr), *first.shape), first.dtype)
        out[0] = first
        for c in range(1, len(arr)):
            out[c] = back(arr[c])  # each result is valid until the next call: copied at once
        return out
    return back(arr).copy()


def back_mapper(grid: Volume, gm: GridMap, order: int = 1, shape: Sequence[int] | None = None):
    """:func:`from_grid` for many ``(X, Y, Z)`` arrays on the same grid (a case's classes, its
    uncertainty): a function ``array -> array on the input's grid`` that sets the resampling up
    once and reuses its buffers. What it returns is valid until its next call (copy to keep).

    Args:
        grid: the planned grid's volume (geometry only).
        gm: how the input was brought onto it.
        order: 1 (linear, probabilities) or 0 (nearest, labels).
        shape: the arrays' shape (default ``grid.shape``).
    """
    src = gm.source
    shape = tuple(grid.shape if shape is None else shape)
    here = {"shape": list(shape), "spacing": list(grid.spacing), "origin": list(grid.origin),
            "direction": np.asarray(grid.direction).reshape(-1).tolist()}
    same_voxels = (shape == tuple(gm.reoriented["shape"])
                   and np.allclose(grid.spacing, gm.reoriented["spacing"], atol=1e-6)
                   and np.allclose(grid.origin, gm.reoriented["origin"], atol=1e-4))
    permutation = _axis_map(grid.direction, np.asarray(src["direction"]).reshape(3, 3)) if same_voxels else None
    parallel = _axis_map(here["direction"], src["direction"]) if order in (0, 1) else None

    def check(out: np.ndarray) -> np.ndarray:
        if tuple(out.shape) != tuple(src["shape"]):  # never expected
            raise RuntimeError(f"mapping back gave shape {out.shape}, the input has {tuple(src['shape'])}")
        return out

    if permutation is not None:
        return lambda arr: check(_apply_axis_map(np.asarray(arr), *permutation))
    if parallel is not None:
        resampler = SeparableResampler(here, src, parallel[0], order, border=True)
        return lambda arr: check(resampler(np.asarray(arr)))

    def general(arr):
        arr = np.asarray(arr)
        return check(_resample_xyz(arr if order == 0 or arr.dtype == np.float32 else arr.astype(np.float32), here, src,
                                   order, border=True))

    return general
