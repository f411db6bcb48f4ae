"""Finding the cases of a batch inference input: files, folders, DICOM trees, CSV lists.

:func:`find_cases` turns what the user points ``medssl infer --input`` at into a list of
:class:`CaseInput`, each of which can read itself (:meth:`CaseInput.read`) and hash its files
(:meth:`CaseInput.sha256`):

* one volume file (NIfTI, NRRD, MHA): one case named after the file;
* a folder with volume files at its top level: one case per file, or, for a model of C > 1 input
  channels, one case per ``<case>_0000``, ``<case>_0001``... group (nnU-Net's channel suffix; the
  suffixes must be exactly ``0000`` to ``C-1``). For a one-channel model a trailing ``_0000`` is
  dropped from the case name when every file has it (the same nnU-Net layout);
* a folder without volume files: a DICOM tree; every single-frame series in it is a case
  (:func:`~medssl.data.dicom_series.find_dicom_series`, which groups files without a
  SeriesInstanceUID too), filtered by :class:`SeriesFilter`. Duplicate slice positions and
  missing slices are read through and reported (:mod:`medssl.data.dicom_tolerant`);
* a ``.csv`` file with a header ``case,<channel>,<channel>...``: one case per row, one path per
  channel (a volume file or a DICOM series folder), relative to the CSV's folder.

A case that cannot be put together (a wrong number of channels, a repeated case name, an empty
cell) is still returned, with :attr:`CaseInput.error` set: the engine lists it in ``errors.csv``
and goes on with the others. Errors of the input as a whole (nothing found, an unreadable CSV)
raise :class:`~medssl.errors.DataError`.

Privacy: case names and recorded paths never carry the series' PatientName, PatientID or birth
date: a DICOM case whose folder name contains one of them is named by its series key instead.
"""

from __future__ import annotations

import csv
import hashlib
import re
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.io import file_format, strip_suffix
from medssl.errors import DataError

__all__ = ["CaseInput", "LoadedCase", "Orientation", "SeriesFilter", "find_cases", "series_orientation"]

#: nnU-Net's channel suffix: ``case_0000.nii.gz`` is channel 0 of ``case``
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


class Orientation(str, Enum):
    """The slice plane of a DICOM series, from the normal of its ImageOrientationPatient."""

    axial = "axial"
    coronal = "coronal"
    sagittal = "sagittal"


def series_orientation(header: Any) -> str | None:
    """``"axial"``, ``"coronal"`` or ``"sagittal"``: the patient axis the slice normal is closest
    to (z: axial, y: coronal, x: sagittal); ``None`` without a valid ImageOrientationPatient."""
    try:
        iop = np.asarray([float(v) for v in header.ImageOrientationPatient], dtype=np.float64)
        normal = np.cross(iop[:3], iop[3:])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    if not np.isfinite(normal).all() or np.linalg.norm(normal) < 1e-6:
        return None
    return ("sagittal", "coronal", "axial")[int(np.argmax(np.abs(normal)))]


@dataclass
class SeriesFilter:
    """Which DICOM series of a tree to predict.

    Attributes:
        modality: keep series of this Modality (``"CT"``, ``"MR"``; case-insensitive).
        min_slices: keep series with at least this many image files.
        description: keep series whose SeriesDescription matches this regular expression
            (``re.search``, case-insensitive).
        orientation: keep ``"axial"``, ``"coronal"`` or ``"sagittal"`` series only.
        channels: for a multi-channel model, one SeriesDescription regular expression per channel
            (``("t1", "t2")``): each study (StudyInstanceUID, else folder) becomes one case whose
            channel k is its one series matching expression k.
    """

    modality: str | None = None
    min_slices: int | None = None
    description: str | None = None
    orientation: str | None = None
    channels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.channels = tuple(self.channels or ())
        try:
            self._channel_regex = [re.compile(c, re.IGNORECASE) for c in self.channels]
        except re.error as exc:
            raise DataError(f"--channel-description: not a valid regular expression ({exc})") from exc
        if self.description is not None:
            try:
                self._regex = re.compile(self.description, re.IGNORECASE)
            except re.error as exc:
                raise DataError(f"--description {self.description!r} is not a valid regular expression ({exc})") from exc
        if isinstance(self.orientation, Enum):
            self.orientation = self.orientation.value

    def why_not(self, s) -> str | None:
        """Why series ``s`` is left out (one phrase), or ``None`` when it is kept."""
        if self.modality and s.modality.upper() != self.modality.upper():
            return f"modality {s.modality or 'none'}"
        if self.min_slices and s.n_slices < self.min_slices:
            return f"{s.n_slices} slice(s)"
        if self.description is not None and not self._regex.search(s.description):
            return f"description {s.description!r}"
        if self.orientation and series_orientation(s.headers[0]) != self.orientation:
            return f"{series_orientation(s.headers[0]) or 'unknown'} orientation"
        return None


