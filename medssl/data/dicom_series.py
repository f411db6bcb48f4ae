"""Finding the DICOM image series in a folder tree, reading headers only, and choosing one.

:func:`find_dicom_series` walks a folder tree, reads headers only (no pixel data) and groups the
image files into series: by SeriesInstanceUID when the files carry one, else by a fallback key
(study, series number, modality, frame of reference, orientation, matrix size and folder),
because anonymised exports often blank the UIDs. :func:`choose_series` picks the one series a
read asks for. Reading the pixels of a series into a volume is :mod:`medssl.data.dicom`.

Privacy: nothing identifying (PatientName, PatientID, birth date, ...) ever goes into a
:class:`DicomSeries` summary, an error message or a log line. Messages name the user's folder
and files, series UIDs, descriptions and slice counts only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl.errors import DataError

__all__ = ["DicomSeries", "choose_series", "find_dicom_series", "header_int", "header_text"]

log = logging.getLogger(__name__)

#: Media Storage SOP Class of a DICOMDIR (a directory record file, not an image).
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"


@dataclass
class DicomSeries:
    """One series of single-frame DICOM images found in a folder tree.

    Attributes:
        key: SeriesInstanceUID, or ``"series-<hash>"`` from the fallback grouping key when the
            files have no SeriesInstanceUID. Pass it as ``--series KEY`` on the command line, or
            ``series=`` to :func:`medssl.data.dicom.read_dicom_series`.
        files: the image files of the series, in the order they were found (not sorted).
        modality: DICOM Modality (``"CT"``, ``"MR"``...), ``""`` if absent.
        description: SeriesDescription, ``""`` if absent.
        rows: Rows of the first file (image height, the ``y`` axis).
        cols: Columns of the first file (image width, the ``x`` axis).
        series_number: SeriesNumber, or ``None``.
        folder: the folder of the first file.
        headers: the parsed headers (no pixel data), one per file; kept out of ``repr`` as they
            contain patient data.
    """

    key: str
    files: list[Path]
    modality: str = ""
    description: str = ""
    rows: int = 0
    cols: int = 0
    series_number: int | None = None
    folder: Path = Path(".")
    headers: list[Any] = field(default_factory=list, repr=False, compare=False)

    @property
    def n_slices(self) -> int:
        """Number of image files (slices) in the series."""
        return len(self.files)

    def summary(self) -> str:
        """One line without patient data: key, description, modality, slice count and size."""
        desc = f" '{self.description}'" if self.description else ""
        mod = f" {self.modality}" if self.modality else ""
        slices = "1 slice" if self.n_slices == 1 else f"{self.n_slices} slices"
        return f"{self.key}{desc}{mod}, {slices} of {self.cols}x{self.rows}"


# ------------------------------------------------------------------------------ finding series
def _looks_like_dicom(path: Path) -> bool:
    """Cheap test before parsing: a ``DICM`` preamble, or a first tag in group 0002/0008."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if len(head) >= 132 and head[128:132] == b"DICM":
        return True
    # Files without the 128-byte preamble (old ACR-NEMA style) start with a tag of group
    # 0x0002 or 0x0008, little or big endian; anything else (text, NIfTI, ...) is not DICOM.
    return len(head) >= 8 and head[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x08")


def _read_header(path: Path) -> Any | None:
    """The header of an image file (no pixel data), or ``None`` if ``path`` is not one."""
    import pydicom

    if path.name.upper() == "DICOMDIR" or not _looks_like_dicom(path):
        return None
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
    except Exception as exc:  # noqa: BLE001  any parse failure means "not a DICOM file"
        log.debug("skipping %s: not readable as DICOM (%s)", path, type(exc).__name__)
        return None
    meta = getattr(ds, "file_meta", None)
    if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
        return None
    try:
        if int(ds.get("Rows") or 0) <= 0 or int(ds.get("Columns") or 0) <= 0:
            return None  # no image matrix: SR, RT structure set, presentation state...
    except (TypeError, ValueError):
        return None
    return ds


def header_text(ds: Any, keyword: str) -> str:
    """The stripped text of a header element, ``""`` if absent."""
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def header_int(ds: Any, keyword: str) -> int | None:
    """A header element as an ``int``, ``None`` if absent or not a number."""
    try:
        value = ds.get(keyword)
        return None if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return None


def _group_key(ds: Any, folder: Path) -> str:
    """SeriesInstanceUID, or a stable hash of the fallback key when the UID is empty.

    ``folder`` is relative to the searched root, so the key does not change when the data moves.
    """
    uid = header_text(ds, "SeriesInstanceUID")
    if uid:
        return uid
    iop = ds.get("ImageOrientationPatient")
    try:
        iop_key = tuple(round(float(v), 3) + 0.0 for v in iop) if iop is not None else None
    except (TypeError, ValueError):
        iop_key = None
    fallback = (
        header_text(ds, "StudyInstanceUID"),
        header_int(ds, "SeriesNumber"),
        header_text(ds, "Modality"),
        header_text(ds, "FrameOfReferenceUID"),
        iop_key,
        int(ds.Rows),
        int(ds.Columns),
        folder.as_posix(),
    )
    # A hash, not the tuple itself: it is short, usable as ``series=`` and shows no study UID.
    return "series-" + hashlib.sha1(repr(fallback).encode()).hexdigest()[:12]


def find_dicom_series(root: str | Path) -> list[DicomSeries]:
    """Find the single-frame DICOM image series under a folder tree, reading headers only.

    Files that are not DICOM images (DICOMDIR, text, NIfTI, structured reports...) are skipped
    silently. Slices are grouped by SeriesInstanceUID when present, else by the fallback key
    (StudyInstanceUID, SeriesNumber, Modality, FrameOfReferenceUID, rounded
    ImageOrientationPatient, Rows/Columns, folder).

    Args:
        root: folder to search, recursively.

    Returns:
        The series, ordered by folder, series number, description and key; empty if none.
    """
    root = Path(root)
    groups: dict[str, DicomSeries] = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        ds = _read_header(path)
        if ds is None:
            continue
        key = _group_key(ds, path.parent.relative_to(root))
        if key not in groups:
            groups[key] = DicomSeries(
                key=key,
                files=[],
                modality=header_text(ds, "Modality"),
                description=header_text(ds, "SeriesDescription"),
                rows=int(ds.Rows),
                cols=int(ds.Columns),
                series_number=header_int(ds, "SeriesNumber"),
                folder=path.parent,
            )
        groups[key].files.append(path)
        groups[key].headers.append(ds)
    return sorted(
        groups.values(),
        key=lambda s: (str(s.folder), s.series_number if s.series_number is not None else -1, s.description, s.key),
    )


# ------------------------------------------------------------------------------ choosing one
def _series_list(found: list[DicomSeries], root: Path, limit: int = 10) -> str:
    several_folders = len({s.folder for s in found}) > 1
    items = []
    for i, s in enumerate(found[:limit], 1):
        where = ""
        if several_folders:
            rel = s.folder.relative_to(root) if s.folder.is_relative_to(root) else s.folder
            where = f" in {rel}/"
        items.append(f"{i}) {s.summary()}{where}")
    if len(found) > limit:
        items.append(f"... and {len(found) - limit} more")
    return "; ".join(items)


def choose_series(found: list[DicomSeries], series: str | None, root: Path) -> DicomSeries:
    """The series to read among ``found`` (the series found under ``root``).

    Args:
        found: what :func:`find_dicom_series` returned for ``root``.
        series: a :attr:`DicomSeries.key` or a unique prefix of one; ``None`` when ``root``
            holds one series.
        root: the searched folder, named in the errors.

    Raises:
        DataError: no series; several and ``series`` not given; ``series`` matches none or several.
            The messages list the series (key, description, modality, slices, size; never patient
            data) and name the command-line option ``--series KEY``, since that is how a user
            of ``medssl data info`` chooses one.
    """
    if not found:
        raise DataError("no DICOM image files found (searched the folder and its subfolders)", root)
    if series is None:
        if len(found) == 1:
            return found[0]
        raise DataError(
            f"holds {len(found)} DICOM series: {_series_list(found, root)}. Choose one with "
            f"--series KEY (a key above or a unique prefix of it, e.g. --series {found[0].key}), "
            "or point at a folder holding only one series",
            root,
        )
    matches = [s for s in found if s.key == series] or [s for s in found if s.key.startswith(series)]
    if len(matches) != 1:
        what = "matches no" if not matches else "matches more than one"
        raise DataError(
            f"--series {series!r} {what} DICOM series here: {_series_list(found, root)}; give one of "
            "these keys (or a unique prefix of it)",
            root,
        )
    return matches[0]
