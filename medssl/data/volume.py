"""A volume and its physical geometry: the one in-memory form every reader returns.

Conventions, used everywhere in medssl:

* **Array order** is ``(x, y, z)``, i.e. ITK's index order ``(i, j, k)``: the first axis runs
  along image columns, the last along slices. A 512x512 CT series of 20 slices has shape
  ``(512, 512, 20)``. This is also nibabel's and MONAI's (``ITKReader(reverse_indexing=True)``)
  order, so arrays can be passed to MONAI transforms without transposing.
* ``spacing`` is in millimetres, in the same order as the shape.
* ``origin`` and ``direction`` are in ITK/DICOM **LPS** world coordinates: ``origin`` is the
  centre of voxel ``(0, 0, 0)``; column ``a`` of ``direction`` is the unit world vector of array
  axis ``a``. So ``world = origin + direction @ (spacing * index)``.
* ``orientation`` is the nibabel axis code in **RAS+** terms (e.g. ``"RAS"``, ``"LPS"``): the
  anatomical direction each array axis points to.

Only regular, orthogonal grids are read (:func:`affine_fault`, applied by every reader in
:func:`medssl.data.io.read_volume`): a voxel size of 0 (a "zero-scale" affine) cannot place voxels in
space at all, and a sheared affine (axes not at right angles) is refused rather than carried.
Why refuse the shear instead of keeping the source's exact 4x4 matrix: a Volume is spacing +
direction, as ITK's images are, and everything downstream is built on that (patch sampling in
voxel space, spacing-based resampling, ITK's writers, which coerce a non-orthogonal direction to an
orthogonal one, so a prediction written for a sheared source silently gets another affine). The
honest answer for such a file is to resample it once onto an orthogonal grid, which the message
says how to do; sheared NIfTI files are rare outside hand-edited headers and tilted-gantry CT.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from medssl.errors import DataError

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])

#: Largest |cosine| between two array axes still taken as a right angle (0.006 degrees). The real
#: volumes of ../shared/data are orthogonal to 5e-9 and float32 headers round to about 1e-7; at
#: 1e-4, orthogonalising moves the far end of a 512-voxel axis by 0.05 voxel.
ORTHOGONALITY_TOL = 1e-4
#: The suggestion of the "sheared affine" message.
RESAMPLE_HINT = (
    "resample the image to an orthogonal grid, e.g. with nibabel.processing.resample_to_output "
    "or SimpleITK.Resample, and use that file"
)


class GeometryError(DataError):
    """A file's voxel-to-world geometry cannot be used: zero voxel size or sheared axes."""


def affine_fault(matrix: np.ndarray, where: str = "") -> str | None:
    """What makes a voxel-to-world matrix unusable for medssl, in one sentence, or ``None``.

    Args:
        matrix: the ``(3, 3)`` linear part of the voxel-index to world matrix (columns: the
            world step of one voxel along each array axis), in any world convention.
        where: where the matrix comes from, put into the message (e.g. ``" in the sform"``).

    Returns:
        ``None`` for a regular orthogonal grid; else a sentence starting with ``"zero-scale
        affine"`` (a zero, non-finite or collinear axis) or ``"sheared affine"`` (axes that do not
        meet at right angles, beyond :data:`ORTHOGONALITY_TOL`).
    """
    m = np.asarray(matrix, dtype=np.float64).reshape(3, 3)
    if not np.isfinite(m).all():
        return f"non-finite affine{where} ({_fmt_matrix(m)}): the voxels cannot be placed in space; fix the header"
    norms = np.linalg.norm(m, axis=0)
    zero = [a for a in range(3) if norms[a] <= 1e-12]
    if zero:
        axes = " and ".join(str(a) for a in zero)
        return (
            f"zero-scale affine{where}: voxel size 0 along array axis {axes} ({_fmt_matrix(m)}), so the "
            "voxels cannot be placed in space; fix the header (voxel sizes and orientation)"
        )
    unit = m / norms
    cos = unit.T @ unit
    worst, pair = 0.0, (0, 1)
    for a, b in ((0, 1), (0, 2), (1, 2)):
        if abs(cos[a, b]) > worst:
            worst, pair = abs(cos[a, b]), (a, b)
    if worst > ORTHOGONALITY_TOL:
        angle = float(np.degrees(np.arccos(np.clip(cos[pair], -1.0, 1.0))))
        return (
            f"sheared affine{where} (non-orthogonal axes: array axes {pair[0]} and {pair[1]} meet at "
            f"{angle:.4g} degrees, not 90) is not supported: {RESAMPLE_HINT}"
        )
    return None


