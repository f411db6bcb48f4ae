"""Shape primitives of the phantoms: a bent body-unit grid, ellipsoids, capsules, rotations.

Used by :mod:`medssl.data.phantom_case` to paint the anatomy of one case. Coordinates are in a
body unit (mm divided by a per-case scale, see :class:`Grid`), so anisotropic voxels give
physically correct shapes; work on small structures is restricted to a box of voxels.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Grid", "ellipsoid", "ellipsoid_level", "paint", "rot_y", "rot_z", "rotation", "tube"]


def rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """A random rotation ``Rz @ Ry @ Rx`` with angles uniform in ``±max_deg`` (degrees)."""
    ax, ay, az = np.deg2rad([rng.uniform(-m, m) for m in max_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def rot_z(deg: float) -> np.ndarray:
    """Rotation by ``deg`` degrees about the z axis."""
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def rot_y(deg: float) -> np.ndarray:
    """Rotation by ``deg`` degrees about the y axis."""
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


class Grid:
    """Voxel-centre coordinates in body units (mm / ``unit``), bent by a smooth displacement.

    Coordinates are centred on the volume: ``q_a = (i_a - (n_a - 1) / 2) * spacing_a / unit``.
    Shapes are evaluated on the deformed coordinates ``q + d(q)``, so one displacement field
    bends every structure consistently. Work on small structures is restricted to a box of
    voxels (:meth:`box`) so that a case costs a fraction of a second.
    """

    def __init__(self, rng: np.random.Generator, shape: tuple[int, int, int], spacing: np.ndarray, unit: float):
        self.shape = shape
        self.spacing = spacing
        self.unit = unit
        self.axes = [((np.arange(n) - (n - 1) / 2) * s / unit).astype(np.float32) for n, s in zip(shape, spacing)]
        amp = rng.uniform(0.03, 0.06)
        disp = [amp * self.waves(rng, n_waves=5, freq=1.6) for _ in range(3)]
        self.dmax = float(max(np.abs(d).max() for d in disp))
        self.q = [disp[a] + self.axes[a].reshape([-1 if b == a else 1 for b in range(3)]) for a in range(3)]

    def waves(self, rng: np.random.Generator, n_waves: int, freq: float) -> np.ndarray:
        """A smooth random field (unit variance on average): a sum of random plane waves.

        Plane waves are separable (``exp(i k.q) = exp(i kx qx) exp(i ky qy) exp(i kz qz)``), so
        each costs one full-size complex multiply. ``freq`` is in radians per body unit.
        """
        acc = np.zeros(self.shape, dtype=np.complex64)
        for _ in range(n_waves):
            k = rng.normal(size=3)
            k *= freq * rng.uniform(0.6, 1.4) / np.linalg.norm(k)
            c = rng.normal() * np.exp(1j * rng.uniform(0, 2 * np.pi))
            ex = (c * np.exp(1j * k[0] * self.axes[0])).astype(np.complex64)[:, None, None]
            ey = np.exp(1j * k[1] * self.axes[1]).astype(np.complex64)[None, :, None]
            ez = np.exp(1j * k[2] * self.axes[2]).astype(np.complex64)[None, None, :]
            acc += (ex * ey) * ez
        return acc.real / np.float32(np.sqrt(n_waves / 2))

    def box(self, center, extent) -> tuple[slice, slice, slice]:
        """Voxel slices that contain every voxel whose deformed coordinate lies in ``center ± extent``."""
        out = []
        for a in range(3):
            scale = self.unit / self.spacing[a]
            mid = (self.shape[a] - 1) / 2
            lo = int(np.floor((center[a] - extent[a] - self.dmax) * scale + mid))
            hi = int(np.ceil((center[a] + extent[a] + self.dmax) * scale + mid)) + 1
            out.append(slice(max(lo, 0), max(min(hi, self.shape[a]), 0)))
        return tuple(out)

    def local(self, box, center, rot: np.ndarray | None = None) -> list[np.ndarray]:
        """Deformed coordinates in ``box`` relative to ``center``, in the frame of ``rot``'s columns."""
        d = [self.q[a][box] - np.float32(center[a]) for a in range(3)]
        if rot is None:
            return d
        r = rot.astype(np.float32)
        return [r[0, k] * d[0] + r[1, k] * d[1] + r[2, k] * d[2] for k in range(3)]  # R^T d


def ellipsoid(grid: Grid, center, radii, rot=None, rough=None, rough_amp: float = 0.0, box=None):
    """Boolean mask (restricted to ``box``) of a rotated ellipsoid with a perturbed boundary.

    The boundary is ``sqrt(sum((u / r)^2)) + rough_amp * rough = 1``: ``rough`` is a smooth
    unit-variance field, so the radius varies by about ``rough_amp`` (relative) around the shape.
    """
    radii = np.asarray(radii, dtype=np.float64)
    if box is None:
        ext = np.full(3, radii.max() * (1 + 3 * rough_amp) + 1e-3)
        box = grid.box(center, ext)
    u = grid.local(box, center, rot)
    f = np.sqrt(sum((u[k] / np.float32(radii[k])) ** 2 for k in range(3)))
    if rough is not None and rough_amp:
        f += np.float32(rough_amp) * rough[box]
    return box, f < 1


def tube(grid: Grid, p0, p1, radius: float, box):
    """Boolean mask in ``box`` of a capsule (segment ``p0``-``p1`` with ``radius``)."""
    p0 = np.asarray(p0, dtype=np.float64)
    axis = np.asarray(p1, dtype=np.float64) - p0
    length = float(np.linalg.norm(axis))
    axis = axis / length
    d = grid.local(box, p0)
    t = np.clip(sum(np.float32(axis[k]) * d[k] for k in range(3)), 0, length)
    dist2 = sum((d[k] - t * np.float32(axis[k])) ** 2 for k in range(3))
    return dist2 < np.float32(radius**2)


def paint(tissue: np.ndarray, box, mask: np.ndarray, tissue_id: int, where: np.ndarray | None = None) -> None:
    """Set ``tissue[box][mask] = tissue_id``, optionally only where ``where[box]`` holds."""
    if where is not None:
        mask = mask & where[box]
    tissue[box][mask] = tissue_id


def ellipsoid_level(u: list[np.ndarray], shift: tuple[float, float, float], radii) -> np.ndarray:
    """``sum(((u - shift) / radii)^2)`` on local coordinates ``u``."""
    return sum(((u[k] - np.float32(shift[k])) / np.float32(radii[k])) ** 2 for k in range(3))