@dataclass
class LoadedCase:
    """A case's volumes in memory.

    Attributes:
        volumes: one :class:`~medssl.data.volume.Volume` per channel, channel 0 first (its grid
            is the outputs' grid).
        warnings: what was tolerated while reading (duplicate or missing DICOM slices).
        dicom: for a DICOM case, the :class:`~medssl.data.dicom_tolerant.SeriesRead` of channel 0
            (the source images a DICOM-SEG references); else ``None``.
    """

    volumes: list
    warnings: list[str] = field(default_factory=list)
    dicom: Any = None


@dataclass
class CaseInput:
    """One case of a batch inference input.

    Attributes:
        name: the case name: output files are ``<name>.nii.gz``, ``<name>.json``...
        sources: one entry per channel: a volume file, a DICOM series folder, or (DICOM trees)
            a :class:`~medssl.data.dicom_series.DicomSeries` already found.
        display: the input as recorded in ``errors.csv`` / ``summary.csv`` (a path; never
            patient data).
        root: for DICOM trees, the searched folder.
        error: why the case cannot be predicted, found while listing; ``None`` when it can.
        info: extra facts for the case's JSON (series key, modality, description, slice count).
        private: the patient's name parts, ID and birth date of a DICOM case, lower-case, to
            blank out of messages (:meth:`scrub`).
    """

    name: str
    sources: list = field(default_factory=list)
    display: str = ""
    root: Path | None = None
    error: str | None = None
    info: dict = field(default_factory=dict)
    private: tuple[str, ...] = ()

    def scrub(self, text: str) -> str:
        """``text`` with the case's patient identifiers replaced by ``<patient>`` (a message that
        quotes a path named after the patient)."""
        for word in self.private:
            text = re.sub(re.escape(word), "<patient>", text, flags=re.IGNORECASE)
        return text

    @property
    def is_dicom(self) -> bool:
        """Whether channel 0 (the outputs' grid, the series a DICOM-SEG references) is a DICOM series."""
        if not self.sources:
            return False
        s = self.sources[0]
        return not isinstance(s, Path) or s.is_dir()

    def files(self) -> list[Path]:
        """Every file the case reads, channel by channel (a DICOM series: all its files, sorted)."""
        out: list[Path] = []
        for s in self.sources:
            if isinstance(s, Path) and s.is_dir():
                out += sorted(p for p in s.rglob("*") if p.is_file())
            elif isinstance(s, Path):
                out.append(s)
            else:
                out += sorted(s.files)
        return out

    def sha256(self) -> str:
        """sha256 over the case's files: each file's own sha256 with its name, in channel order.

        A changed, added, removed or renamed file changes it; moving the whole input folder does not.
        """
        from medssl.inference.review_manifest import sha256_file

        h = hashlib.sha256()
        for p in self.files():
            h.update(f"{p.name}\0{sha256_file(p)}\n".encode())
        return h.hexdigest()

    def read(self) -> LoadedCase:
        """Read the case's volumes (DICOM: tolerating duplicate and missing slices).

        Raises:
            DataError: a file or series that cannot be read; :attr:`error` set while listing.
        """
        from medssl.data.dicom_series import DicomSeries, find_dicom_series
        from medssl.data.dicom_tolerant import read_series_tolerant
        from medssl.data.io import read_volume

        if self.error:
            raise DataError(self.error)
        volumes, warnings, dicom = [], [], None
        for k, src in enumerate(self.sources):
            if isinstance(src, Path) and not src.is_dir():
                volumes.append(read_volume(src))
                continue
            if isinstance(src, DicomSeries):
                series, root = src, self.root or src.folder
            else:
                found = find_dicom_series(src)
                if len(found) != 1:
                    read_volume(src)  # raises the message that lists the series (or none found)
                series, root = found[0], src
            got = read_series_tolerant(series, root)
            volumes.append(got.volume)
            prefix = f"channel {k}: " if len(self.sources) > 1 else ""
            warnings += [prefix + w for w in got.warnings]
            if k == 0:
                dicom = got
        return LoadedCase(volumes, warnings, dicom)


# ------------------------------------------------------------------------------ listing
def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("._") or "case"


def _volume_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and file_format(p) is not None)


