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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


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

        return "".join(nio.aff2axcodes(self.affine))

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
