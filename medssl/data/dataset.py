"""The medssl dataset folder: nnU-Net v2's raw layout plus a folder of unlabeled images.

::

    DIR/
      dataset.json          {"name", "channel_names": {"0": "CT"}, "labels": {"background": 0, ...},
                             "file_ending": ".nii.gz", "numTraining": N}
      imagesTr/<case>_0000.nii.gz   labeled training images (channel 0; channel k: <case>_000k)
      labelsTr/<case>.nii.gz        their label maps (integer values declared in "labels")
      imagesUnlabeled/<case>_0000.nii.gz   unlabeled images (semi-/self-supervised methods)
      imagesVal/<case>_0000.nii.gz  validation images (optional; model selection)
      labelsVal/<case>.nii.gz       their label maps
      imagesTs/<case>_0000.nii.gz   test images
      labelsTs/<case>.nii.gz        test labels (used for the reported metrics)

An nnU-Net v2 raw dataset is therefore already a medssl dataset (without unlabeled images and
without a validation split). The validation split (``"val"``) is where choices are made
(checkpoint, hyper-parameters); the test split is read once, at the end.

Channels: ``channel_names`` declares N input channels (``{"0": "T1", "1": "T2"}``, or MSD's
``modality``); channel ``k`` of a case is the file ``<case>_{k:04d}<file_ending>``. With one
channel, a file without the ``_0000`` suffix is taken too. Every case must have all N files
(a missing or extra one is a :class:`~medssl.errors.DataError` naming the case); channel 0 is the
reference geometry that labels and outputs follow (:mod:`medssl.data.channels` checks the others
against it).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from medssl.errors import DataError

_CHANNEL = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")

SPLIT_FOLDERS = {
    "train": ("imagesTr", "labelsTr"),
    "unlabeled": ("imagesUnlabeled", None),
    "val": ("imagesVal", "labelsVal"),
    "test": ("imagesTs", "labelsTs"),
}


@dataclass(frozen=True)
class Case:
    """One case: its name, image file(s) and (for labeled splits) label file.

    ``image`` is channel 0 (the reference geometry); ``channels`` holds channels 1..N-1 in order,
    empty for single-channel data. :attr:`images` gives all N.
    """

    name: str
    image: Path
    label: Path | None = None
    split: str = "train"
    channels: tuple[Path, ...] = ()

    @property
    def images(self) -> tuple[Path, ...]:
        """All channel files, channel 0 first."""
        return (self.image, *self.channels)

    def select(self, keep: Sequence[int]) -> "Case":
        """The case with only channels ``keep`` (in that order; the first becomes channel 0)."""
        images = self.images
        chosen = tuple(images[k] for k in keep)
        return dataclasses.replace(self, image=chosen[0], channels=chosen[1:])


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
    def num_channels(self) -> int:
        """Number of input channels (image files per case)."""
        return len(self.channel_names)

    @property
    def modalities(self) -> list[str]:
        """Channel names in channel order (``"CT"``, ``"T1"``, ...)."""
        return [self.channel_names[k] for k in sorted(self.channel_names, key=int)]

    def select(self, keep: Sequence[int] | None) -> "DatasetSpec":
        """The spec with only channels ``keep`` (renumbered from 0); ``None`` keeps all.

        Raises:
            ConfigError: an empty, repeated or out-of-range channel number.
        """
        if keep is None:
            return self
        from medssl.errors import ConfigError

        keep = [int(k) for k in keep]
        if not keep or len(set(keep)) != len(keep) or not all(0 <= k < self.num_channels for k in keep):
            raise ConfigError(f"data.channels={keep}: pick distinct channel numbers of 0..{self.num_channels - 1} "
                              f"({', '.join(f'{i}={m}' for i, m in enumerate(self.modalities))})")
        names = {str(i): self.modalities[k] for i, k in enumerate(keep)}
        return dataclasses.replace(self, channel_names=names)

    @property
    def modality(self) -> str:
        """Channel 0's name."""
        return self.modalities[0] if self.channel_names else "unknown"

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
    return DatasetSpec(
        name=str(raw.get("name", Path(root).name)),
        labels={str(k): int(v) for k, v in labels.items()},
        channel_names=parse_channel_names(raw.get("channel_names", raw.get("modality", {"0": "unknown"})), path),
        file_ending=str(raw.get("file_ending", ".nii.gz")),
        num_training=raw.get("numTraining"),
    )


def parse_channel_names(channels, path: Path | str | None = None) -> dict[str, str]:
    """``channel_names`` (or MSD's ``modality``) checked: keys ``"0" .. "N-1"``, each a name.

    Raises:
        DataError: not an object, empty, or keys that are not the consecutive integers from 0.
    """
    if not isinstance(channels, dict) or not channels:
        raise DataError(f"'channel_names' must map channel numbers to names, e.g. {{\"0\": \"T1\", \"1\": \"T2\"}}; "
                        f"got {channels!r}", path)
    try:
        keys = sorted(int(k) for k in channels)
    except (TypeError, ValueError):
        raise DataError(f"'channel_names' keys must be channel numbers \"0\", \"1\", ...; got {list(channels)}", path) from None
    if keys != list(range(len(keys))):
        raise DataError(f"'channel_names' keys must be 0..{len(keys) - 1} without gaps; got {list(channels)}", path)
    return {str(int(k)): str(v) for k, v in sorted(channels.items(), key=lambda kv: int(kv[0]))}