def _group_channels(files: list[Path], num_channels: int) -> list[CaseInput]:
    stems = {p: strip_suffix(p) for p in files}
    if num_channels == 1:
        strip = all(_CHANNEL_SUFFIX.match(s) and s.endswith("_0000") for s in stems.values())
        return [CaseInput(_CHANNEL_SUFFIX.match(stems[p])["case"] if strip else stems[p], [p], str(p)) for p in files]
    groups: dict[str, dict[int, Path]] = {}
    loose: list[Path] = []
    for p, stem in stems.items():
        m = _CHANNEL_SUFFIX.match(stem)
        if m is None:
            loose.append(p)
        else:
            groups.setdefault(m["case"], {})[int(m["channel"])] = p
    cases = []
    for name, chans in sorted(groups.items()):
        paths = [chans[k] for k in sorted(chans)]
        case = CaseInput(name, paths, ", ".join(str(p) for p in paths))
        if sorted(chans) != list(range(num_channels)):
            have = ", ".join(f"_{k:04d}" for k in sorted(chans))
            want = ", ".join(f"_{k:04d}" for k in range(num_channels))
            case.error = (f"has channel file(s) {have}; the model takes {num_channels} channels: {want}")
        cases.append(case)
    for p in loose:
        cases.append(CaseInput(stems[p], [p], str(p), error=(
            f"has no channel suffix (_0000 ... _{num_channels - 1:04d}); the model takes {num_channels} "
            "channels, given as <case>_0000.nii.gz, <case>_0001.nii.gz ... or as a CSV list")))
    return cases


def _identifiers(headers: list[Any]) -> set[str]:
    """The patient's name parts, ID and birth date in a series' headers (to keep them out of names)."""
    out: set[str] = set()
    for h in headers[:1]:
        for key in ("PatientName", "PatientID", "PatientBirthDate"):
            value = str(h.get(key) or "").strip()
            parts = [value] + (re.split(r"[\^ ]+", value) if key == "PatientName" else [])
            out.update(x.lower() for x in parts if len(x) >= 3)
    return out


#: Modalities of DICOM objects that carry a matrix but are no scan to segment (segmentations,
#: RT objects, registrations, presentation states, reports).
NOT_SCANS = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTIMAGE", "REG", "PR", "SR", "KO", "DOC"})


def _not_an_image(s) -> str | None:
    if s.modality.upper() in NOT_SCANS:
        return f"a {s.modality} object, not a scan to segment"
    return None


def _dicom_cases(root: Path, filt: SeriesFilter) -> tuple[list[CaseInput], list[str]]:
    from medssl.data.dicom_series import find_dicom_series

    found = find_dicom_series(root)
    if not found:
        raise DataError("holds no volume files (NIfTI, NRRD, MHA) and no DICOM image series", root)
    kept, skipped = [], []
    for s in found:
        why = _not_an_image(s) or filt.why_not(s)
        (skipped.append(f"{s.summary()}: {why}") if why else kept.append(s))
    if not kept:
        raise DataError(f"none of its {len(found)} DICOM series is selected by the series options: "
                        + "; ".join(skipped[:10]), root)
    per_folder: dict[Path, int] = {}
    for s in kept:
        per_folder[s.folder] = per_folder.get(s.folder, 0) + 1
    cases, names = [], set()
    for s in kept:
        rel = s.folder.relative_to(root) if s.folder.is_relative_to(root) else Path(s.folder.name)
        base = "_".join(rel.parts) if rel.parts else root.name
        if per_folder[s.folder] > 1:
            base += f"_s{s.series_number}" if s.series_number is not None else ""
        name, where = _safe(base), str(s.folder)
        private = _identifiers(s.headers)
        if any(i in name.lower() or i in where.lower() for i in private):
            # the folder is named after the patient: name the case by a hash of its series key
            name = "series-" + hashlib.sha1(s.key.encode()).hexdigest()[:12]
            where = "<DICOM folder not shown: its path holds the patient's name, ID or birth date>"
        if name in names:
            name = f"{name}_{hashlib.sha1(s.key.encode()).hexdigest()[:8]}"
        names.add(name)
        info = {"series_key": s.key, "modality": s.modality, "description": s.description,
                "n_files": s.n_slices, "orientation": series_orientation(s.headers[0])}
        cases.append(CaseInput(name, [s], where, root=root, info=info, private=tuple(sorted(private))))
    return cases, skipped


