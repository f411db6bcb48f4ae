"""The review manifest: what ``medssl pseudo-label`` writes, a reviewer (the napari plugin, or any
tool) edits, and training reads back as extra labeled data. Read and written only here.

One JSON file, ``manifest.json``, in the export folder; its schema is
``medssl/inference/schemas/review_manifest.schema.json`` (JSON Schema 2020-12, versioned by the
``format`` string)::

    {
      "format": "medssl-pseudo-labels/1",
      "created": "2026-11-28T23:59:00+00:00",
      "checkpoint": "/abs/run/checkpoints/best.ckpt",
      "checkpoint_sha256": "3f1c...",                           what predicted (a rerun resumes
      "dataset": "/abs/dataset",                                 only when both still match)
      "dataset_fingerprint": "a9e0...",
      "classes": ["background", "liver", "kidney", "spleen"],
      "cases": [{
          "name": "phantom_ul_000",
          "image": "/abs/dataset/imagesUnlabeled/phantom_ul_000_0000.nii.gz",
          "label": "labels/phantom_ul_000.nii.gz",              fused pseudo-label (uint8)
          "views": ["views/phantom_ul_000_view0.nii.gz", ...],  each view's prediction
          "uncertainty": "uncertainty/phantom_ul_000.nii.gz",   voxel-wise, in [0, 1]
          "confidence": 0.93,                                   per case, in [0, 1]
          "mean_uncertainty": 0.02, "foreground_ml": 812.5,
          "status": "pending",             pending | accepted | rejected | edited
          "reviewed_label": null,          the corrected label when "edited"
          "reviewer": null, "reviewed_at": null,
          "reviewed_label_sha256": null    sha256 of the label trained on (edited: reviewed_label,
                                           accepted: label); training refuses a changed file
      }]
    }

Relative paths are relative to the manifest's folder. Training (``data.extra_labels``) takes
``accepted`` cases with their ``label`` and ``edited`` cases with their ``reviewed_label``;
``pending`` and ``rejected`` cases are ignored. :func:`set_status` is the one way a review
decision is recorded (validated, hashed, written atomically).
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from medssl.errors import DataError

FORMAT = "medssl-pseudo-labels/1"
STATUSES = ("pending", "accepted", "rejected", "edited")
SCHEMA_PATH = Path(__file__).with_name("schemas") / "review_manifest.schema.json"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | Path) -> str:
    """sha256 hex digest of a file (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class ReviewCase:
    """One pseudo-labelled case and its review state (field meanings: module docstring)."""

    name: str
    image: str
    label: str
    confidence: float
    status: str = "pending"
    views: list[str] = field(default_factory=list)
    uncertainty: str | None = None
    mean_uncertainty: float | None = None
    foreground_ml: float | None = None
    reviewed_label: str | None = None
    reviewer: str | None = None
    reviewed_at: str | None = None
    reviewed_label_sha256: str | None = None
    channels: list[str] = field(default_factory=list)

    REQUIRED = ("name", "image", "label", "confidence", "status")

    @classmethod
    def from_json(cls, raw: dict, where: str) -> ReviewCase:
        if not isinstance(raw, dict):
            raise ValueError(f"{where} is not an object")
        missing = [k for k in cls.REQUIRED if k not in raw]
        if missing:
            raise ValueError(f"{where} has no {missing[0]!r}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where} has unknown keys {unknown}")
        case = cls(**raw)
        case.validate(where)
        return case

    def validate(self, where: str) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"{where} has an empty name")
        if self.status not in STATUSES:
            raise ValueError(f"case {self.name!r} has status {self.status!r}; expected one of {STATUSES}")
        if self.status == "edited" and not self.reviewed_label:
            raise ValueError(f"case {self.name!r} is 'edited' but has no 'reviewed_label'")
        if not isinstance(self.confidence, (int, float)) or not 0.0 <= float(self.confidence) <= 1.0:
            raise ValueError(f"case {self.name!r} has confidence {self.confidence!r}; expected a number in [0, 1]")
        if not isinstance(self.views, list) or not all(isinstance(v, str) for v in self.views):
            raise ValueError(f"case {self.name!r}: 'views' must be a list of paths")

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class ReviewManifest:
    """A whole export's manifest. ``path`` is where it was read from or will be written."""

    checkpoint: str
    dataset: str
    classes: list[str]
    cases: list[ReviewCase] = field(default_factory=list)
    created: str = field(default_factory=_now)
    format: str = FORMAT
    checkpoint_sha256: str | None = None
    dataset_fingerprint: str | None = None
    path: Path | None = None

    TOP_KEYS = ("format", "created", "checkpoint", "checkpoint_sha256", "dataset", "dataset_fingerprint", "classes", "cases")

    # ------------------------------------------------------------------ building
    @classmethod
    def new(cls, path: str | Path, checkpoint: str | Path, dataset: str | Path, classes: list[str]) -> ReviewManifest:
        return cls(checkpoint=str(Path(checkpoint).resolve()), dataset=str(Path(dataset).resolve()),
                   classes=list(classes), path=Path(path))

    @classmethod
    def from_json(cls, raw, path: str | Path | None = None) -> ReviewManifest:
        """Validate and parse a manifest dict.

        Raises:
            DataError: not a medssl manifest, or a field that breaks the schema (named).
        """
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise DataError(f"is not a medssl pseudo-label manifest (expected \"format\": \"{FORMAT}\")", path)
        try:
            for key in ("checkpoint", "dataset", "classes", "cases"):
                if key not in raw:
                    raise ValueError(f"has no {key!r}")
            unknown = sorted(set(raw) - set(cls.TOP_KEYS))
            if unknown:
                raise ValueError(f"has unknown keys {unknown}")
            if not isinstance(raw["cases"], list):
                raise ValueError("'cases' must be a list")
            if not isinstance(raw["classes"], list) or len(raw["classes"]) < 2:
                raise ValueError("'classes' must list at least background and one class")
            cases = [ReviewCase.from_json(c, f"case {i}") for i, c in enumerate(raw["cases"])]
            names = [c.name for c in cases]
            dup = sorted({n for n in names if names.count(n) > 1})
            if dup:
                raise ValueError(f"case names repeat: {dup}")
        except (ValueError, TypeError) as exc:
            raise DataError(str(exc), path) from None
        return cls(checkpoint=str(raw["checkpoint"]), dataset=str(raw["dataset"]), classes=list(raw["classes"]),
                   cases=cases, created=str(raw.get("created", "")), checkpoint_sha256=raw.get("checkpoint_sha256"),
                   dataset_fingerprint=raw.get("dataset_fingerprint"), path=None if path is None else Path(path))

    @classmethod
    def read(cls, path: str | Path) -> ReviewManifest:
        """Read and validate ``manifest.json`` (or the folder holding it)."""
        from medssl.core.jsonfile import read_json

        path = Path(path)
        if path.is_dir():
            path = path / "manifest.json"
        return cls.from_json(read_json(path, "pseudo-label manifest not found", kind=None), path)

    def to_json(self) -> dict:
        out = {"format": self.format, "created": self.created, "checkpoint": self.checkpoint,
               "checkpoint_sha256": self.checkpoint_sha256, "dataset": self.dataset,
               "dataset_fingerprint": self.dataset_fingerprint, "classes": list(self.classes),
               "cases": [c.to_json() for c in self.cases]}
        return {k: v for k, v in out.items() if v is not None or k in ("checkpoint", "dataset")}

    def write(self, path: str | Path | None = None) -> Path:
        """Validate and write atomically (a reviewer and training may read it at any time)."""
        from medssl.core.jsonfile import write_json

        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("no path to write the manifest to")
        ReviewManifest.from_json(self.to_json(), path)  # never write what could not be read back
        self.path = path
        return write_json(path, self.to_json())

    # ------------------------------------------------------------------ cases
    def resolve(self, value: str) -> Path:
        """A manifest path as a file path (relative ones are relative to the manifest's folder)."""
        p = Path(value)
        if p.is_absolute() or self.path is None:
            return p
        return self.path.parent / p

    def case(self, name: str) -> ReviewCase:
        for c in self.cases:
            if c.name == name:
                return c
        raise DataError(f"has no case {name!r}", self.path)

    def put(self, case: ReviewCase) -> None:
        """Add ``case``, replacing a case of the same name."""
        case.validate(f"case {case.name!r}")
        self.cases = [c for c in self.cases if c.name != case.name] + [case]

    def reviewed_cases(self) -> list:
        """Accepted and edited cases as labeled training cases (:class:`~medssl.data.dataset.Case`).

        Raises:
            DataError: an image or label file of such a case is missing (named).
        """
        from medssl.data.dataset import Case

        out = []
        for c in self.cases:
            if c.status not in ("accepted", "edited"):
                continue
            label = self.resolve(c.reviewed_label if c.status == "edited" else c.label)
            image = self.resolve(c.image)
            channels = tuple(self.resolve(p) for p in c.channels)
            for p in (image, *channels, label):
                if not p.is_file():
                    raise DataError(f"case {c.name!r}: file {p} does not exist", self.path)
            if c.reviewed_label_sha256 is not None and sha256_file(label) != c.reviewed_label_sha256:
                raise DataError(f"case {c.name!r}: label {label} changed after it was reviewed (sha256 differs "
                                "from the manifest's): review the case again", self.path)
            out.append(Case(name=f"reviewed_{c.name}", image=image, label=label, split="train", channels=channels))
        return out