def write_dataset_json(root: str | Path, spec: DatasetSpec) -> Path:
    from medssl.core.jsonfile import write_json

    return write_json(Path(root) / "dataset.json", spec.to_json())


@dataclass(frozen=True)
class ChannelFault:
    """A case whose channel files do not match ``channel_names``: ``code`` is ``missing_channel``,
    ``extra_channel`` or ``no_channel_suffix``."""

    case: str
    path: Path
    message: str
    code: str


def list_cases(root: str | Path, split: str, spec: DatasetSpec | None = None) -> list[Case]:
    """Cases of one split (``train``, ``unlabeled``, ``val``, ``test``), sorted by name.

    Label files are matched by case name; a missing label gives ``label=None`` here and is reported
    by :func:`medssl.data.check.check_dataset`. With N > 1 channels, every case needs exactly the
    files ``<case>_0000`` .. ``<case>_{N-1:04d}``.

    Raises:
        DataError: a case with a missing channel file, a channel number beyond N, or (N > 1) an
            image file without a channel suffix; the message names the case and the file.
    """
    cases, faults = scan_cases(root, split, spec)
    if faults:
        more = f" (and {len(faults) - 1} more: `medssl data check` lists them)" if len(faults) > 1 else ""
        raise DataError(faults[0].message + more, faults[0].path)
    return cases


def scan_cases(root: str | Path, split: str, spec: DatasetSpec | None = None) -> tuple[list[Case], list[ChannelFault]]:
    """:func:`list_cases` that reports instead of raising: the complete cases and the channel
    faults (a case with a fault is left out of the cases)."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"unknown split {split!r}; expected one of {sorted(SPLIT_FOLDERS)}")
    root = Path(root)
    spec = spec or read_dataset_json(root)
    img_dir, lab_dir = SPLIT_FOLDERS[split]
    if not (root / img_dir).is_dir():
        return [], []
    ending = spec.file_ending
    n = spec.num_channels
    files: dict[str, dict[int, Path]] = {}
    faults: list[ChannelFault] = []
    images = [p for p in sorted((root / img_dir).iterdir()) if p.name.endswith(ending) and not p.name.startswith(".")]
    stems = {p.name[: -len(ending)] for p in images}
    for img in images:
        stem = img.name[: -len(ending)]
        m = _CHANNEL.match(stem)
        if m is not None and n == 1 and m["channel"] != "0000" and f"{m['case']}_0000" not in stems:
            m = None  # one channel: "p_0012" names a case, unless "p_0000" exists (then it is an extra channel)
        if m is None:
            if n > 1:
                faults.append(ChannelFault(stem, img, f"{n} channels are declared ({', '.join(spec.modalities)}) but "
                                           f"this image has no channel suffix (<case>_0000{ending} .. "
                                           f"<case>_{n - 1:04d}{ending})", "no_channel_suffix"))
                continue
            name, k = stem, 0
        else:
            name, k = m["case"], int(m["channel"])
        if k >= n:
            faults.append(ChannelFault(name, img, f"case {name!r}: channel {k} found but dataset.json declares {n} "
                                       f"channel{'s' if n > 1 else ''} ({', '.join(spec.modalities)}): an extra "
                                       "channel file", "extra_channel"))
            continue
        files.setdefault(name, {})[k] = img
    bad = {f.case for f in faults}
    cases = []
    for name, by_channel in files.items():
        missing = [k for k in range(n) if k not in by_channel]
        if missing:
            have = ", ".join(p.name for _, p in sorted(by_channel.items()))
            faults.append(ChannelFault(name, root / img_dir, f"case {name!r} lacks channel{'s' if len(missing) > 1 else ''} "
                                       + ", ".join(f"{k} ({spec.modalities[k]}: {name}_{k:04d}{ending})" for k in missing)
                                       + f"; found {have}", "missing_channel"))
            continue
        if name in bad:
            continue
        label = None
        if lab_dir is not None:
            cand = root / lab_dir / f"{name}{ending}"
            label = cand if cand.is_file() else None
        chans = tuple(by_channel[k] for k in range(n))
        cases.append(Case(name=name, image=chans[0], label=label, split=split, channels=chans[1:]))
    return cases, faults


def image_path(root: str | Path, split: str, name: str, ending: str = ".nii.gz", channel: int = 0) -> Path:
    """Where channel ``channel`` of case ``name`` lives in a dataset folder."""
    return Path(root) / SPLIT_FOLDERS[split][0] / f"{name}_{channel:04d}{ending}"


def label_path(root: str | Path, split: str, name: str, ending: str = ".nii.gz") -> Path:
    lab = SPLIT_FOLDERS[split][1]
    if lab is None:
        raise ValueError(f"split {split!r} has no labels")
    return Path(root) / lab / f"{name}{ending}"
