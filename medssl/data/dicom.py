"""Reading a folder of single-frame DICOM images as one 3D :class:`~medssl.data.volume.Volume`.

Two steps, both with pydicom:

1. :func:`~medssl.data.dicom_series.find_dicom_series` (in :mod:`medssl.data.dicom_series`,
   importable from here too) walks a folder tree, reads headers only and groups the image files
   into series: by SeriesInstanceUID when the files carry one, else by a fallback key (study,
   series number, modality, frame of reference, orientation, matrix size and folder), because
   anonymised exports often blank the UIDs.
2. :func:`read_dicom_series` (this module) checks that the slices of one series form a regular
   volume (same orientation and matrix, no duplicate or missing slice, even spacing), sorts them
   by their position along the slice normal (never by file name or InstanceNumber), decodes the
   pixels, applies RescaleSlope/Intercept and returns the volume in medssl's conventions: array
   ``(x, y, z)`` = (column, row, slice), LPS origin/direction as ITK's ``ImageSeriesReader``
   gives them.

Privacy: nothing identifying (PatientName, PatientID, birth date, ...) ever goes into a
volume's ``meta``, an error message or a log line. Messages name the user's folder and files,
series UIDs, descriptions and slice counts only.

Compressed transfer syntaxes are decoded by pydicom's plugins: JPEG 2000 needs ``pylibjpeg`` +
``pylibjpeg-openjpeg`` (dependencies of medssl), others may need ``python-gdcm``. Only when no
installed plugin can decode the transfer syntax does a decoding failure advise installing one;
otherwise the file is at fault: "truncated or corrupt pixel data in FILE".
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.dicom_series import DicomSeries, choose_series, find_dicom_series, header_int, header_text
from medssl.data.volume import Volume
from medssl.errors import DataError

__all__ = ["DicomSeries", "find_dicom_series", "read_dicom_series", "read_series"]

log = logging.getLogger(__name__)

#: Two slices closer than this along the normal (mm) are duplicates.
_DUPLICATE_MM = 1e-3
#: A gap larger than this times the median spacing means missing slices.
_GAP_FACTOR = 1.5
#: Relative deviation from the median slice spacing tolerated before "uneven spacing".
_SPACING_RTOL = 0.01
#: Largest difference between direction cosines of slices of one series.
_ORIENTATION_ATOL = 1e-3


# ------------------------------------------------------------------------------ geometry
def _floats(ds: Any, keyword: str, n: int, path: Path, root: Path) -> np.ndarray:
    value = ds.get(keyword)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.shape != (n,):
        raise DataError(
            f"slice {path.name} has no valid {keyword} tag; medssl needs it to place the slices "
            "in 3D (is this a secondary capture or a scout image?)",
            root,
        )
    return arr


@dataclass
class _Geometry:
    order: np.ndarray  # file indices sorted by position along the normal
    positions: np.ndarray  # sorted positions along the normal, mm
    row_cos: np.ndarray
    col_cos: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]


def _check_same(values: list, what: str, files: list[Path], root: Path) -> None:
    first = values[0]
    for v, f in zip(values, files):
        if v != first:
            raise DataError(
                f"mixes {what} within one series: {files[0].name} has {first}, {f.name} has {v}; "
                "a volume needs all slices alike",
                root,
            )


def _pixel_spacing(ds: Any) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from PixelSpacing (or ImagerPixelSpacing), or ``None``."""
    value = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    try:
        dr, dc = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return (dr, dc) if dr > 0 and dc > 0 else None