def reviewed_provenance(manifest_path: str | Path) -> dict:
    """What a training run records about the reviewed cases it takes from ``manifest_path``.

    Returns:
        ``{"manifest", "manifest_sha256", "cases": [{"name", "status", "label", "label_sha256",
        "reviewer", "reviewed_at"}]}`` for the accepted and edited cases, in manifest order;
        ``label`` is the file trained on (absolute) and ``label_sha256`` its hash now.
    """
    manifest = ReviewManifest.read(manifest_path)
    cases = []
    for c in manifest.cases:
        if c.status not in ("accepted", "edited"):
            continue
        label = manifest.resolve(c.reviewed_label if c.status == "edited" else c.label)
        cases.append({"name": c.name, "status": c.status, "label": str(label.resolve()),
                      "label_sha256": sha256_file(label), "reviewer": c.reviewer, "reviewed_at": c.reviewed_at})
    return {"manifest": str(manifest.path.resolve()), "manifest_sha256": sha256_file(manifest.path), "cases": cases}


def set_status(
    manifest_path: str | Path,
    name: str,
    status: str,
    reviewed_label: str | Path | None = None,
    reviewer: str | None = None,
) -> ReviewCase:
    """Record a review decision for case ``name`` and rewrite the manifest atomically.

    ``edited`` needs ``reviewed_label`` (an existing label file; stored relative to the manifest
    when it lies inside its folder) and records its sha256; ``accepted`` records the sha256 of the
    pseudo-label it accepts; every decision records the reviewer and the time. ``pending`` clears
    the review fields.

    Raises:
        DataError: unknown case or status, or a missing reviewed label file.
    """
    manifest = ReviewManifest.read(manifest_path)
    case = manifest.case(name)
    if status not in STATUSES:
        raise DataError(f"status {status!r} is not one of {STATUSES}", manifest.path)
    if status == "edited":
        if reviewed_label is None:
            raise DataError(f"case {name!r}: 'edited' needs the corrected label file", manifest.path)
        label = Path(reviewed_label)
        full = label if label.is_absolute() else manifest.path.parent / label
        if not full.is_file():
            raise DataError(f"case {name!r}: reviewed label {full} does not exist", manifest.path)
        try:
            stored = str(full.resolve().relative_to(manifest.path.parent.resolve()))
        except ValueError:
            stored = str(full.resolve())
        case.reviewed_label, case.reviewed_label_sha256 = stored, sha256_file(full)
    elif status == "accepted":  # the hash of the accepted pseudo-label: training checks it is unchanged
        label = manifest.resolve(case.label)
        if not label.is_file():
            raise DataError(f"case {name!r}: pseudo-label {label} does not exist", manifest.path)
        case.reviewed_label, case.reviewed_label_sha256 = None, sha256_file(label)
    else:  # rejected, pending
        case.reviewed_label = case.reviewed_label_sha256 = None
    case.status = status
    case.reviewer, case.reviewed_at = (None, None) if status == "pending" else (reviewer, _now())
    manifest.write()
    return case
