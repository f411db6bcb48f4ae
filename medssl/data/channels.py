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


def geometry_difference(ref: Volume, other: Volume, k: int = 1) -> str | None:
    """``None`` when channel ``k`` (``other``) lies on channel 0's grid (``ref``), else how it
    differs, in the words of ``medssl data check`` (:func:`medssl.data.check._geometry_differences`)."""
    from medssl.data.check import _geometry_differences

    diffs = _geometry_differences(ref, other, ("channel 0", f"channel {k}"))
    return "; ".join(diffs) if diffs else None


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
        diff = geometry_difference(ref, vol, k)
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
