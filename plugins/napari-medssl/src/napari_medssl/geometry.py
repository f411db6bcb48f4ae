"""World coordinates for napari: the voxel-to-world affine of a medssl volume.

medssl arrays are ``(x, y, z)`` with an LPS ``origin``, ``spacing`` and ``direction``
(:class:`medssl.data.volume.Volume`). napari shows the last two array axes as the screen plane,
so layers get the array transposed to ``(z, y, x)`` (a view, no copy: axial slices, rows y,
columns x) and the matching affine, whose world axes are LPS in reverse order ``(S, P, L)``.
Measurements in napari are then in mm, and every layer of a case lines up with the others.
"""

from __future__ import annotations

import numpy as np

#: reverses (x, y, z) <-> (z, y, x)
_REVERSE = np.eye(3)[::-1]


def to_display(array: np.ndarray) -> np.ndarray:
    """``(X, Y, Z)`` -> ``(Z, Y, X)`` as a view (writes go through to ``array``)."""
    return array.transpose(2, 1, 0)


def from_display(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_display`."""
    return array.transpose(2, 1, 0)


def world_affine(spacing, origin, direction) -> np.ndarray:
    """``(4, 4)`` affine taking a ``(z, y, x)`` display index to world ``(S, P, L)`` mm.

    World LPS of index ``(i, j, k)`` is ``origin + direction @ diag(spacing) @ (i, j, k)``; the
    affine is that map with both sides reversed.
    """
    lin = np.asarray(direction, dtype=np.float64).reshape(3, 3) @ np.diag(np.asarray(spacing, dtype=np.float64))
    out = np.eye(4)
    out[:3, :3] = _REVERSE @ lin @ _REVERSE
    out[:3, 3] = _REVERSE @ np.asarray(origin, dtype=np.float64)
    return out


def volume_affine(vol) -> np.ndarray:
    """:func:`world_affine` of a :class:`~medssl.data.volume.Volume`."""
    return world_affine(vol.spacing, vol.origin, vol.direction)
