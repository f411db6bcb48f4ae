"""Several input channels per case (MRI sequences, CT phases): one grid, one array per channel.

Channel 0 is the reference: labels, patches and outputs live on its grid. Every other channel must
share it (shape, spacing, origin, direction, as :meth:`~medssl.data.volume.Volume.same_geometry`),
or, when the run allows it (``data.resample_channels: true``), is resampled onto it with a warning:
linear interpolation in world coordinates by SimpleITK (a well-kept resampler that honours
direction cosines; writing our own would repeat its edge cases). Resampling happens in memory,
once per case and process; registration (aligning scans that moved) is not attempted: a channel on
another grid is assumed to be in the same world frame.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from medssl.data.volume import Volume
from medssl.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["align_channels", "geometry_difference", "resample_to"]


def geometry_difference(ref: Volume, other: Volume) -> str | None:
    """``None`` when ``other`` lies on ``ref``'s grid, else a short description of how it differs."""
    if ref.same_geometry(other):
        return None
    parts = []
    if ref.shape != other.shape:
        parts.append(f"shape {ref.shape} vs {other.shape}")
    if not np.allclose(ref.spacing, other.spacing, atol=1e-3):
        parts.append(f"spacing {tuple(round(s, 4) for s in ref.spacing)} vs {tuple(round(s, 4) for s in other.spacing)} mm")
    if not np.allclose(ref.origin, other.origin, atol=1e-3):
        parts.append(f"origin {tuple(round(o, 3) for o in ref.origin)} vs {tuple(round(o, 3) for o in other.origin)} mm")
    if not np.allclose(ref.direction, other.direction, atol=1e-4):
        parts.append("direction differs")
    return "; ".join(parts)


def resample_to(vol: Volume, ref: Volume) -> np.ndarray:
    """``vol``'s voxels on ``ref``'s grid (linear, in world coordinates; 0 outside ``vol``), float32."""
    import SimpleITK as sitk

    from medssl.data.resample import to_sitk

    src = to_sitk(vol, np.asarray(vol.array, dtype=np.float32))
    target = to_sitk(ref, np.zeros(ref.shape, np.float32))
    out = sitk.Resample(src, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(out).transpose(2, 1, 0)


def align_channels(
    volumes: Sequence[Volume], *, case: str = "", resample: bool = False, paths: Sequence | None = None
) -> list[np.ndarray]:
    """The channels' arrays, all on channel 0's grid.

    Args:
        volumes: channel 0 first.
        case: the case name, for messages.
        resample: resample a channel on another grid (with a warning) instead of refusing it.
        paths: the channel files, for messages.

    Raises:
        DataError: a channel on another grid than channel 0 and ``resample`` is False.
    """
    ref = volumes[0]
    out = [ref.array]
    for k, vol in enumerate(volumes[1:], start=1):
        diff = geometry_difference(ref, vol)
        where = paths[k] if paths is not None else None
        if diff is None:
            out.append(vol.array)
        elif resample:
            log.warning("case %s: channel %d resampled onto channel 0's grid (%s)", case, k, diff)
            out.append(resample_to(vol, ref))
        else:
            raise DataError(f"case {case!r}: channel {k} is not on channel 0's grid ({diff}); register or resample "
                            "it, or set data.resample_channels: true", where)
    return out
