"""The pseudo-label manifest: what ``medssl pseudo-label`` writes, napari review edits, and
training reads back as extra labeled data.

One JSON file (``manifest.json``) in the export folder::

    {
      "format": "medssl-pseudo-labels/1",
      "created": "2026-11-28T23:59:00+00:00",
      "checkpoint": "/abs/path/run/checkpoints/best.ckpt",
      "dataset": "/abs/path/dataset",
      "classes": ["background", "liver", "kidney", "spleen"],
      "cases": [
        {
          "name": "phantom_ul_000",
          "image": "/abs/path/dataset/imagesUnlabeled/phantom_ul_000_0000.nii.gz",
          "label": "labels/phantom_ul_000.nii.gz",            # fused pseudo-label (uint8)
          "views": ["views/phantom_ul_000_view0.nii.gz", ...],  # each view's prediction
          "uncertainty": "uncertainty/phantom_ul_000.nii.gz",  # fused voxel-wise uncertainty
          "confidence": 0.93,                                   # per-case confidence in [0, 1]
          "status": "pending",          # pending | accepted | rejected | edited
          "reviewed_label": null        # path of the corrected label when status is "edited"
        }
      ]
    }

Relative paths are relative to the manifest's folder. Training (``data.extra_labels``) takes
``accepted`` cases with their ``label`` and ``edited`` cases with their ``reviewed_label``;
``pending`` and ``rejected`` cases are ignored.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from medssl.data.dataset import Case
from medssl.errors import DataError

FORMAT = "medssl-pseudo-labels/1"
STATUSES = ("pending", "accepted", "rejected", "edited")


def new_manifest(checkpoint: Path, dataset: Path, classes: list[str]) -> dict:
    return {
        "format": FORMAT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "checkpoint": str(Path(checkpoint).resolve()),
        "dataset": str(Path(dataset).resolve()),
        "classes": list(classes),
        "cases": [],
    }


def write_manifest(path: str | Path, manifest: dict) -> Path:
    """Validate and write atomically (the review plugin and training may read it at any time)."""
    from medssl.core.atomic import write_atomic_text

    validate_manifest(manifest, path)
    return write_atomic_text(path, json.dumps(manifest, indent=2) + "\n")


def read_manifest(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DataError("pseudo-label manifest not found", path)
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"is not valid JSON ({exc})", path) from exc
    validate_manifest(manifest, path)
    return manifest


def validate_manifest(manifest: dict, path: str | Path) -> None:
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DataError(f"is not a medssl pseudo-label manifest (expected \"format\": \"{FORMAT}\")", path)
    for i, case in enumerate(manifest.get("cases", [])):
        for key in ("name", "image", "label", "status", "confidence"):
            if key not in case:
                raise DataError(f"case {i} has no {key!r}", path)
        if case["status"] not in STATUSES:
            raise DataError(f"case {case['name']!r} has status {case['status']!r}; expected one of {STATUSES}", path)
        if case["status"] == "edited" and not case.get("reviewed_label"):
            raise DataError(f"case {case['name']!r} is 'edited' but has no 'reviewed_label'", path)


def resolve(manifest_path: str | Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else Path(manifest_path).parent / p


def reviewed_cases(manifest_path: str | Path) -> list[Case]:
    """Accepted and edited cases of a reviewed manifest, as labeled training cases."""
    manifest = read_manifest(manifest_path)
    cases = []
    for c in manifest["cases"]:
        if c["status"] not in ("accepted", "edited"):
            continue
        label = resolve(manifest_path, c["reviewed_label"] if c["status"] == "edited" else c["label"])
        image = resolve(manifest_path, c["image"])
        for p in (image, label):
            if not p.is_file():
                raise DataError(f"case {c['name']!r}: file {p} does not exist", manifest_path)
        cases.append(Case(name=f"reviewed_{c['name']}", image=image, label=label, split="train"))
    return cases