def _geometry(s: DicomSeries, root: Path) -> _Geometry:
    headers, files = s.headers, s.files
    _check_same([(int(h.Rows), int(h.Columns)) for h in headers], "image sizes (Rows, Columns)", files, root)
    iops = [_floats(h, "ImageOrientationPatient", 6, f, root) for h, f in zip(headers, files)]
    ipps = [_floats(h, "ImagePositionPatient", 3, f, root) for h, f in zip(headers, files)]
    for iop, f in zip(iops, files):
        if np.abs(iop - iops[0]).max() > _ORIENTATION_ATOL:
            raise DataError(
                f"mixes slice orientations within one series: {files[0].name} has "
                f"ImageOrientationPatient {np.round(iops[0], 4).tolist()}, {f.name} has "
                f"{np.round(iop, 4).tolist()}",
                root,
            )
    spacings = [_pixel_spacing(h) for h in headers]
    if any(sp is None for sp in spacings):
        log.warning("DICOM series without a valid PixelSpacing: using 1 mm in-plane")
        spacings = [(1.0, 1.0)] * len(headers)
    for sp, f in zip(spacings, files):
        if not np.allclose(sp, spacings[0], rtol=1e-4, atol=1e-6):
            raise DataError(
                f"mixes pixel spacings within one series: {files[0].name} has {spacings[0]}, {f.name} has {sp}", root
            )

    row_cos, col_cos = iops[0][:3], iops[0][3:]
    normal = np.cross(row_cos, col_cos)
    if min(np.linalg.norm(row_cos), np.linalg.norm(col_cos), np.linalg.norm(normal)) < 0.5:
        raise DataError(f"has a degenerate ImageOrientationPatient {iops[0].tolist()} in {files[0].name}", root)
    row_cos = row_cos / np.linalg.norm(row_cos)
    col_cos = col_cos / np.linalg.norm(col_cos)
    normal = np.cross(row_cos, col_cos)
    normal = normal / np.linalg.norm(normal)

    pos = np.array([float(normal @ p) for p in ipps])
    order = np.argsort(pos, kind="stable")
    pos = pos[order]
    diffs = np.diff(pos)
    for i, d in enumerate(diffs):
        if d < _DUPLICATE_MM:
            a, b = files[order[i]].name, files[order[i + 1]].name
            raise DataError(
                f"has two slices at the same position {pos[i]:.3f} mm ({a} and {b}): duplicate files, "
                "or several series without a SeriesInstanceUID mixed in one folder",
                root,
            )
    if len(pos) > 1:
        median = float(np.median(diffs))
        for i, d in enumerate(diffs):
            if d > _GAP_FACTOR * median:
                n_missing = max(1, int(round(d / median)) - 1)
                expected = ", ".join(f"{pos[i] + median * k:.3f}" for k in range(1, min(n_missing, 5) + 1))
                raise DataError(
                    f"has a gap in its slices: {n_missing} slice(s) missing between sorted slice index "
                    f"{i} (position {pos[i]:.3f} mm) and {i + 1} (position {pos[i + 1]:.3f} mm); "
                    f"expected slice(s) at {expected}{' ...' if n_missing > 5 else ''} mm "
                    f"(spacing {median:.4g} mm)",
                    root,
                )
        for i, d in enumerate(diffs):
            if abs(d - median) > max(_SPACING_RTOL * median, 1e-4):
                raise DataError(
                    f"has uneven slice spacing: {d:.4g} mm between sorted slices {i} and {i + 1} "
                    f"(positions {pos[i]:.3f} and {pos[i + 1]:.3f} mm) while the median spacing is "
                    f"{median:.4g} mm; medssl reads regularly spaced series only",
                    root,
                )
        dz = float((pos[-1] - pos[0]) / (len(pos) - 1))
    else:
        h = headers[0]
        dz = float(h.get("SpacingBetweenSlices") or h.get("SliceThickness") or 1.0)

    # Gantry tilt: slice origins that do not lie along the normal give a sheared volume, which a
    # (spacing, direction) geometry cannot represent. ITK reads these the same way; warn.
    origin = ipps[order[0]]
    if len(pos) > 1:
        offsets = np.array([ipps[j] - origin for j in order])
        in_plane = offsets - np.outer(offsets @ normal, normal)
        if np.abs(in_plane).max() > 0.01 * max(abs(dz), 1e-6) + 1e-3:
            log.warning("DICOM series slices are sheared (gantry tilt?): geometry approximates it")
    dr, dc = spacings[0]
    return _Geometry(order, pos, row_cos, col_cos, normal, origin, (dc, dr, abs(dz)))


