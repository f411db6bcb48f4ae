"""Reading a DICOM series despite duplicate or missing slices, and saying what was done.

:func:`medssl.data.dicom.read_dicom_series` refuses a series with two slices at one position or
a gap in its slice positions: for a training dataset that is right (the user fixes the export).
Batch inference over PACS exports must go on instead and report it, so :func:`read_series_tolerant`

* drops every file at an already-taken slice position (the first file by name is kept), and
* reads a series with missing slices as the regular grid from its first to its last slice at the
  median slice spacing, filling each missing slice by linear interpolation between its two
  neighbours along the slice normal,

and returns one warning line per fact (counts and positions in mm, never patient data). Everything
else (mixed orientations or sizes, uneven spacing that is not a gap, undecodable pixels) is the
error :func:`~medssl.data.dicom.read_series` raises. (Not ITK's ``ImageSeriesReader``: given a gap it
only warns of "non uniform sampling" and stacks the slices at one spacing, which misplaces every
slice after the gap; the slices are placed here by their own ImagePositionPatient.) The slices actually read are returned with
their index in the volume, so a DICOM-SEG references exactly the source images it was made from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.dicom import read_series
from medssl.data.dicom_series import DicomSeries
from medssl.data.volume import Volume
from medssl.errors import DataError

__all__ = ["SeriesRead", "read_series_tolerant"]

#: Two slices closer than this along the normal (mm) are at one position (as medssl.data.dicom).
DUPLICATE_MM = 1e-3
#: A step larger than this times the median spacing is a gap (as medssl.data.dicom).
GAP_FACTOR = 1.5
#: How far (fraction of the spacing) a slice may sit from its place on the regular grid.
GRID_RTOL = 0.01


@dataclass
class SeriesRead:
    """A series read as a volume, with what had to be done to it.

    Attributes:
        volume: the volume (array ``(x, y, z)``, LPS geometry, as :func:`read_series` gives it).
        warnings: one line per duplicate group / gap, empty for a clean series.
        headers: the headers (no pixel data) of the slices read, sorted by position.
        slice_index: for each of ``headers``, its ``z`` index in ``volume``.
        filled: ``z`` indices of the slices made up by interpolation.
    """

    volume: Volume
    warnings: list[str]
    headers: list[Any]
    slice_index: list[int]
    filled: list[int]


def _positions(s: DicomSeries) -> np.ndarray | None:
    """Each file's position along the slice normal (mm), or ``None`` when a tag is missing
    (then :func:`read_series` raises the precise error)."""
    try:
        iop = np.asarray([float(v) for v in s.headers[0].ImageOrientationPatient], dtype=np.float64)
        normal = np.cross(iop[:3], iop[3:])
        normal = normal / np.linalg.norm(normal)
        return np.asarray([float(normal @ np.asarray([float(v) for v in h.ImagePositionPatient])) for h in s.headers])
    except (AttributeError, TypeError, ValueError, ZeroDivisionError, IndexError):
        return None


def _subseries(s: DicomSeries, idx: list[int]) -> DicomSeries:
    return dataclasses.replace(s, files=[s.files[i] for i in idx], headers=[s.headers[i] for i in idx])


def read_series_tolerant(s: DicomSeries, root: str | Path) -> SeriesRead:
    """Read one series of :func:`~medssl.data.dicom_series.find_dicom_series`, tolerating
    duplicate slice positions and missing slices (module docstring).

    Args:
        s: the series (files and headers).
        root: the searched folder, named in errors.

    Raises:
        DataError: what :func:`~medssl.data.dicom.read_series` raises for anything but duplicates
            and gaps, or slices that do not sit on one regular grid around a gap.
    """
    root = Path(root)
    pos = _positions(s)
    if pos is None or len(pos) < 2:
        vol = read_series(s, root)
        return SeriesRead(vol, [], list(s.headers), list(range(vol.shape[2])), [])
    # sort by position, ties by file name: the first file of a duplicate group is kept
    order = sorted(range(len(pos)), key=lambda i: (pos[i], s.files[i].name))
    warnings: list[str] = []
    keep, dropped = [order[0]], []
    for i in order[1:]:
        if pos[i] - pos[keep[-1]] < DUPLICATE_MM:
            dropped.append((i, keep[-1]))
        else:
            keep.append(i)
    if dropped:
        example = ", ".join(f"{s.files[i].name} (same as {s.files[k].name}, {pos[k]:.3f} mm)" for i, k in dropped[:3])
        warnings.append(
            f"duplicate slice positions: {len(dropped)} file(s) at the position of another slice were ignored: "
            f"{example}{' ...' if len(dropped) > 3 else ''}"
        )
    p = pos[keep]
    diffs = np.diff(p)
    median = float(np.median(diffs)) if len(diffs) else 0.0
    gaps = [j for j, d in enumerate(diffs) if d > GAP_FACTOR * median]
    if not gaps:
        vol = read_series(_subseries(s, keep), root)  # sorts by position itself, as `keep` is
        return SeriesRead(vol, warnings, [s.headers[i] for i in keep], list(range(len(keep))), [])

    # missing slices: read each run of contiguous slices, then place them on the regular grid
    index = np.rint((p - p[0]) / median).astype(int)
    off = np.abs(p - (p[0] + index * median))
    if (off > max(GRID_RTOL * median, 1e-4)).any():
        j = int(np.argmax(off))
        raise DataError(
            f"has missing slices and slices off a regular grid: the slice at {p[j]:.3f} mm is {off[j]:.3g} mm "
            f"from the nearest multiple of the median spacing {median:.4g} mm; medssl reads regularly spaced series only",
            root,
        )
    runs, start = [], 0
    for j in gaps:
        runs.append(list(range(start, j + 1)))
        start = j + 1
    runs.append(list(range(start, len(keep))))
    volumes = [read_series(_subseries(s, [keep[k] for k in run]), root) for run in runs]
    first = volumes[0]
    dtype = np.result_type(*[v.array.dtype for v in volumes])
    n_total = int(index[-1]) + 1
    out = np.empty((*first.shape[:2], n_total), dtype=dtype, order="F")
    have = np.zeros(n_total, dtype=bool)
    for run, vol in zip(runs, volumes):
        for local, k in enumerate(run):
            out[:, :, index[k]] = vol.array[:, :, local]
            have[index[k]] = True
    filled = [int(z) for z in np.flatnonzero(~have)]
    for z in filled:  # linear interpolation between the nearest slices read on either side
        a = int(np.flatnonzero(have[:z])[-1])
        b = z + 1 + int(np.flatnonzero(have[z + 1:])[0])
        w = (z - a) / (b - a)
        mix = (1.0 - w) * out[:, :, a].astype(np.float64) + w * out[:, :, b].astype(np.float64)
        out[:, :, z] = np.rint(mix) if dtype.kind in "iu" else mix
    for j in gaps:
        n_missing = int(index[j + 1] - index[j] - 1)
        warnings.append(
            f"missing slices: {n_missing} slice(s) between {p[j]:.3f} mm and {p[j + 1]:.3f} mm "
            f"(spacing {median:.4g} mm), filled by linear interpolation between their neighbours"
        )
    spacing = (first.spacing[0], first.spacing[1], median)
    meta = {**first.meta, "n_files": len(keep), "filled_slices": filled}
    vol = Volume(out, spacing=spacing, origin=first.origin, direction=first.direction, meta=meta)
    return SeriesRead(vol, warnings, [s.headers[i] for i in keep], [int(z) for z in index], filled)
