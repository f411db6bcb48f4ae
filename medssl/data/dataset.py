"""The medssl dataset folder: nnU-Net v2's raw layout plus a folder of unlabeled images.

::

    DIR/
      dataset.json          {"name", "channel_names": {"0": "CT"}, "labels": {"background": 0, ...},
                             "file_ending": ".nii.gz", "numTraining": N}
      imagesTr/<case>_0000.nii.gz   labeled training images
      labelsTr/<case>.nii.gz        their label maps (integer values declared in "labels")
      imagesUnlabeled/<case>_0000.nii.gz   unlabeled images (semi-/self-supervised methods)
      imagesVal/<case>_0000.nii.gz  validation images (optional; model selection)
      labelsVal/<case>.nii.gz       their label maps
      imagesTs/<case>_0000.nii.gz   test images
      labelsTs/<case>.nii.gz        test labels (used for the reported metrics)

An nnU-Net v2 raw dataset is therefore already a medssl dataset (without unlabeled images and
without a validation split). The validation split (``"val"``) is where choices are made
(checkpoint, hyper-parameters); the test split is read once, at the end.
Only one input channel is supported for now.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from medssl.errors import DataError

SPLIT_FOLDERS = {
    "train": ("imagesTr", "labelsTr"),
    "unlabeled": ("imagesUnlabeled", None),
    "val": ("imagesVal", "labelsVal"),
    "test": ("imagesTs", "labelsTs"),
}


@dataclass(frozen=True)
class Case:
    """One case: its name, image file and (for labeled splits) label file."""

    name: str
    image: Path
    label: Path | None = None
    split: str = "train"


@dataclass
class DatasetSpec:
    """The parsed ``dataset.json``."""

    name: str
    labels: dict[str, int]
    channel_names: dict[str, str]
    file_ending: str = ".nii.gz"
    num_training: int | None = None

    @property
    def num_classes(self) -> int:
        """Number of output channels (background included)."""
        return max(self.labels.values()) + 1

    @property
    def class_names(self) -> list[str]:
        inv = {v: k for k, v in self.labels.items()}
        return [inv.get(i, f"class_{i}") for i in range(self.num_classes)]

    @property
    def modality(self) -> str:
        return next(iter(self.channel_names.values()), "unknown")

    def to_json(self) -> dict:
        return {
            "name": self.name,
            "channel_names": self.channel_names,
            "labels": self.labels,
            "file_ending": self.file_ending,
            "numTraining": self.num_training,
        }


def read_dataset_json(root: str | Path) -> DatasetSpec:
    from medssl.core.jsonfile import read_json

    path = Path(root) / "dataset.json"
    if not Path(root).is_dir():
        raise DataError("dataset folder not found", root)
    if not path.is_file():
        raise DataError("no dataset.json: not a medssl/nnU-Net dataset folder (see `medssl sample-data`)", root)
    raw = read_json(path)
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError("needs a 'labels' object mapping class names to integer values", path)
    # nnU-Net allows region labels as lists; medssl takes plain integer classes.
    bad = {k: v for k, v in labels.items() if not isinstance(v, int) or v < 0}
    if bad:
        raise DataError(f"label values must be non-negative integers, got {bad}", path)
    if 0 not in labels.values():
        raise DataError("'labels' must declare the background as value 0", path)
    channels = raw.get("channel_names", raw.get("modality", {"0": "unknown"}))
    if not isinstance(channels, dict) or len(channels) != 1:
        raise DataError(f"medssl supports exactly one input channel, 'channel_names' is {channels!r}", path)
    return DatasetSpec(
        name=str(raw.get("name", Path(root).name)),
        labels={str(k): int(v) for k, v in labels.items()},
        channel_names={str(k): str(v) for k, v in channels.items()},
        file_ending=str(raw.get("file_ending", ".nii.gz")),
        num_training=raw.get("numTraining"),
    )


def write_dataset_json(root: str | Path, spec: DatasetSpec) -> Path:
    from medssl.core.jsonfile import write_json

    return write_json(Path(root) / "dataset.json", spec.to_json())


def list_cases(root: str | Path, split: str, spec: DatasetSpec | None = None) -> list[Case]:
    """Cases of one split (``train``, ``unlabeled``, ``test``), sorted by name.

    Label files are matched by case name; a missing label gives ``label=None`` here and is reported
    by :func:`medssl.data.check.check_dataset`.
    """
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
    root = Path(root)
    spec = spec or read_dataset_json(root)
    img_dir, lab_dir = SPLIT_FOLDERS[split]
    if not (root / img_dir).is_dir():
        return []
    ending = spec.file_ending
    cases = []
    for img in sorted((root / img_dir).iterdir()):
        if not img.name.endswith(ending) or img.name.startswith("."):
            continue
        stem = img.name[: -len(ending)]
        name = stem[:-5] if stem.endswith("_0000") else stem
        label = None
        if lab_dir is not None:
            cand = root / lab_dir / f"{name}{ending}"
            label = cand if cand.is_file() else None
        cases.append(Case(name=name, image=img, label=label, split=split))
    return cases


def image_path(root: str | Path, split: str, name: str, ending: str = ".nii.gz") -> Path:
    return Path(root) / SPLIT_FOLDERS[split][0] / f"{name}_0000{ending}"


def label_path(root: str | Path, split: str, name: str, ending: str = ".nii.gz") -> Path:
    lab = SPLIT_FOLDERS[split][1]
    if lab is None:
        raise ValueError(f"split {split!r} has no labels")
    return Path(root) / lab / f"{name}{ending}"
