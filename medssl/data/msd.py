"""Import a Medical Segmentation Decathlon task (its own layout) as a medssl dataset.

The Decathlon ships ``dataset.json`` with ``"modality": {"0": "MRI"}``, ``"labels": {"0":
"background", "1": ...}`` (value -> name, the reverse of nnU-Net v2's), a ``"training"`` list of
``{"image", "label"}`` pairs with identical file names under ``imagesTr/`` and ``labelsTr/`` (no
``_0000`` channel suffix), an unlabeled ``"test"`` list, and files whose dtypes vary by case (MSD
Hippocampus: images float32 or uint8, two label maps stored as float32).

:func:`import_msd` writes the medssl layout (:mod:`medssl.data.dataset`) with a seeded split of the
labeled cases, recorded in ``dataset.json`` under ``"medssl_split"`` so that every recipe uses the
same cases:

* ``imagesTs/`` + ``labelsTs/``: ``n_test`` labeled cases, read once for the final tables (the
  Decathlon's own test labels are not public, so the test split is carved from its training set);
* ``imagesVal/`` + ``labelsVal/``: ``n_val`` labeled cases for every choice made during a run;
* ``imagesTr/`` + ``labelsTr/``: the rest, the training pool (a recipe's ``data.num_labeled`` and
  ``data.labeled_seed`` choose which of them keep their labels);
* ``imagesUnlabeled/``: the Decathlon's unlabeled test images, when the task has them.

Images are copied byte for byte (their geometry and dtype are the source's); label maps are
written as uint8 after checking that every value is a whole number declared in ``labels`` (a
float32 label map becomes uint8; anything else is refused, naming the file). Every file is written
atomically and ``dataset.json`` last, so an interrupted import is finished by running it again.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from medssl.errors import DataError

#: default split of the labeled cases, as fractions when the counts are not given
DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.1


def read_msd_json(src: str | Path) -> dict:
    """The Decathlon ``dataset.json`` of ``src``, with labels as ``{name: value}`` and the cases
    as ``[(name, image path, label path or None)]`` under ``"training_cases"`` / ``"test_cases"``.

    Raises:
        DataError: missing or malformed file, a case whose file is missing (named).
    """
    from medssl.core.jsonfile import read_json

    src = Path(src)
    raw = read_json(src / "dataset.json", "no dataset.json: not a Decathlon task folder")
    labels = raw.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise DataError("needs a 'labels' object", src / "dataset.json")
    try:  # the Decathlon maps value -> name; nnU-Net v2 name -> value: accept both
        by_name = {str(v): int(k) for k, v in labels.items()}
    except (TypeError, ValueError):
        by_name = {str(k): int(v) for k, v in labels.items()}
    if 0 not in by_name.values():
        raise DataError("'labels' must declare the background as value 0", src / "dataset.json")
    modality = raw.get("modality", raw.get("channel_names", {"0": "unknown"}))
    if not isinstance(modality, dict) or len(modality) != 1:
        raise DataError(f"medssl imports single-channel tasks; this one has {modality!r}", src / "dataset.json")

    def case(entry, labeled: bool):
        image = src / (entry["image"] if isinstance(entry, dict) else entry)
        label = src / entry["label"] if labeled else None
        for p in (image, label):
            if p is not None and not p.is_file():
                raise DataError(f"lists {p.relative_to(src)}, which does not exist", src / "dataset.json")
        name = image.name.split(".nii")[0]
        return name, image, label

    training = [case(e, True) for e in raw.get("training", [])]
    if not training:
        raise DataError("lists no training cases", src / "dataset.json")
    return {"name": str(raw.get("name", src.name)), "labels": by_name, "channel_names": {str(k): str(v) for k, v in modality.items()},
            "training_cases": training, "test_cases": [case(e, False) for e in raw.get("test", [])]}


def split_msd(names: list[str], n_val: int, n_test: int, seed: int) -> dict[str, list[str]]:
    """Seeded split of the labeled case names into ``train`` / ``val`` / ``test`` (sorted lists)."""
    if n_val < 1 or n_test < 1 or n_val + n_test >= len(names):
        raise DataError(f"cannot split {len(names)} labeled cases into {n_val} val, {n_test} test and at least one "
                        "training case")
    order = np.random.default_rng(seed).permutation(len(names))
    test = sorted(names[i] for i in order[:n_test])
    val = sorted(names[i] for i in order[n_test: n_test + n_val])
    train = sorted(names[i] for i in order[n_test + n_val:])
    return {"train": train, "val": val, "test": test}


def _write_label(src: Path, dst: Path, allowed: set[int]) -> None:
    from medssl.data.io import read_volume, write_volume

    vol = read_volume(src)
    arr = np.asarray(vol.array)
    if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
        raise DataError("label map has values that are not whole numbers", src)
    values = {int(v) for v in np.unique(arr)}
    if not values <= allowed:
        raise DataError(f"label values {sorted(values - allowed)} are not declared in dataset.json", src)
    write_volume(vol.with_array(arr.astype(np.uint8)), dst)


def import_msd(
    src: str | Path,
    dst: str | Path,
    seed: int = 0,
    n_val: int | None = None,
    n_test: int | None = None,
    progress: bool = False,
) -> Path:
    """Convert Decathlon task ``src`` into medssl dataset ``dst`` (see the module docstring).

    Args:
        src: the task folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``[, ``imagesTs/``]).
        dst: the new dataset folder (created; an existing non-empty folder is refused unless it
            is an unfinished import of the same split, which is completed).
        seed: seed of the split.
        n_val, n_test: validation and test cases; default 10% and 20% of the labeled cases.
        progress: show a progress bar.

    Returns:
        ``dst``.

    Raises:
        DataError: a malformed task, a label map with undeclared or fractional values, or a
            ``dst`` that holds something else.
    """
    from tqdm.auto import tqdm

    from medssl.core.atomic import write_atomic
    from medssl.core.jsonfile import read_json, write_json
    from medssl.data.dataset import image_path, label_path

    src, dst = Path(src), Path(dst)
    task = read_msd_json(src)
    cases = {name: (img, lab) for name, img, lab in task["training_cases"]}
    n = len(cases)
    n_test = n_test if n_test is not None else max(1, round(DEFAULT_TEST_FRACTION * n))
    n_val = n_val if n_val is not None else max(1, round(DEFAULT_VAL_FRACTION * n))
    split = split_msd(sorted(cases), n_val, n_test, seed)
    record = {"source": str(src.resolve()), "seed": int(seed), **{k: v for k, v in split.items() if k != "train"}}
    if dst.exists() and any(dst.iterdir()):
        partial = dst / ".medssl_import.json"
        if (dst / "dataset.json").exists() or not partial.exists() or read_json(partial) != record:
            raise DataError("is not empty: choose a new folder for the imported dataset", dst)
    dst.mkdir(parents=True, exist_ok=True)
    write_json(dst / ".medssl_import.json", record)  # marks an unfinished import of this split
    allowed = set(task["labels"].values())
    jobs = [(role, name) for role in ("train", "val", "test") for name in split[role]]
    jobs += [("unlabeled", name) for name, _, _ in task["test_cases"]]
    unlabeled_images = {name: img for name, img, _ in task["test_cases"]}
    for role, name in tqdm(jobs, desc="importing", disable=not progress, unit="case"):
        image = cases[name][0] if role != "unlabeled" else unlabeled_images[name]
        out_img = image_path(dst, role, name)
        if not out_img.exists():
            write_atomic(out_img, write_path=lambda tmp, s=image: shutil.copyfile(s, tmp))
        if role != "unlabeled":
            out_lab = label_path(dst, role, name)
            if not out_lab.exists():
                _write_label(cases[name][1], out_lab, allowed)
    for folder in ("imagesTr", "labelsTr", "imagesVal", "labelsVal", "imagesTs", "labelsTs"):
        (dst / folder).mkdir(exist_ok=True)
    write_json(dst / "dataset.json", {
        "name": task["name"], "channel_names": task["channel_names"], "labels": task["labels"],
        "file_ending": ".nii.gz", "numTraining": len(split["train"]),
        "medssl_split": record,
    })  # last: its presence marks a complete dataset
    (dst / ".medssl_import.json").unlink(missing_ok=True)
    return dst
