"""``medssl data check``: find every problem of a dataset folder before training on it.

The check reads every volume once and reports *all* problems per case instead of stopping at the
first, so one run gives the full list to fix:

==================  ========  ===============================================================
code                severity  meaning
==================  ========  ===============================================================
dataset_json        error     ``dataset.json`` missing or invalid (files are still checked)
no_training_cases   error     ``imagesTr`` has no image
num_training        warning   ``numTraining`` differs from the number of training images
unreadable          error     truncated, corrupt or not-an-image file
not_3d              error     a 2D / 4D image
missing_label       error     an image of a labeled split without its label file
orphan_label        error     a label file without an image (a misnamed image, usually)
no_test_labels      warning   ``imagesTs`` without a ``labelsTs`` folder (no test metrics)
geometry_mismatch   error     image and label differ in shape, spacing, origin or direction
undeclared_labels   error     label values that ``dataset.json`` does not declare
non_integer_labels  error     fractional or non-finite label values
nonfinite           error     NaN / inf voxels in an image
constant_image      error     every voxel of an image has the same value
empty_label         warning   a label map with background only
class_never_seen    warning   a declared class present in no label map
duplicate_case      warning   a case name in two splits (possible train/test leakage)
stray_file          warning   a file that is not read (wrong suffix, leftover temporary file)
ambiguous_file      error     ``X.nii`` beside ``X.nii.gz``: SimpleITK reads ``X.nii`` for both
==================  ========  ===============================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medssl.data.dataset import SPLIT_FOLDERS, Case, DatasetSpec, list_cases, read_dataset_json
from medssl.data.io import read_volume
from medssl.data.volume import Volume
from medssl.errors import DataError, MedsslError

Severity = Literal["error", "warning"]

#: Tolerances for "same geometry": as :meth:`medssl.data.volume.Volume.same_geometry`.
SPACING_ATOL = 1e-3
ORIGIN_ATOL = 1e-3
DIRECTION_ATOL = 1e-4

#: The ``(split, case)`` group of problems that concern the whole dataset.
_DATASET = ("", "")
_SPLIT_ORDER = {split: i for i, split in enumerate(SPLIT_FOLDERS)}


@dataclass(frozen=True)
class Problem:
    """One problem found by :func:`check_dataset`.

    Attributes:
        case: case name, ``None`` for dataset-level problems.
        path: the file (or folder) the problem is about.
        severity: ``"error"`` (training would fail or be wrong) or ``"warning"``.
        message: one readable sentence.
        code: short machine-readable kind (see the module docstring).
        split: ``"train"``, ``"unlabeled"``, ``"test"`` or ``None``.
    """

    case: str | None
    path: Path | None
    severity: Severity
    message: str
    code: str
    split: str | None = None

    def to_json(self) -> dict:
        return {
            "case": self.case,
            "split": self.split,
            "path": None if self.path is None else str(self.path),
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
        }


@dataclass
class CheckReport:
    """Result of :func:`check_dataset`.

    Attributes:
        root: the dataset folder.
        problems: every problem found, in discovery order.
        counts: number of cases per split.
        labeled: number of cases with a label file per split.
        spec: the parsed ``dataset.json`` (``None`` when it is missing or invalid).
    """

    root: Path
    problems: list[Problem] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    labeled: dict[str, int] = field(default_factory=dict)
    spec: DatasetSpec | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def for_case(self, case: str) -> list[Problem]:
        """Problems of one case (any split)."""
        return [p for p in self.problems if p.case == case]

    def _rel(self, path: Path | None) -> str:
        if path is None:
            return str(self.root)
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def summary(self) -> str:
        """One line: dataset name, cases per split (labeled ones in parentheses), classes."""
        parts = []
        for split in SPLIT_FOLDERS:
            n = self.counts.get(split, 0)
            text = f"{split} {n}"
            if SPLIT_FOLDERS[split][1] is not None and n:
                text += f" ({self.labeled.get(split, 0)} labeled)"
            parts.append(text)
        name = self.spec.name if self.spec else "?"
        classes = ", ".join(f"{k}={v}" for k, v in self.spec.labels.items()) if self.spec else "unknown"
        return f"dataset {self.root} ({name}): " + ", ".join(parts) + f"; labels: {classes}"

    def format(self) -> str:
        """Human-readable report: summary line, problems grouped per case, then the verdict."""
        lines = [self.summary()]
        groups: dict[tuple[str, str], list[Problem]] = {}
        for p in self.problems:
            groups.setdefault((p.split or "", p.case) if p.case else _DATASET, []).append(p)
        width = max((len(p.severity) for p in self.problems), default=0)
        for key in sorted(groups, key=lambda k: (k != _DATASET, _SPLIT_ORDER.get(k[0], 9), k[1])):
            lines.append("")
            lines.append("[dataset]" if key == _DATASET else f"{key[0]}/{key[1]}")
            for p in groups[key]:
                lines.append(f"  {p.severity:<{width}}  {self._rel(p.path)}: {p.message}")
        lines.append("")
        n_err, n_warn = len(self.errors), len(self.warnings)
        counts = f"{n_err} error{'s' * (n_err != 1)}, {n_warn} warning{'s' * (n_warn != 1)}"
        lines.append(counts if n_err else ("OK" if not n_warn else f"OK ({counts})"))
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "n_errors": len(self.errors),
            "n_warnings": len(self.warnings),
            "counts": dict(self.counts),
            "labeled": dict(self.labeled),
            "labels": None if self.spec is None else dict(self.spec.labels),
            "problems": [p.to_json() for p in self.problems],
        }


# --------------------------------------------------------------------------------- helpers
def _message(exc: Exception) -> str:
    """The sentence of a :class:`MedsslError` without the ``path:`` prefix it carries."""
    text = str(exc)
    if isinstance(exc, MedsslError) and exc.path is not None and text.startswith(f"{exc.path}: "):
        return text[len(f"{exc.path}: ") :]
    return text


def _header_dimension(path: Path) -> tuple[int, tuple[int, ...]] | None:
    """``(dimension, size)`` from the file header, or ``None`` when the header cannot be read."""
    try:
        import SimpleITK as sitk

        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        return reader.GetDimension(), tuple(reader.GetSize())
    except Exception:  # noqa: BLE001 - any failure means "unknown"
        return None


#: NIfTI datatype code -> numpy float type (the only types that can hold NaN / inf).
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
#: NIfTI datatype code -> bytes per voxel.
_NIFTI_ITEMSIZE = {
    2: 1, 256: 1, 4: 2, 512: 2, 8: 4, 768: 4, 1024: 8, 1280: 8,  # integers
    16: 4, 64: 8, 1536: 16, 32: 8, 1792: 16, 2048: 32, 128: 3, 2304: 4,  # float, complex, RGB(A)
}


@dataclass(frozen=True)
class NiftiScan:
    """What :func:`scan_nifti` found in a NIfTI file's raw bytes.

    Attributes:
        problem: why the file is truncated or corrupt, ``None`` when its data are complete.
        n_nan: NaN voxels (float files only).
        n_inf: ±inf voxels (float files only).
    """

    problem: str | None = None
    n_nan: int = 0
    n_inf: int = 0


def _nifti_layout(head: bytes) -> tuple[str, int, int, int] | None:
    """``(byte order, datatype code, data offset, voxel count)`` from a NIfTI-1/2 header."""
    import struct

    for endian in "<>":
        if len(head) < 4:
            return None
        sizeof_hdr = struct.unpack(f"{endian}i", head[:4])[0]
        if sizeof_hdr == 348 and len(head) >= 348:
            dims = struct.unpack(f"{endian}8h", head[40:56])
            datatype = struct.unpack(f"{endian}h", head[70:72])[0]
            offset = max(int(struct.unpack(f"{endian}f", head[108:112])[0]), 352)
        elif sizeof_hdr == 540 and len(head) >= 540:
            datatype = struct.unpack(f"{endian}h", head[12:14])[0]
            dims = struct.unpack(f"{endian}8q", head[16:80])
            offset = max(int(struct.unpack(f"{endian}q", head[168:176])[0]), 544)
        else:
            continue
        ndim = min(max(int(dims[0]), 0), 7)
        n = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]], dtype=np.int64))
        return endian, int(datatype), offset, n
    return None


def scan_nifti(path: str | Path) -> NiftiScan:
    """Check a ``.nii`` / ``.nii.gz`` file's raw bytes: completeness and non-finite voxels.

    SimpleITK 2.5 (and so :func:`medssl.data.io.read_volume`) hides both problems: it zero-fills
    the missing part of a truncated NIfTI file, and its NIfTI reader replaces every NaN and ±inf
    voxel by 0 (ITK issue #6575, fixed in ITK 6 by PR #6683). This reads the whole gzip stream
    (its end marker, CRC and length are checked), compares the data size with what the header
    announces and counts NaN / inf voxels of float images. It costs one extra decompression.
    """
    import gzip
    import zlib

    path = Path(path)
    if path.name.lower().endswith(".gz"):
        chunks: list[bytes] = []
        try:
            with gzip.open(path, "rb") as fh:
                while chunk := fh.read(1 << 22):
                    chunks.append(chunk)
        except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
            return NiftiScan(f"is truncated or corrupt: its gzip stream is incomplete or damaged ({exc})")
        data = b"".join(chunks)
    else:
        data = path.read_bytes()
    layout = _nifti_layout(data[:544])
    if layout is None:
        return NiftiScan("is not a NIfTI file (no NIfTI-1/2 header)")
    endian, datatype, offset, n = layout
    kind = _NIFTI_FLOATS.get(datatype)
    need = offset + n * _NIFTI_ITEMSIZE.get(datatype, 1)
    if len(data) < need:
        return NiftiScan(
            f"is truncated: {len(data)} bytes of header and voxel data, the header announces {need}"
        )
    if kind is None:
        return NiftiScan()
    arr = np.frombuffer(data, dtype=f"{endian}{kind}", count=n, offset=offset)
    n_nan = int(np.count_nonzero(np.isnan(arr)))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    return NiftiScan(None, n_nan, n_inf)


def _is_3d(path: Path) -> bool:
    header = _header_dimension(path)
    return header is None or header[0] == 3 or (header[0] == 4 and header[1][3] == 1)


def _read(path: Path, case: str, split: str, problems: list[Problem]) -> tuple[Volume | None, NiftiScan]:
    """Read one volume; on failure record an ``unreadable`` / ``not_3d`` error and return None."""
    scan = NiftiScan()
    if path.is_file() and path.name.lower().endswith((".nii", ".nii.gz")) and path.stat().st_size > 0:
        scan = scan_nifti(path)
        if scan.problem is not None and _is_3d(path):
            problems.append(Problem(case, path, "error", scan.problem, "unreadable", split))
            return None, scan
    try:
        return read_volume(path), scan
    except (DataError, RuntimeError, ValueError, OSError, EOFError) as exc:
        msg = _message(exc) if isinstance(exc, MedsslError) else f"cannot read: {type(exc).__name__}: {exc}"
        code = "unreadable"
        if path.is_file() and not _is_3d(path):
            dim, size = _header_dimension(path)
            code, msg = "not_3d", f"is a {dim}D image of size {size}; a 3D volume is expected"
        problems.append(Problem(case, path, "error", msg, code, split))
        return None, scan


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in np.ravel(values)) + ")"


def _geometry_differences(image: Volume, label: Volume) -> list[str]:
    """Readable ``attribute image-value vs label-value`` for each geometry attribute that differs."""
    out = []
    if image.shape != label.shape:
        out.append(f"shape {image.shape} (image) vs {label.shape} (label)")
    if not np.allclose(image.spacing, label.spacing, atol=SPACING_ATOL):
        out.append(f"spacing {_fmt(image.spacing)} vs {_fmt(label.spacing)} mm")
    if not np.allclose(image.origin, label.origin, atol=ORIGIN_ATOL):
        out.append(f"origin {_fmt(image.origin)} vs {_fmt(label.origin)} mm")
    if not np.allclose(image.direction, label.direction, atol=DIRECTION_ATOL):
        out.append(f"direction {_fmt(image.direction)} vs {_fmt(label.direction)}")
    return out


def _list_values(values, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} in all)" if len(values) > limit else "")


def _check_image(
    vol: Volume, case: str, split: str, path: Path, problems: list[Problem], scan: NiftiScan = NiftiScan()
) -> None:
    arr = vol.array
    if arr.size == 0:
        problems.append(Problem(case, path, "error", f"has no voxels (shape {vol.shape})", "constant_image", split))
        return
    n_nan, n_inf = scan.n_nan, scan.n_inf  # from the raw bytes: the NIfTI reader zeroes them
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        if not finite.all():
            n_nan = max(n_nan, int(np.count_nonzero(np.isnan(arr))))
            n_inf = max(n_inf, int(np.count_nonzero(np.isinf(arr))))
            arr = arr[finite]
    if n_nan or n_inf:
        problems.append(
            Problem(
                case,
                path,
                "error",
                f"{n_nan + n_inf} of {vol.array.size} voxels are not finite ({n_nan} NaN, {n_inf} inf)",
                "nonfinite",
                split,
            )
        )
    if arr.size and arr.min() == arr.max():
        msg = f"is empty: every voxel has the value {float(arr.min()):g}"
        problems.append(Problem(case, path, "error", msg, "constant_image", split))


def _check_label(
    vol: Volume,
    case: str,
    split: str,
    path: Path,
    declared: set[int] | None,
    problems: list[Problem],
    seen: set[int],
    scan: NiftiScan = NiftiScan(),
) -> None:
    arr = vol.array
    values = np.unique(arr)
    if arr.dtype.kind == "f" or scan.n_nan or scan.n_inf:
        bad = values[~np.isfinite(values) | (values != np.round(values))]
        if scan.n_nan or scan.n_inf:  # the NIfTI reader turned them into 0: report from the raw bytes
            bad = np.concatenate([bad, [np.nan] * bool(scan.n_nan) + [np.inf] * bool(scan.n_inf)])
        bad = np.unique(bad)
        if bad.size:
            problems.append(
                Problem(
                    case,
                    path,
                    "error",
                    f"has non-integer label values ({_list_values(bad.tolist())}); labels must be whole numbers",
                    "non_integer_labels",
                    split,
                )
            )
            values = values[np.isfinite(values) & (values == np.round(values))]
    ints = sorted({int(v) for v in values.tolist()})
    seen.update(ints)
    if declared is not None:
        undeclared = [v for v in ints if v not in declared]
        if undeclared:
            problems.append(
                Problem(
                    case,
                    path,
                    "error",
                    f"has label values not declared in dataset.json: {_list_values(undeclared)} "
                    f"(declared: {_list_values(sorted(declared))})",
                    "undeclared_labels",
                    split,
                )
            )
    if ints == [0]:
        problems.append(Problem(case, path, "warning", "is empty: background only", "empty_label", split))


_TMP_RE = re.compile(r"^\..*\.tmp")


def _check_stray_files(root: Path, ending: str, problems: list[Problem]) -> None:
    """Warn about files in the split folders that are never read (one warning per folder)."""
    folders = sorted({f for pair in SPLIT_FOLDERS.values() for f in pair if f})
    for folder in folders:
        if not (root / folder).is_dir():
            continue
        ignored = []
        entries = sorted((root / folder).iterdir())
        names = {f.name for f in entries}
        for f in entries:
            if f.name.endswith(".nii.gz") and f.name[:-3] in names:
                problems.append(
                    Problem(
                        None,
                        f,
                        "error",
                        f"{f.name[:-3]} exists beside it: SimpleITK then reads {f.name[:-3]} for either name",
                        "ambiguous_file",
                    )
                )
            if _TMP_RE.match(f.name):
                problems.append(
                    Problem(None, f, "warning", "leftover temporary file of an interrupted write", "stray_file")
                )
            elif not f.name.startswith(".") and (f.is_dir() or not f.name.endswith(ending)):
                ignored.append(f.name)
        if ignored:
            problems.append(
                Problem(
                    None,
                    root / folder,
                    "warning",
                    f"{len(ignored)} entr{'ies' if len(ignored) > 1 else 'y'} ignored (not {ending} files): "
                    + _list_values(ignored, limit=5),
                    "stray_file",
                )
            )


# ------------------------------------------------------------------------------- the check
def check_dataset(root: str | Path, progress: bool = True) -> CheckReport:
    """Check a medssl / nnU-Net v2 dataset folder and report every problem found.

    Every image and label is read once (one case in memory at a time). A broken ``dataset.json``
    is reported and the files are still checked, with the ``.nii.gz`` suffix assumed and the
    label-value check skipped.

    Args:
        root: the dataset folder (see :mod:`medssl.data.dataset`).
        progress: show a tqdm progress bar over the cases.

    Returns:
        A :class:`CheckReport`; ``report.ok`` is False when any error was found. Problems are
        reported, never raised.
    """
    from tqdm.auto import tqdm

    root = Path(root)
    report = CheckReport(root=root)
    problems = report.problems
    if not root.is_dir():
        what = "is a file, not a dataset folder" if root.exists() else "dataset folder not found"
        problems.append(Problem(None, root, "error", what, "dataset_json"))
        return report

    try:
        spec = read_dataset_json(root)
        report.spec = spec
        declared: set[int] | None = set(spec.labels.values())
    except DataError as exc:
        problems.append(Problem(None, exc.path or root / "dataset.json", "error", _message(exc), "dataset_json"))
        spec = DatasetSpec(name=root.name, labels={"background": 0}, channel_names={"0": "unknown"})
        declared = None
    ending = spec.file_ending

    cases: dict[str, list[Case]] = {split: list_cases(root, split, spec) for split in SPLIT_FOLDERS}
    for split, split_cases in cases.items():
        report.counts[split] = len(split_cases)
        if SPLIT_FOLDERS[split][1] is not None:
            report.labeled[split] = sum(c.label is not None for c in split_cases)

    # --- dataset-level structure
    if not cases["train"]:
        problems.append(
            Problem(None, root / "imagesTr", "error", f"no training images (*_0000{ending}) found", "no_training_cases")
        )
    if report.spec is not None and spec.num_training is not None and spec.num_training != len(cases["train"]):
        problems.append(
            Problem(
                None,
                root / "dataset.json",
                "warning",
                f"numTraining is {spec.num_training} but imagesTr holds {len(cases['train'])} images",
                "num_training",
            )
        )
    no_test_labels = bool(cases["test"]) and not (root / SPLIT_FOLDERS["test"][1]).is_dir()
    if no_test_labels:
        problems.append(
            Problem(
                None,
                root / SPLIT_FOLDERS["test"][1],
                "warning",
                f"imagesTs has {len(cases['test'])} images but there is no labelsTs folder: no test metrics",
                "no_test_labels",
                "test",
            )
        )
    _check_stray_files(root, ending, problems)
    where: dict[str, list[str]] = {}
    for split, split_cases in cases.items():
        for c in split_cases:
            where.setdefault(c.name, []).append(split)
    for name, splits in where.items():
        if len(splits) > 1:
            msg = f"case name appears in several splits: {', '.join(splits)}"
            problems.append(Problem(name, None, "warning", msg, "duplicate_case", splits[0]))

    # --- per case
    seen: set[int] = set()
    all_cases = [c for split_cases in cases.values() for c in split_cases]
    for case in tqdm(all_cases, desc="checking", unit="case", disable=not progress):
        split, name = case.split, case.name
        image, scan = _read(case.image, name, split, problems)
        if image is not None:
            _check_image(image, name, split, case.image, problems, scan)
        lab_dir = SPLIT_FOLDERS[split][1]
        if lab_dir is None or (split == "test" and no_test_labels):
            continue
        if case.label is None:
            expected = root / lab_dir / f"{name}{ending}"
            problems.append(
                Problem(name, expected, "error", f"no label file for image {case.image.name}", "missing_label", split)
            )
            continue
        label, scan = _read(case.label, name, split, problems)
        if label is None:
            continue
        _check_label(label, name, split, case.label, declared, problems, seen, scan)
        if image is not None:
            diffs = _geometry_differences(image, label)
            if diffs:
                problems.append(
                    Problem(
                        name,
                        case.label,
                        "error",
                        "image and label geometry differ: " + "; ".join(diffs),
                        "geometry_mismatch",
                        split,
                    )
                )
        del image, label

    # --- orphan label files (no image with that case name)
    for split, (img_dir, lab_dir) in SPLIT_FOLDERS.items():
        if lab_dir is None or not (root / lab_dir).is_dir():
            continue
        names = {c.name for c in cases[split]}
        for f in sorted((root / lab_dir).iterdir()):
            if f.name.startswith(".") or not f.name.endswith(ending):
                continue
            name = f.name[: -len(ending)]
            if name not in names:
                problems.append(
                    Problem(
                        name,
                        f,
                        "error",
                        f"label file without an image (expected {img_dir}/{name}_0000{ending})",
                        "orphan_label",
                        split,
                    )
                )

    # --- classes that never occur
    if declared is not None and any(report.labeled.values()):
        for cls, value in spec.labels.items():
            if value != 0 and value not in seen:
                problems.append(
                    Problem(
                        None,
                        root / "dataset.json",
                        "warning",
                        f"class {cls!r} (value {value}) appears in no label map",
                        "class_never_seen",
                    )
                )
    return report