def _csv_cases(path: Path, num_channels: int) -> list[CaseInput]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the CSV list ({exc})", path) from exc
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or len(rows[0]) < 2 or rows[0][0].strip().lower() != "case":
        raise DataError("a CSV list needs a header 'case,<channel>[,<channel>...]' (e.g. case,t1,t2) and one row per "
                        "case with one path per channel, relative to the CSV", path)
    header = [c.strip() for c in rows[0]]
    channels = header[1:]
    cases = []
    for line, row in enumerate(rows[1:], start=2):
        cells = [c.strip() for c in row] + [""] * (len(header) - len(row))
        name = _safe(cells[0]) if cells[0] else f"row{line}"
        paths = [(path.parent / c) if c else None for c in cells[1:len(header)]]
        case = CaseInput(name, [p for p in paths if p is not None], ", ".join(c for c in cells[1:len(header)] if c))
        if not cells[0]:
            case.error = f"line {line} of {path.name} has no case name"
        elif len(row) > len(header) and any(c.strip() for c in row[len(header):]):
            case.error = f"line {line} of {path.name} has more cells than the header {','.join(header)}"
        elif any(p is None for p in paths):
            empty = [ch for ch, p in zip(channels, paths) if p is None]
            case.error = f"line {line} of {path.name} has no path for channel(s) {', '.join(empty)}"
        elif len(channels) != num_channels:
            case.error = (f"the CSV lists {len(channels)} channel(s) ({', '.join(channels)}); the model takes "
                          f"{num_channels}")
        cases.append(case)
    if not cases:
        raise DataError("the CSV list has a header but no cases", path)
    return cases


def _dicom_studies(series_cases: list[CaseInput], filt: SeriesFilter) -> list[CaseInput]:
    """One case per study from one-series cases: channel k is the study's series whose
    SeriesDescription matches ``filt.channels[k]`` (exactly one, else the case's error)."""
    studies: dict[str, list[CaseInput]] = {}
    for c in series_cases:
        s = c.sources[0]
        uid = str(s.headers[0].get("StudyInstanceUID") or "") if s.headers else ""
        studies.setdefault(uid or f"folder:{s.folder.parent}", []).append(c)
    out = []
    for members in studies.values():
        first = members[0]
        name = _safe("_".join(first.name.split("_")[:-1]) or first.name) if len(members) > 1 else first.name
        picked, problems = [], []
        for k, (rule, regex) in enumerate(zip(filt.channels, filt._channel_regex)):
            hits = [m for m in members if regex.search(m.sources[0].description or "")]
            if len(hits) != 1:
                problems.append(f"channel {k} ({rule!r}): {len(hits)} matching series")
            else:
                picked.append(hits[0])
        case = CaseInput(name, [m.sources[0] for m in picked], first.display, root=first.root,
                         info={"series": [m.info for m in picked]},
                         private=tuple(sorted({p for m in members for p in m.private})))
        if problems:
            descs = ", ".join(repr(m.sources[0].description) for m in members)
            case.error = "the study's series (" + descs + ") do not give one per channel: " + "; ".join(problems)
        out.append(case)
    return out


def find_cases(path: str | Path, num_channels: int = 1, series: SeriesFilter | None = None) -> tuple[list[CaseInput], list[str]]:
    """The cases of an inference input (module docstring).

    Args:
        path: a volume file, a folder of volume files, a DICOM folder tree or a ``.csv`` list.
        num_channels: input channels of the model (``predictor.spec.num_channels``).
        series: which DICOM series to keep (DICOM trees only).

    Returns:
        ``(cases, notes)``: the cases in a stable order (each with :attr:`CaseInput.error` set when
        it cannot be predicted), and one line per DICOM series left out by ``series``.

    Raises:
        DataError: a missing path, an unknown file type, a CSV without the header, a folder with
            nothing to predict.
    """
    path = Path(path)
    filt = series or SeriesFilter()
    if not path.exists():
        raise DataError("no such file or folder", path)
    notes: list[str] = []
    if path.is_file() and path.suffix.lower() == ".csv":
        cases = _csv_cases(path, num_channels)
    elif path.is_file():
        if file_format(path) is None:
            raise DataError("is neither a volume file (NIfTI, NRRD, MHA), a folder nor a .csv list of cases "
                            "(for DICOM, give the folder of the series, or a folder above several)", path)
        cases = _group_channels([path], num_channels) if num_channels > 1 else [CaseInput(strip_suffix(path), [path], str(path))]
    else:
        files = _volume_files(path)
        if files:
            cases = _group_channels(files, num_channels)
        else:
            cases, notes = _dicom_cases(path, filt)
            if filt.channels:
                if len(filt.channels) != num_channels:
                    raise DataError(f"{len(filt.channels)} --channel-description rule(s) for a model of "
                                    f"{num_channels} channel(s)")
                cases = _dicom_studies(cases, filt)
            elif num_channels != 1:
                for c in cases:
                    c.error = (f"a DICOM series is one channel; the model takes {num_channels}: give one "
                               "--channel-description per channel, or list the channels' series folders in a CSV "
                               "(case,<channel>,...)")
    seen: set[str] = set()
    for c in cases:
        if c.name in seen and c.error is None:
            c.error = f"the case name {c.name!r} is used by an earlier case"
        seen.add(c.name)
    return cases, notes
