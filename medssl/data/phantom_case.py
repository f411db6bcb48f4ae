"""One synthetic abdominal MRI-like phantom case: anatomy painted into a tissue map, then rendered.

:func:`make_phantom` draws everything of a case from one random generator (the dataset writer,
:mod:`medssl.data.phantoms`, gives each case its own). A case looks, at a coarse level, like
T1-weighted abdominal MRI with thick slices:

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
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from medssl.data.phantom_shapes import Grid, ellipsoid, ellipsoid_level, paint, rot_y, rot_z, rotation, tube
from medssl.data.volume import Volume

__all__ = ["DEFAULT_SHAPE", "LABELS", "MIN_SHAPE", "Phantom", "make_phantom"]

#: Declared label values (``dataset.json`` ``labels``).
LABELS: dict[str, int] = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3}

#: Default array shape ``(X, Y, Z)`` of a case.
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


@dataclass
class _Body:
    """What the structure painters share while one case is drawn."""

    rng: np.random.Generator
    grid: Grid
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
        paint(self.tissue, box, mask, tissue_id, self.cavity)


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
            loop |= tube(grid, p0, p1, radius, box)
        b.paint(box, loop, _BOWEL0 + k)
    c = (rng.uniform(0.2, 0.35), rng.uniform(-0.35, -0.2), rng.uniform(0.2, 0.45))
    radii = (rng.uniform(0.17, 0.25), rng.uniform(0.12, 0.18), rng.uniform(0.18, 0.25))
    b.paint(*ellipsoid(grid, c, radii, rotation(rng, (10, 10, 40)), b.rough, 0.08), _STOMACH)


def _draw_liver(b: _Body) -> None:
    """Liver (label 1): right and left lobe, sometimes an inferior tongue; vessels and lesions inside.

    The gallbladder is carved out of it; kidney and IVC (drawn later) indent it.
    """
    rng, grid = b.rng, b.grid
    c1 = (rng.uniform(-0.4, -0.3), rng.uniform(-0.12, 0.02), rng.uniform(0.15, 0.3))
    r1 = np.array([0.42, 0.46, 0.42]) * rng.uniform(0.88, 1.1, size=3)
    lobes = [ellipsoid(grid, c1, r1, rotation(rng, (10, 10, 20)), b.rough, 0.1)]
    c2 = (rng.uniform(-0.02, 0.15), rng.uniform(-0.4, -0.28), c1[2] + rng.uniform(0.0, 0.15))
    r2 = np.array([0.34, 0.17, 0.2]) * rng.uniform(0.85, 1.15, size=3)
    lobes.append(ellipsoid(grid, c2, r2, rotation(rng, (10, 10, 25)), b.rough, 0.1))
    if rng.random() < 0.6:
        c3 = (c1[0] + rng.uniform(0.0, 0.15), c1[1] + rng.uniform(-0.1, 0.1), c1[2] - rng.uniform(0.3, 0.45))
        r3 = np.array([0.18, 0.22, 0.22]) * rng.uniform(0.8, 1.2, size=3)
        lobes.append(ellipsoid(grid, c3, r3, rotation(rng, (20, 20, 30)), b.rough2, 0.1))
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
        paint(b.tissue, lbox, tube(grid, hilum, p1, rng.uniform(0.02, 0.045), lbox), _LIVER_VESSEL, liver)
    for k in range(int(rng.integers(0, 4))):  # lesions, darker or brighter than the liver
        c = np.array(c1) + rng.uniform(-0.6, 0.6, size=3) * r1
        box, mask = ellipsoid(grid, c, np.full(3, rng.uniform(0.03, 0.09)), None, b.rough2, 0.1)
        paint(b.tissue, box, mask, _LESION0 + k, liver)
    if rng.random() < 0.75:  # gallbladder: inferior-anterior surface, not part of the liver label
        c = (c1[0] + rng.uniform(0.1, 0.25), c1[1] - 0.55 * r1[1], c1[2] - rng.uniform(0.25, 0.4))
        radii = np.array([0.08, 0.07, 0.14]) * rng.uniform(0.8, 1.3, size=3)
        b.paint(*ellipsoid(grid, c, radii, rotation(rng, (20, 20, 20))), _GALLBLADDER)



def _draw_kidneys(b: _Body) -> None:
    """Kidneys (label 2): posterior, either side of the spine; cortex, medulla, fat-filled hilum."""
    rng, grid = b.rng, b.grid
    for side in (-1, 1):  # -1: patient right (low array x), +1: patient left
        z0 = (-0.3 if side < 0 else -0.15) + rng.uniform(-0.08, 0.08)
        c = (side * rng.uniform(0.36, 0.44), b.sy - rng.uniform(0.0, 0.08), z0)
        radii = np.array([0.14, 0.1, 0.28]) * rng.uniform(0.88, 1.12, size=3)
        rot = rot_z(side * rng.uniform(20, 45)) @ rot_y(-side * rng.uniform(5, 20)) @ rotation(rng, (8, 8, 8))
        box, kidney = ellipsoid(grid, c, radii, rot, b.rough, 0.05)
        u = grid.local(box, c, rot)
        # the hilum: an ellipsoid on the medial edge (local -side * x) makes the bean shape
        hilum = ellipsoid_level(u, (-side * 0.85 * radii[0], 0, 0), radii * [0.55, 0.6, 0.38]) < 1
        medulla = np.sqrt(ellipsoid_level(u, (0, 0, 0), 0.62 * radii)) + np.float32(0.15) * b.rough2[box] < 1
        b.paint(box, kidney & ~hilum, _CORTEX)
        b.paint(box, kidney & ~hilum & medulla, _MEDULLA)
        b.paint(box, kidney & hilum, _SINUS_FAT)


def _draw_spleen(b: _Body) -> None:
    """Spleen (label 3): posterolateral left, crescent-shaped (concave medial surface)."""
    rng, grid = b.rng, b.grid
    c = (rng.uniform(0.46, 0.56), b.sy - rng.uniform(0.18, 0.3), rng.uniform(0.1, 0.28))
    radii = np.array([0.12, 0.25, 0.23]) * rng.uniform(0.85, 1.15, size=3)
    rot = rot_z(-rng.uniform(20, 50)) @ rotation(rng, (10, 10, 5))
    box, spleen = ellipsoid(grid, c, radii, rot, b.rough, 0.06)
    notch = ellipsoid_level(grid.local(box, c, rot), (-1.2 * radii[0], 0, 0), radii * [0.75, 0.8, 0.8]) < 1
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
    grid = Grid(rng, shape, spacing, unit)
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
    rng: np.random.Generator, noise: np.random.Generator, grid: Grid, tissue: np.ndarray, spacing: np.ndarray
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