# ------------------------------------------------------------------------------ pixels
def _check_single_frame(s: DicomSeries, root: Path) -> None:
    for h, f in zip(s.headers, s.files):
        n_frames = header_int(h, "NumberOfFrames") or 1
        if n_frames > 1 or "PerFrameFunctionalGroupsSequence" in h:
            raise DataError(
                f"holds an Enhanced/multi-frame DICOM image ({f.name}, {n_frames} frames); "
                "medssl reads single-frame series only (not supported yet)",
                root,
            )
    h = s.headers[0]
    spp = header_int(h, "SamplesPerPixel") or 1
    if spp != 1:
        raise DataError(
            f"holds colour images ({spp} samples per pixel, {header_text(h, 'PhotometricInterpretation')}); "
            "medssl reads scalar (grey-level) series only",
            root,
        )


def _decoder_missing(tsuid: Any) -> bool:
    """True when pydicom has no working decoder for the transfer syntax ``tsuid`` (a plugin to
    install); False when it has one, so a failure is the data's fault."""
    try:
        from pydicom.pixels import get_decoder

        return not get_decoder(tsuid).is_available
    except (NotImplementedError, ValueError, ImportError):
        return True  # a transfer syntax pydicom cannot decode at all


def _gist(exc: Exception, caught: list) -> str:
    """pydicom's reason in one short line (its messages span lines and add generic advice)."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()] or [type(exc).__name__]
    gist = (lines[0] + " " + "; ".join(lines[1:])).strip()
    gist = gist.split(" - ")[0].rstrip(".")  # "... less than expected (N vs M bytes) - the dataset may be ..."
    # pydicom's own note about a cut file, e.g. "End of file reached before delimiter (FFFE,E0DD)
    # found in file ..."; only these: other reading warnings may quote element values (patient data)
    cut = [str(w.message) for w in caught if str(w.message).startswith("End of file")]
    if cut:
        gist += "; " + cut[0].split(" found in file")[0]
    return gist[:300]


def _decode(path: Path, root: Path) -> np.ndarray:
    import warnings

    import pydicom

    ds = None
    try:
        # pydicom warns on stderr about what it then fails on (a cut file): keep it for the message
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, force=True)
            arr = ds.pixel_array
    except Exception as exc:  # noqa: BLE001  pydicom raises several types for codec problems
        tsuid = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if tsuid:
            tsname = getattr(tsuid, "name", str(tsuid))
            syntax = f"transfer syntax {tsname} ({tsuid})" if tsname != str(tsuid) else f"transfer syntax {tsuid}"
        else:
            syntax = "an unknown transfer syntax"
        rel = path.relative_to(root) if path.is_relative_to(root) else path.name
        if tsuid and _decoder_missing(tsuid):
            raise DataError(
                f"cannot decode the pixel data of {rel}, {syntax}: {_gist(exc, caught)}. Compressed DICOM "
                "needs a pydicom decoder plugin: pip install pylibjpeg pylibjpeg-openjpeg (JPEG 2000) or "
                "python-gdcm (most other compressions)",
                root,
            ) from exc
        # the decoder is there (or the data is uncompressed): the file is what is broken
        raise DataError(f"truncated or corrupt pixel data in {rel} ({syntax}: {_gist(exc, caught)})", root) from exc
    if arr.ndim != 2:
        raise DataError(f"slice {path.name} decodes to an array of shape {arr.shape}, not a 2D image", root)
    return arr


def _rescale(h: Any) -> tuple[float, float]:
    try:
        slope = float(h.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(h.get("RescaleIntercept", 0.0) or 0.0)
    except (TypeError, ValueError):
        return 1.0, 0.0
    return slope, intercept


def _output_dtype(lo: float, hi: float, integral: bool) -> np.dtype:
    """float32 for a non-integer rescale, else the smallest of int16/int32/int64 holding the values."""
    if not integral:
        return np.dtype(np.float32)
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return np.dtype(np.int64)


# ------------------------------------------------------------------------------ reading
def read_dicom_series(path: str | Path, series: str | None = None) -> Volume:
    """Read one single-frame DICOM series as a volume, sorted by slice position.

    Args:
        path: a folder (searched recursively) or one file of the wanted series.
        series: the :attr:`DicomSeries.key` (or a unique prefix of it) to read when the folder
            holds several series; not needed when it holds one, or when ``path`` is a file.

    Returns:
        A :class:`Volume` with array ``(x, y, z)`` = (column, row, slice), slices sorted by
        position along the normal ``row_cos x col_cos``; spacing (column spacing, row spacing,
        slice spacing) in mm; origin = ImagePositionPatient of the first sorted slice; direction
        columns ``row_cos``, ``col_cos``, ``normal`` (LPS). Values are RescaleSlope/Intercept
        applied: float32 if either is non-integer, else int16 (int32 if the values need it).
        ``meta`` holds ``format``, ``modality``, ``series_description`` and ``n_files`` only.

    Raises:
        DataError: no DICOM image under ``path``; several series and ``series`` not given;
            mixed orientation, size or pixel spacing; duplicate or missing slices; uneven
            spacing; a missing position/orientation tag; multi-frame or colour images; pixel
            data that cannot be decoded ("truncated or corrupt pixel data in FILE" when a decoder
            is installed, else which plugin to install).
    """
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or folder", path)
    if path.is_file():
        root = path.parent
        found = find_dicom_series(root)
        if series is None:
            owner = [s for s in found if path in s.files]
            if not owner:
                raise DataError("is not a DICOM image file", path)
            series = owner[0].key
    else:
        root = path
        found = find_dicom_series(root)
    return read_series(choose_series(found, series, root), root)


def read_series(s: DicomSeries, root: str | Path) -> Volume:
    """Read a series :func:`find_dicom_series` already found (no second walk of the folder tree).

    The volume and the errors are those of :func:`read_dicom_series`; ``root`` is the searched
    folder the messages name.
    """
    root = Path(root)
    _check_single_frame(s, root)
    geom = _geometry(s, root)

    files = [s.files[j] for j in geom.order]
    headers = [s.headers[j] for j in geom.order]
    raws = [_decode(f, root) for f in files]
    shape = raws[0].shape
    for raw, f in zip(raws, files):
        if raw.shape != shape:
            raise DataError(f"slice {f.name} decodes to {raw.shape}, {files[0].name} to {shape}", root)
    rescales = [_rescale(h) for h in headers]
    integral = all(float(m).is_integer() and float(b).is_integer() for m, b in rescales)
    ends = [
        (m * float(r.min()) + b, m * float(r.max()) + b) for r, (m, b) in zip(raws, rescales)
    ]  # per slice; a negative slope swaps them, hence min/max of both below
    lo = min(min(e) for e in ends)
    hi = max(max(e) for e in ends)
    dtype = _output_dtype(lo, hi, integral)
    work = np.float64 if dtype.kind == "f" else np.int64

    # (x, y, z) = (column, row, slice): each slice is pixel_array.T. F-order keeps every slice
    # contiguous, as the SimpleITK readers in medssl.data.io return their arrays.
    out = np.empty((shape[1], shape[0], len(raws)), dtype=dtype, order="F")
    for k, (raw, (m, b)) in enumerate(zip(raws, rescales)):
        if m == 1.0 and b == 0.0:
            out[:, :, k] = raw.T
        elif integral:
            out[:, :, k] = (raw.astype(work) * int(m) + int(b)).T
        else:
            out[:, :, k] = (raw.astype(work) * m + b).T

    direction = np.stack([geom.row_cos, geom.col_cos, geom.normal], axis=1)
    meta = {
        "format": "DICOM",
        "modality": s.modality,
        "series_description": s.description,
        "n_files": s.n_slices,
    }
    return Volume(out, spacing=geom.spacing, origin=tuple(geom.origin), direction=direction, meta=meta)