def _fmt_matrix(m: np.ndarray) -> str:
    return "[" + "; ".join(" ".join(f"{v:.4g}" for v in row) for row in m) + "]"


@dataclass
class Volume:
    """A 3D scalar volume with geometry.

    Attributes:
        array: voxel values, shape ``(X, Y, Z)``.
        spacing: voxel size in mm, ``(sx, sy, sz)``.
        origin: LPS world position of voxel ``(0, 0, 0)`` in mm.
        direction: ``(3, 3)`` direction cosines; column ``a`` is array axis ``a``'s direction.
        meta: free-form, non-identifying metadata (modality, source format...).
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = np.asarray(self.direction, dtype=np.float64).reshape(3, 3)
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D array, got shape {self.array.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.array.shape)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 voxel-index to LPS-world matrix."""
        aff = np.eye(4)
        aff[:3, :3] = self.direction @ np.diag(self.spacing)
        aff[:3, 3] = self.origin
        return aff

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-index to RAS-world matrix (the NIfTI / nibabel convention)."""
        aff = self.affine_lps
        aff[:3] = _LPS_TO_RAS @ aff[:3]
        return aff

    @property
    def orientation(self) -> str:
        """RAS+ axis code of the array axes, e.g. ``"LPS"`` for a typical DICOM CT."""
        import nibabel.orientations as nio

        # "?" for an axis without a direction (zero-scale geometry), instead of a TypeError
        return "".join(code or "?" for code in nio.aff2axcodes(self.affine))

    def geometry_fault(self) -> str | None:
        """:func:`affine_fault` of this volume's geometry: ``None`` when it is a regular orthogonal grid."""
        return affine_fault(self.direction @ np.diag(self.spacing))

    def with_array(self, array: np.ndarray, **meta) -> "Volume":
        """A volume with the same geometry and another array of the same shape."""
        if tuple(array.shape) != self.shape:
            raise ValueError(f"shape {array.shape} differs from the volume's {self.shape}")
        return Volume(array, self.spacing, self.origin, self.direction.copy(), {**self.meta, **meta})

    def same_geometry(self, other: "Volume", atol: float = 1e-3) -> bool:
        """True when shape, spacing, origin and direction agree (within ``atol`` mm)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=1e-4)
        )

    def geometry_dict(self) -> dict:
        """Geometry as plain JSON-able values (used in cache sidecars and ``data info``)."""
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": self.direction.reshape(-1).tolist(),
            "orientation": self.orientation,
        }

    @classmethod
    def from_geometry(cls, array: np.ndarray, geom: dict, meta: dict | None = None) -> "Volume":
        return cls(
            array,
            tuple(geom["spacing"]),
            tuple(geom["origin"]),
            np.asarray(geom["direction"], dtype=np.float64).reshape(3, 3),
            dict(meta or {}),
        )


def volume_info(vol: Volume) -> dict:
    """The summary ``medssl data info`` prints: geometry plus dtype and intensity range."""
    arr = vol.array
    finite = np.isfinite(arr) if arr.dtype.kind == "f" else None
    if finite is not None and not finite.all():
        vals = arr[finite]
        n_nonfinite = int((~finite).sum())
    else:
        vals = arr
        n_nonfinite = 0
    info = vol.geometry_dict()
    info.update(
        {
            "dtype": str(arr.dtype),
            "min": float(vals.min()) if vals.size else None,
            "max": float(vals.max()) if vals.size else None,
            "mean": float(vals.mean(dtype=np.float64)) if vals.size else None,
            "nonfinite_voxels": n_nonfinite,
            "size_mb": round(arr.nbytes / 2**20, 2),
        }
    )
    for key in ("format", "modality", "series_description", "n_files"):
        if key in vol.meta:
            info[key] = vol.meta[key]
    return info
