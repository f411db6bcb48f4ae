"""Synthetic abdominal MRI-like phantoms: a small, deterministic 3D segmentation benchmark.

``medssl sample-data`` writes a dataset in the medssl folder format (:mod:`medssl.data.dataset`)
whose cases look, at a coarse level, like T1-weighted abdominal MRI with thick slices:

* **Anatomy**, laid out in physical (mm) coordinates scaled to the field of view, so that
  anisotropic voxels give physically correct shapes (fewer voxels across slices) and any array
  shape holds the whole abdomen: an elliptical trunk with a subcutaneous fat layer, muscle wall
  and visceral fat, a vertebral column (vertebral bodies, discs, canal, arch), aorta and inferior
  vena cava, tubular bowel loops and a stomach, and three labelled organs: a lobed **liver** (with
  intrahepatic vessels and lesions, the gallbladder carved out of it), two bean-shaped
  **kidneys** (cortex, medulla, fat-filled hilum) and a crescent-shaped **spleen**. Every
  structure gets random radii, rotation and position jitter and a smooth random boundary
  perturbation, and the whole body is bent by a low-frequency displacement field.
* **Intensities**: per-tissue means drawn per case with modest, case-dependent contrast (the
  spleen and the kidney cortex are drawn close to the liver; vessels, marrow and bowel content
  overlap the organs), per-tissue internal texture, a slight partial-volume blur, a smooth
  multiplicative bias field and Rician noise. Images are stored as ``int16`` in 0..~1000, like
  scanner MRI magnitudes. A single global intensity threshold cannot segment any organ well.
* **Geometry**: in-plane spacing 1.2-1.6 mm, slice spacing 2.5-4 mm (per case), identity LPS
  direction (array axes point to patient Left, Posterior, Superior), origin near the isocentre.

Determinism: case ``i`` of a split is generated from ``np.random.default_rng([seed, split, i])``
(``split`` = 0 train, 1 unlabeled, 2 test). The case number alone, not the number of other
cases, decides its content, so ``--labeled 8`` contains the 4 cases of ``--labeled 4`` and the
test set stays the same when the amount of labeled or unlabeled data is varied (what a
label-scarcity sweep needs). The same seed gives byte-identical arrays (with the same numpy and
scipy versions: numpy does not promise identical random streams across releases).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from medssl.data.dataset import SPLIT_FOLDERS, DatasetSpec, image_path, label_path, write_dataset_json
from medssl.core.atomic import write_atomic_text
from medssl.data.io import write_volume
from medssl.data.volume import Volume
from medssl.errors import DataError

#: Declared label values (``dataset.json`` ``labels``).
LABELS: dict[str, int] = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}

#: split -> (case-name prefix, RNG stream id). Stream ids must never change: they define the data.
SPLIT_STREAMS: dict[str, tuple[str, int]] = {"train": ("tr", 0), "unlabeled": ("ul", 1), "test": ("ts", 2)}

DEFAULT_SHAPE: tuple[int, int, int] = (96, 96, 48)
#: Smallest shape for which every organ is reliably present in every case.
MIN_SHAPE: tuple[int, int, int] = (32, 32, 16)

# Tissue ids of the internal tissue map (0 = air). Each gets a mean intensity and texture amplitude.
_AIR, _FAT, _SOFT, _VFAT, _MARROW, _DISC, _CANAL, _AORTA, _IVC, _STOMACH = range(10)
_CORTEX, _MEDULLA, _SINUS_FAT, _SPLEEN, _LIVER, _LIVER_VESSEL, _GALLBLADDER = range(10, 17)
_LESION0 = 17  # up to 3 lesions: 17..19
_BOWEL0 = 20  # up to 8 bowel loops: 20..27
_N_TISSUES = 28

_TISSUE_LABEL = np.zeros(_N_TISSUES, dtype=np.uint8)
_TISSUE_LABEL[[_LIVER, _LIVER_VESSEL, _LESION0, _LESION0 + 1, _LESION0 + 2]] = LABELS["liver"]
_TISSUE_LABEL[[_CORTEX, _MEDULLA]] = LABELS["kidney"]
_TISSUE_LABEL[_SPLEEN] = LABELS["spleen"]


@dataclass(frozen=True)
class Phantom:
    """One generated case: an ``int16`` image and its ``uint8`` label map, same geometry."""

    image: Volume
    label: Volume


# ---------------------------------------------------------------------------------- geometry
def _rotation(rng: np.random.Generator, max_deg: tuple[float, float, float]) -> np.ndarray:
    """A random rotation ``Rz @ Ry @ Rx`` with angles uniform in ``±max_deg`` (degrees)."""
    ax, ay, az = np.deg2rad([rng.uniform(-m, m) for m in max_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _rot_z(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


def _rot_y(deg: float) -> np.ndarray:
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


class _Grid:
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


def _ellipsoid(grid: _Grid, center, radii, rot=None, rough=None, rough_amp: float = 0.0, box=None):
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


def _tube(grid: _Grid, p0, p1, radius: float, box):
    """Boolean mask in ``box`` of a capsule (segment ``p0``-``p1`` with ``radius``)."""
    p0 = np.asarray(p0, dtype=np.float64)
    axis = np.asarray(p1, dtype=np.float64) - p0
    length = float(np.linalg.norm(axis))
    axis = axis / length
    d = grid.local(box, p0)
    t = np.clip(sum(np.float32(axis[k]) * d[k] for k in range(3)), 0, length)
    dist2 = sum((d[k] - t * np.float32(axis[k])) ** 2 for k in range(3))
    return dist2 < np.float32(radius**2)


def _paint(tissue: np.ndarray, box, mask: np.ndarray, tissue_id: int, where: np.ndarray | None = None) -> None:
    """Set ``tissue[box][mask] = tissue_id``, optionally only where ``where[box]`` holds."""
    if where is not None:
        mask = mask & where[box]
    tissue[box][mask] = tissue_id


# ---------------------------------------------------------------------------------- one case
@dataclass
class _Body:
    """What the structure painters share while one case is drawn."""

    rng: np.random.Generator
    grid: _Grid
    tissue: np.ndarray  # uint8 tissue ids, (X, Y, Z)
    cavity: np.ndarray  # bool: inside the muscle wall, where organs may be
    rough: np.ndarray  # smooth unit-variance fields for boundary perturbations
    rough2: np.ndarray
    by: float = 0.0  # antero-posterior semi-axis of the trunk (body units)
    fat_t: float = 0.0  # relative thickness of the subcutaneous fat
    sx: float = 0.0  # spine position
    sy: float = 0.0

    def paint(self, box, mask: np.ndarray, tissue_id: int) -> None:
        """Paint ``mask`` (restricted to ``box``) inside the cavity."""
        _paint(self.tissue, box, mask, tissue_id, self.cavity)


def _draw_trunk(b: _Body, noise: np.random.Generator, unit_ratio: float, spacing: np.ndarray) -> None:
    """Superelliptic cylinder in (x, y): subcutaneous fat, muscle wall, cavity with visceral fat."""
    rng, grid = b.rng, b.grid
    bx = 0.92 * unit_ratio * rng.uniform(0.9, 1.03)
    b.by = 0.72 * unit_ratio * rng.uniform(0.88, 1.05)
    centre = (0.0, rng.uniform(-0.04, 0.04), 0.0)
    p = np.float32(rng.uniform(2.0, 2.6))
    d = grid.local((slice(None),) * 3, centre)
    r_body = (np.abs(d[0] / np.float32(bx)) ** p + np.abs(d[1] / np.float32(b.by)) ** p) ** (1 / p)
    r_body += np.float32(0.02) * b.rough
    b.tissue[r_body < 1] = _FAT
    b.fat_t = rng.uniform(0.06, 0.13)
    b.tissue[r_body < 1 - b.fat_t] = _SOFT
    b.cavity[...] = r_body < 1 - b.fat_t - rng.uniform(0.04, 0.07)
    # visceral fat: blobs ~1 cm across, from thresholded smoothed noise (isotropic in mm)
    vfat = ndimage.gaussian_filter(noise.standard_normal(grid.shape, dtype=np.float32), 4.0 / spacing, truncate=2.5)
    b.tissue[b.cavity & (vfat > np.float32(rng.uniform(0.6, 1.2) * vfat.std()))] = _VFAT
    # the spine (drawn last) decides where the retroperitoneal organs sit
    b.sy = b.by * (1 - b.fat_t) - rng.uniform(0.27, 0.33)
    b.sx = rng.uniform(-0.03, 0.03)


def _draw_bowel_and_stomach(b: _Body) -> None:
    """Tubular bowel loops (random walks of capsules) and a stomach: unlabelled distractors."""
    rng, grid = b.rng, b.grid
    for k in range(int(rng.integers(4, 9))):
        pts = [np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.05), rng.uniform(-0.75, 0.1)])]
        heading = rng.normal(size=3)
        for _ in range(int(rng.integers(3, 7))):
            heading = heading / np.linalg.norm(heading) + 0.9 * rng.normal(size=3)
            pts.append(pts[-1] + heading / np.linalg.norm(heading) * rng.uniform(0.12, 0.28))
        radius = rng.uniform(0.045, 0.085)
        lo, hi = np.min(pts, axis=0), np.max(pts, axis=0)
        box = grid.box((hi + lo) / 2, (hi - lo) / 2 + radius)
        loop = np.zeros(tuple(s.stop - s.start for s in box), dtype=bool)
        for p0, p1 in zip(pts[:-1], pts[1:]):
            loop |= _tube(grid, p0, p1, radius, box)
        b.paint(box, loop, _BOWEL0 + k)
    c = (rng.uniform(0.2, 0.35), rng.uniform(-0.35, -0.2), rng.uniform(0.2, 0.45))
    radii = (rng.uniform(0.17, 0.25), rng.uniform(0.12, 0.18), rng.uniform(0.18, 0.25))
    b.paint(*_ellipsoid(grid, c, radii, _rotation(rng, (10, 10, 40)), b.rough, 0.08), _STOMACH)


def _draw_liver(b: _Body) -> None:
    """Liver (label 1): right and left lobe, sometimes an inferior tongue; vessels and lesions inside.

    The gallbladder is carved out of it; kidney and IVC (drawn later) indent it.
    """
    rng, grid = b.rng, b.grid
    c1 = (rng.uniform(-0.4, -0.3), rng.uniform(-0.12, 0.02), rng.uniform(0.15, 0.3))
    r1 = np.array([0.42, 0.46, 0.42]) * rng.uniform(0.88, 1.1, size=3)
    lobes = [_ellipsoid(grid, c1, r1, _rotation(rng, (10, 10, 20)), b.rough, 0.1)]
    c2 = (rng.uniform(-0.02, 0.15), rng.uniform(-0.4, -0.28), c1[2] + rng.uniform(0.0, 0.15))
    r2 = np.array([0.34, 0.17, 0.2]) * rng.uniform(0.85, 1.15, size=3)
    lobes.append(_ellipsoid(grid, c2, r2, _rotation(rng, (10, 10, 25)), b.rough, 0.1))
    if rng.random() < 0.6:
        c3 = (c1[0] + rng.uniform(0.0, 0.15), c1[1] + rng.uniform(-0.1, 0.1), c1[2] - rng.uniform(0.3, 0.45))
        r3 = np.array([0.18, 0.22, 0.22]) * rng.uniform(0.8, 1.2, size=3)
        lobes.append(_ellipsoid(grid, c3, r3, _rotation(rng, (20, 20, 30)), b.rough2, 0.1))
    liver = np.zeros(grid.shape, dtype=bool)
    for box, mask in lobes:
        liver[box] |= mask
    liver &= b.cavity
    lbox = ndimage.find_objects(liver.astype(np.uint8))[0] if liver.any() else (slice(None),) * 3
    b.tissue[liver] = _LIVER
    hilum = np.array(c1) + np.array([0.2, -0.05, -0.05])
    for _ in range(int(rng.integers(3, 7))):  # intrahepatic vessels: capsules from the hilum
        direction = rng.normal(size=3) * np.array([1.0, 1.0, 0.7])
        p1 = hilum + direction / np.linalg.norm(direction) * rng.uniform(0.25, 0.5)
        _paint(b.tissue, lbox, _tube(grid, hilum, p1, rng.uniform(0.02, 0.045), lbox), _LIVER_VESSEL, liver)
    for k in range(int(rng.integers(0, 4))):  # lesions, darker or brighter than the liver
        c = np.array(c1) + rng.uniform(-0.6, 0.6, size=3) * r1
        box, mask = _ellipsoid(grid, c, np.full(3, rng.uniform(0.03, 0.09)), None, b.rough2, 0.1)
        _paint(b.tissue, box, mask, _LESION0 + k, liver)
    if rng.random() < 0.75:  # gallbladder: inferior-anterior surface, not part of the liver label
        c = (c1[0] + rng.uniform(0.1, 0.25), c1[1] - 0.55 * r1[1], c1[2] - rng.uniform(0.25, 0.4))
        radii = np.array([0.08, 0.07, 0.14]) * rng.uniform(0.8, 1.3, size=3)
        b.paint(*_ellipsoid(grid, c, radii, _rotation(rng, (20, 20, 20))), _GALLBLADDER)


def _ellipsoid_level(u: list[np.ndarray], shift: tuple[float, float, float], radii) -> np.ndarray:
    """``sum(((u - shift) / radii)^2)`` on local coordinates ``u``."""
    return sum(((u[k] - np.float32(shift[k])) / np.float32(radii[k])) ** 2 for k in range(3))


def _draw_kidneys(b: _Body) -> None:
    """Kidneys (label 2): posterior, either side of the spine; cortex, medulla, fat-filled hilum."""
    rng, grid = b.rng, b.grid
    for side in (-1, 1):  # -1: patient right (low array x), +1: patient left
        z0 = (-0.3 if side < 0 else -0.15) + rng.uniform(-0.08, 0.08)
        c = (side * rng.uniform(0.36, 0.44), b.sy - rng.uniform(0.0, 0.08), z0)
        radii = np.array([0.14, 0.1, 0.28]) * rng.uniform(0.88, 1.12, size=3)
        rot = _rot_z(side * rng.uniform(20, 45)) @ _rot_y(-side * rng.uniform(5, 20)) @ _rotation(rng, (8, 8, 8))
        box, kidney = _ellipsoid(grid, c, radii, rot, b.rough, 0.05)
        u = grid.local(box, c, rot)
        # the hilum: an ellipsoid on the medial edge (local -side * x) makes the bean shape
        hilum = _ellipsoid_level(u, (-side * 0.85 * radii[0], 0, 0), radii * [0.55, 0.6, 0.38]) < 1
        medulla = np.sqrt(_ellipsoid_level(u, (0, 0, 0), 0.62 * radii)) + np.float32(0.15) * b.rough2[box] < 1
        b.paint(box, kidney & ~hilum, _CORTEX)
        b.paint(box, kidney & ~hilum & medulla, _MEDULLA)
        b.paint(box, kidney & hilum, _SINUS_FAT)


def _draw_spleen(b: _Body) -> None:
    """Spleen (label 3): posterolateral left, crescent-shaped (concave medial surface)."""
    rng, grid = b.rng, b.grid
    c = (rng.uniform(0.46, 0.56), b.sy - rng.uniform(0.18, 0.3), rng.uniform(0.1, 0.28))
    radii = np.array([0.12, 0.25, 0.23]) * rng.uniform(0.85, 1.15, size=3)
    rot = _rot_z(-rng.uniform(20, 50)) @ _rotation(rng, (10, 10, 5))
    box, spleen = _ellipsoid(grid, c, radii, rot, b.rough, 0.06)
    notch = _ellipsoid_level(grid.local(box, c, rot), (-1.2 * radii[0], 0, 0), radii * [0.75, 0.8, 0.8]) < 1
    b.paint(box, spleen & ~notch, _SPLEEN)


def _draw_vessels_and_spine(b: _Body, unit: float) -> None:
    """Aorta, IVC (both wavy along z) and the spine: vertebral bodies, discs, canal, arch."""
    rng, grid, tissue, sx, sy = b.rng, b.grid, b.tissue, b.sx, b.sy
    for tid, x0, r in ((_AORTA, sx + 0.07, rng.uniform(0.06, 0.08)), (_IVC, sx - 0.2, rng.uniform(0.055, 0.075))):
        y0 = sy - 0.22
        box = grid.box((x0, y0, 0), (0.15, 0.15, 10.0))
        d = grid.local(box, (x0, y0, 0))
        wob = np.float32(0.03) * np.sin(d[2] * np.float32(rng.uniform(1.5, 3)) + np.float32(rng.uniform(0, 6.3)))
        flat = np.float32(1.0 if tid == _AORTA else rng.uniform(0.6, 0.85))  # the IVC is flattened
        tissue[box][((d[0] - wob) / np.float32(r)) ** 2 + (d[1] / np.float32(r * flat)) ** 2 < 1] = tid
    box = grid.box((sx, sy + 0.1, 0), (0.2, 0.3, 10.0))
    d = grid.local(box, (sx, sy, 0))
    body = (d[0] / np.float32(0.15)) ** 2 + (d[1] / np.float32(0.12)) ** 2 < 1
    period = 28.0 / unit * rng.uniform(0.9, 1.1)  # ~28 mm per vertebra
    zphase = (d[2] / np.float32(period) + np.float32(rng.uniform(0, 1))) % 1
    tissue[box][body & (zphase >= 0.2)] = _MARROW
    tissue[box][body & (zphase < 0.2)] = _DISC
    arch = (d[0] / np.float32(0.11)) ** 2 + ((d[1] - np.float32(0.22)) / np.float32(0.1)) ** 2 < 1
    tissue[box][arch & (zphase >= 0.3)] = _MARROW
    canal = (d[0] / np.float32(0.06)) ** 2 + ((d[1] - np.float32(0.18)) / np.float32(0.055)) ** 2 < 1
    tissue[box][canal] = _CANAL


def make_phantom(rng: np.random.Generator, shape: tuple[int, int, int] = DEFAULT_SHAPE) -> Phantom:
    """Generate one phantom case.

    Args:
        rng: the case's random generator (all randomness of the case comes from it).
        shape: array shape ``(X, Y, Z)``; the anatomy is sized in mm relative to the field of view,
            so any shape from :data:`MIN_SHAPE` up holds the whole abdomen.

    Returns:
        A :class:`Phantom` with an ``int16`` image (0..~1000) and a ``uint8`` label map with the
        values of :data:`LABELS`, both with the same (anisotropic) geometry.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < m for s, m in zip(shape, MIN_SHAPE)):
        raise ValueError(f"phantom shape must be 3 sizes of at least {MIN_SHAPE}, got {shape}")

    # Parameters come from ``rng``, voxel-wise noise arrays from a child generator: the number of
    # draws of the first never depends on the shape, so a case has the same anatomy and contrast
    # at every resolution.
    rng, noise = rng.spawn(2)

    # Geometry: anisotropic voxels; the anatomy is sized in a body unit (mm) from the physical
    # field of view, so that structures keep their physical proportions whatever the spacing.
    sxy, sz = rng.uniform(1.2, 1.6), rng.uniform(2.5, 4.0)
    spacing = np.array([sxy, sxy, sz])
    half_fov = np.array(shape) * spacing / 2
    unit_xy = float(min(half_fov[0], half_fov[1]))
    unit = float(min(unit_xy, 1.15 * half_fov[2]))  # organs fit in z as well
    grid = _Grid(rng, shape, spacing, unit)
    body = _Body(
        rng=rng,
        grid=grid,
        tissue=np.zeros(shape, dtype=np.uint8),
        cavity=np.zeros(shape, dtype=bool),
        rough=grid.waves(rng, n_waves=8, freq=4.0),
        rough2=grid.waves(rng, n_waves=8, freq=7.0),
    )
    # painting order matters: later structures overwrite earlier ones
    _draw_trunk(body, noise, unit_xy / unit, spacing)
    _draw_bowel_and_stomach(body)
    _draw_liver(body)
    _draw_kidneys(body)
    _draw_spleen(body)
    _draw_vessels_and_spine(body, unit)

    label = _TISSUE_LABEL[body.tissue]
    image = _render(rng, noise, grid, body.tissue, spacing)
    origin = -(np.array(shape) - 1) / 2 * spacing + np.array([0.0, 0.0, rng.uniform(-20, 20)])
    meta = {"modality": "MRI", "source": "medssl phantom"}
    img = Volume(image, tuple(spacing), tuple(origin), np.eye(3), meta)
    lab = Volume(label, tuple(spacing), tuple(origin), np.eye(3), dict(meta))
    return Phantom(img, lab)


