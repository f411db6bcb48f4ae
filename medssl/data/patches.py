"""Patch geometry for training: where to cut a patch, and cutting it (pure numpy).

Training draws many small patches (e.g. ``96^3``) from large volumes. These functions work on any
array, in particular on the memory-mapped arrays of :mod:`medssl.data.cache`, where cutting a patch
reads only the pages it covers. Starts are integer voxel indices in the array's axis order
(``(x, y, z)`` for medssl volumes); they may be negative or run past the end, and
:func:`crop_patch` pads those parts, so a patch always has exactly the requested size.

Foreground-centred sampling follows nnU-Net's idea: a few thousand voxel coordinates of each
class are precomputed once (:meth:`medssl.data.cache.VolumeCache.foreground_locations`), and a
foreground patch is centred near one of them, so training never scans a whole label map.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["crop_patch", "random_patch_start", "sample_patch_start"]


def _as_int_tuple(values: Sequence[int] | np.ndarray, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of integers, got {values!r}") from exc


def _check_sizes(shape: tuple[int, ...], size: tuple[int, ...]) -> None:
    if len(shape) != len(size):
        raise ValueError(f"patch size {size} has {len(size)} axes, the volume shape {shape} has {len(shape)}")
    if any(s < 1 for s in size):
        raise ValueError(f"patch size must be positive along every axis, got {size}")


def crop_patch(
    array: np.ndarray,
    start: Sequence[int],
    size: Sequence[int],
    pad_value: float = 0,
) -> np.ndarray:
    """Copy the box ``array[start : start + size]``, padding the parts outside the array.

    Args:
        array: the volume, spatial shape ``(X, Y, Z)`` (any number of spatial axes), optionally
            with leading channel axes ``(C, X, Y, Z)``: the last ``len(size)`` axes are cropped,
            leading axes are kept whole. A ``np.memmap`` is read only where the box covers it.
        start: first voxel of the box along each spatial axis; may be negative or run past the
            end of the array.
        size: box size along each spatial axis.
        pad_value: value of voxels outside the array (e.g. ``-1024`` for CT in HU). Must be
            representable in ``array.dtype``.

    Returns:
        A new C-contiguous array (never a view, never a ``memmap``) of shape
        ``array.shape[:-len(size)] + tuple(size)`` and the dtype of ``array``.

    Raises:
        ValueError: ``start``/``size`` do not match the array's spatial axes or ``size`` is not
            positive.
    """
    size_t = _as_int_tuple(size, "size")
    start_t = _as_int_tuple(start, "start")
    n = len(size_t)
    if len(start_t) != n:
        raise ValueError(f"start {start_t} and size {size_t} have different lengths")
    if array.ndim < n:
        raise ValueError(f"cannot cut a {n}D patch from an array of shape {array.shape}")
    lead = tuple(array.shape[: array.ndim - n])
    spatial = tuple(int(s) for s in array.shape[array.ndim - n :])
    _check_sizes(spatial, size_t)

    src, dst = [], []
    inside = True
    empty = False
    for st, sz, dim in zip(start_t, size_t, spatial):
        lo, hi = max(st, 0), min(st + sz, dim)
        if hi <= lo:
            empty = True
            break
        if lo != st or hi != st + sz:
            inside = False
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))

    keep = (slice(None),) * len(lead)
    if not empty and inside:
        # np.array(copy=True, subok=False) gives a plain C-ordered ndarray even from a memmap.
        return np.array(array[keep + tuple(src)], order="C", copy=True)
    out = np.full(lead + size_t, pad_value, dtype=array.dtype)
    if not empty:
        out[keep + tuple(dst)] = array[keep + tuple(src)]
    return out


def random_patch_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator | int | None,
    center: Sequence[int] | None = None,
    jitter: float = 0.25,
) -> tuple[int, ...]:
    """A random start for a patch of ``size`` in a volume of ``shape``.

    Along each axis where the volume is at least as large as the patch, the patch lies fully
    inside the volume. Along an axis where the volume is smaller, the patch is centred on the
    volume (start ``-((size - shape) // 2)``; :func:`crop_patch` pads the rest).

    Without ``center`` the start is uniform over all inside positions. With ``center`` the patch
    is centred on it, shifted by a uniform random offset of up to ``jitter * size`` voxels per
    axis, then moved (if needed) to lie inside the volume; the patch always contains ``center``.

    Args:
        shape: spatial shape of the volume, e.g. ``(X, Y, Z)``.
        size: patch size, same number of axes.
        rng: a ``numpy.random.Generator`` (or a seed for one).
        center: optional voxel that the patch must contain, inside the volume.
        jitter: largest random offset of the centre, as a fraction of the patch size (``0``:
            the centre voxel is at the patch centre, ``0.5``: anywhere in the patch).

    Returns:
        The start index along each axis, as Python ints.

    Raises:
        ValueError: mismatched axes, non-positive sizes, or ``center`` outside the volume.
    """
    shape_t = _as_int_tuple(shape, "shape")
    size_t = _as_int_tuple(size, "size")
    _check_sizes(shape_t, size_t)
    if not 0.0 <= jitter <= 0.5:
        raise ValueError(f"jitter must be in [0, 0.5], got {jitter}")
    rng = np.random.default_rng(rng)
    if center is not None:
        center_t = _as_int_tuple(center, "center")
        if len(center_t) != len(shape_t):
            raise ValueError(f"center {center_t} has {len(center_t)} axes, the shape {shape_t} has {len(shape_t)}")
        if any(not 0 <= c < d for c, d in zip(center_t, shape_t)):
            raise ValueError(f"center {center_t} lies outside the volume of shape {shape_t}")

    starts = []
    for axis, (dim, sz) in enumerate(zip(shape_t, size_t)):
        if dim < sz:
            # The whole axis fits in the patch: centre it (and so also contain any centre voxel).
            starts.append(-((sz - dim) // 2))
            continue
        last = dim - sz  # largest start that keeps the patch inside
        if center is None:
            starts.append(int(rng.integers(0, last + 1)))
            continue
        c = center_t[axis]
        j = int(jitter * sz)
        st = c - sz // 2 + int(rng.integers(-j, j + 1))
        st = min(max(st, c - sz + 1), c)  # contain the centre voxel
        st = min(max(st, 0), last)  # stay inside (keeps containment since 0 <= c < dim)
        starts.append(st)
    return tuple(starts)


def sample_patch_start(
    shape: Sequence[int],
    size: Sequence[int],
    rng: np.random.Generator | int | None,
    fg_locations: Mapping[int, np.ndarray] | None = None,
    fg_fraction: float = 0.5,
    jitter: float = 0.25,
) -> tuple[int, ...]:
    """A patch start that is foreground-centred with probability ``fg_fraction``, else uniform.

    For a foreground patch, a class is chosen uniformly among the classes that have locations
    (so rare classes are sampled as often as large ones, as in nnU-Net), then one of its
    locations, and :func:`random_patch_start` is called with it as ``center``.

    Args:
        shape: spatial shape of the volume.
        size: patch size.
        rng: a ``numpy.random.Generator`` (or a seed for one).
        fg_locations: ``{class: (n, ndim) int array of voxel coordinates}``, e.g. from
            :meth:`medssl.data.cache.VolumeCache.foreground_locations`. ``None`` or no
            non-empty class: always uniform.
        fg_fraction: probability of a foreground-centred patch, in ``[0, 1]``.
        jitter: see :func:`random_patch_start`.

    Returns:
        The start index along each axis, as Python ints.
    """
    if not 0.0 <= fg_fraction <= 1.0:
        raise ValueError(f"fg_fraction must be in [0, 1], got {fg_fraction}")
    rng = np.random.default_rng(rng)
    classes = sorted(c for c, locs in (fg_locations or {}).items() if len(locs))
    if classes and rng.random() < fg_fraction:
        locs = fg_locations[classes[int(rng.integers(len(classes)))]]
        center = locs[int(rng.integers(len(locs)))]
        return random_patch_start(shape, size, rng, center=center, jitter=jitter)
    return random_patch_start(shape, size, rng, jitter=jitter)