def _tissue_table(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tissue mean intensity, fine-texture and coarse-texture amplitudes for one case."""
    mean = np.zeros(_N_TISSUES)
    fine = np.zeros(_N_TISSUES)
    coarse = np.zeros(_N_TISSUES)
    liver = rng.uniform(430, 560)
    soft = rng.uniform(0.62, 0.85) * liver  # muscle: the liver's contrast to it varies per case
    vessel_bright = rng.random() < 0.6  # contrast-enhanced vessels, or dark flow voids
    vessel = rng.uniform(650, 900) if vessel_bright else rng.uniform(120, 300)
    # T2-like contrast: kidney cortex and spleen are brighter than liver (by a case-dependent margin)
    cortex = liver * rng.uniform(1.12, 1.4)
    fat = rng.uniform(750, 900)
    table = {
        _FAT: (fat, 0.04, 0.03),
        _VFAT: (fat * rng.uniform(0.8, 0.95), 0.06, 0.04),
        _SOFT: (soft, 0.07, 0.05),
        _MARROW: (liver * rng.uniform(0.9, 1.3), 0.08, 0.03),
        _DISC: (rng.uniform(200, 350), 0.05, 0.0),
        _CANAL: (rng.uniform(80, 200), 0.05, 0.0),
        _AORTA: (vessel * rng.uniform(0.95, 1.1), 0.03, 0.0),
        _IVC: (vessel * rng.uniform(0.7, 1.0), 0.04, 0.0),
        _STOMACH: (rng.uniform(150, 650), 0.1, 0.1),
        _CORTEX: (cortex, 0.05, 0.03),
        _MEDULLA: (cortex * rng.uniform(0.65, 0.85), 0.06, 0.03),
        _SINUS_FAT: (rng.uniform(650, 850), 0.06, 0.0),
        _SPLEEN: (liver * rng.uniform(1.08, 1.3), 0.05, 0.04),
        _LIVER: (liver, 0.05, 0.06),
        _LIVER_VESSEL: (vessel * rng.uniform(0.8, 1.0), 0.04, 0.0),
        _GALLBLADDER: (rng.uniform(80, 250), 0.04, 0.0),
    }
    for k in range(3):
        dark = rng.random() < 0.7  # most lesions are darker than the liver (cysts, metastases)
        table[_LESION0 + k] = (liver * (rng.uniform(0.5, 0.78) if dark else rng.uniform(1.15, 1.35)), 0.05, 0.0)
    for k in range(8):
        table[_BOWEL0 + k] = (rng.uniform(150, 800), 0.1, 0.12)
    for tid, (m, f, c) in table.items():
        mean[tid], fine[tid], coarse[tid] = m, f, c
    return mean, fine, coarse


def _render(
    rng: np.random.Generator, noise: np.random.Generator, grid: _Grid, tissue: np.ndarray, spacing: np.ndarray
) -> np.ndarray:
    """Tissue map -> MRI-like ``int16`` image: texture, partial volume, bias field, Rician noise."""
    mean, fine, coarse = _tissue_table(rng)
    scale = rng.uniform(0.85, 1.15)  # global scanner gain
    # texture: isotropic in mm (sigma converted per axis), fine (~1 mm) and coarse (~4 mm) grain
    tex_f = ndimage.gaussian_filter(noise.standard_normal(grid.shape, dtype=np.float32), 1.0 / spacing, truncate=3.0)
    tex_f /= np.float32(tex_f.std() + 1e-6)
    tex_c = ndimage.gaussian_filter(noise.standard_normal(grid.shape, dtype=np.float32), 4.0 / spacing, truncate=2.5)
    tex_c /= np.float32(tex_c.std() + 1e-6)
    img = mean.astype(np.float32)[tissue]
    img *= 1 + fine.astype(np.float32)[tissue] * tex_f + coarse.astype(np.float32)[tissue] * tex_c
    # partial volume: sigma in voxels, so the thick slices blur more in mm (slice profile)
    img = ndimage.gaussian_filter(img, (0.45, 0.45, 0.4), truncate=3.0)
    # smooth multiplicative bias field (coil sensitivity): exp of a random quadratic + a low wave
    x, y, z = (a.reshape([-1 if b == i else 1 for b in range(3)]) for i, a in enumerate(grid.axes))
    coef = rng.normal(size=9).astype(np.float32)
    poly = coef[0] * x + coef[1] * y + coef[2] * z + coef[3] * x * x + coef[4] * y * y + coef[5] * z * z
    poly = poly + coef[6] * x * y + coef[7] * x * z + coef[8] * y * z + grid.waves(rng, 3, 1.2)
    strength = rng.uniform(0.12, 0.3)
    poly = poly * np.float32(strength / (np.abs(poly).max() + 1e-6))
    img *= np.exp(poly).astype(np.float32) * np.float32(scale)
    # Rician noise: magnitude of a complex signal with Gaussian noise in both channels
    sigma = np.float32(rng.uniform(0.02, 0.045) * 800 * scale)
    n1 = noise.standard_normal(grid.shape, dtype=np.float32)
    n2 = noise.standard_normal(grid.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    return np.clip(np.rint(img), 0, 32767).astype(np.int16)


# -------------------------------------------------------------------------------- the dataset
def case_name(split: str, index: int) -> str:
    """Case name of case ``index`` in ``split``, e.g. ``phantom_tr_000``."""
    return f"phantom_{SPLIT_STREAMS[split][0]}_{index:03d}"


def case_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator of one case: depends only on ``(seed, split, index)``."""
    return np.random.default_rng([int(seed), SPLIT_STREAMS[split][1], int(index)])


def _prepare_folder(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise DataError("is not empty; use --force (force=True) to overwrite the dataset in it", out)
        # Remove only what a dataset consists of (dataset.json first, so an interrupted
        # overwrite is detectable), never unrelated files a user keeps in the folder.
        (out / "dataset.json").unlink(missing_ok=True)
        for folder in {f for pair in SPLIT_FOLDERS.values() for f in pair if f} | {".medssl_cache"}:
            if (out / folder).is_dir():
                shutil.rmtree(out / folder)
        (out / "README.md").unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def _readme(seed: int, counts: dict[str, int], shape: tuple[int, int, int], seconds: float) -> str:
    labels = ", ".join(f"{k} = {v}" for k, v in LABELS.items())
    return f"""# medssl phantoms

Synthetic abdominal MRI-like volumes generated by `medssl sample-data` (module
`medssl.data.phantoms`). Regenerate with:

    medssl sample-data <this folder> --seed {seed} --labeled {counts['train']} \\
        --unlabeled {counts['unlabeled']} --test {counts['test']} --force

| split | folder | cases |
|---|---|---|
| labeled training | `imagesTr/`, `labelsTr/` | {counts['train']} |
| unlabeled | `imagesUnlabeled/` | {counts['unlabeled']} |
| test (labeled) | `imagesTs/`, `labelsTs/` | {counts['test']} |

- Labels: {labels} (both kidneys share label 2). Every labelled case contains every class.
- Volumes: {shape[0]} x {shape[1]} x {shape[2]} voxels in (x, y, z) order, `int16` images
  (MRI-like magnitudes, 0..~1000), `uint8` labels, NIfTI (`.nii.gz`).
- Spacing per case: in-plane 1.2-1.6 mm, slices 2.5-4 mm; direction identity in LPS (array
  axes point to patient Left, Posterior, Superior; RAS+ code `LPS`).
- Anatomy: trunk with a fat layer, spine, aorta, IVC, stomach and bowel loops (unlabelled), a
  two-lobed liver with vessels, lesions and a gallbladder, bean-shaped kidneys with cortex,
  medulla and hilum fat, a crescent spleen; random size, rotation, position and smooth
  deformation per case.
- Intensities: case-dependent tissue contrast (liver, spleen, kidney cortex, marrow and bowel
  overlap), texture, partial-volume blur, smooth bias field (±12-30 %), Rician noise.
- Case `i` of a split depends only on (seed, split, i): more labeled or unlabeled cases never
  change the test set, and a larger labeled set contains the smaller one.

Seed {seed}; generated in {seconds:.1f} s. `dataset.json` is written last: a folder without it
was interrupted and should be regenerated with `--force`.
"""


def generate_sample_data(
    out: str | Path,
    seed: int = 0,
    n_labeled: int = 4,
    n_unlabeled: int = 36,
    n_test: int = 8,
    force: bool = False,
    progress: bool = True,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> Path:
    """Write a phantom dataset in the medssl folder format.

    Args:
        out: dataset folder to create (must be empty or absent unless ``force``).
        seed: random seed; the same seed gives byte-identical arrays.
        n_labeled: labeled training cases (``imagesTr`` + ``labelsTr``).
        n_unlabeled: unlabeled cases (``imagesUnlabeled``).
        n_test: labeled test cases (``imagesTs`` + ``labelsTs``).
        force: replace the dataset already in ``out`` (only dataset files and folders are removed).
        progress: show a tqdm progress bar.
        shape: volume shape ``(X, Y, Z)``, at least :data:`MIN_SHAPE`.

    Returns:
        The dataset folder.

    Raises:
        DataError: ``out`` exists and is not empty (without ``force``) or is a file.
        ValueError: a negative count or a shape below :data:`MIN_SHAPE`.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    counts = {"train": int(n_labeled), "unlabeled": int(n_unlabeled), "test": int(n_test)}
    if any(n < 0 for n in counts.values()):
        raise ValueError(f"case counts must be >= 0, got {counts}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or any(s < m for s, m in zip(shape, MIN_SHAPE)):
        raise ValueError(f"phantom shape must be 3 sizes of at least {MIN_SHAPE}, got {shape}")
    _prepare_folder(out, force)

    t0 = time.perf_counter()
    jobs = [(split, i) for split, n in counts.items() for i in range(n)]
    for split, i in tqdm(jobs, desc="phantoms", unit="case", disable=not progress):
        case = make_phantom(case_rng(seed, split, i), shape)
        name = case_name(split, i)
        write_volume(case.image, image_path(out, split, name))
        if SPLIT_FOLDERS[split][1] is not None:
            write_volume(case.label, label_path(out, split, name))
    for split, n in counts.items():  # empty splits still get their folders
        for folder in SPLIT_FOLDERS[split]:
            if folder:
                (out / folder).mkdir(exist_ok=True)
    write_atomic_text(out / "README.md", _readme(seed, counts, shape, time.perf_counter() - t0))
    spec = DatasetSpec(
        name="phantoms",
        labels=dict(LABELS),
        channel_names={"0": "MRI"},
        file_ending=".nii.gz",
        num_training=counts["train"],
    )
    write_dataset_json(out, spec)  # last: its presence marks a complete dataset
    return out
