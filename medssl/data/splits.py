"""Which cases a run trains on, selects checkpoints on, and reports on: kept strictly apart.

* **val** (checkpoint selection, every choice made during a run): the dataset's ``imagesVal/`` +
  ``labelsVal/`` when it has them, else ``num_val`` labeled cases held out of ``imagesTr/``,
  drawn with ``split_seed`` (default 20% of them, at least one). The draw depends on nothing
  else, so every run of an experiment (seeds, label budgets, methods) shares one validation set.
* **train**: the other labeled cases of ``imagesTr/``, optionally only ``num_labeled`` of them
  (the first N, or N drawn with ``labeled_seed``: which cases are labeled is part of the
  experiment), plus reviewed pseudo-labels added by the caller.
* **test**: ``imagesTs/`` + ``labelsTs/``, never used before the final evaluation.
* **unlabeled**: ``imagesUnlabeled/``, plus with ``unlabeled_from_train`` the training cases that
  ``num_labeled`` left out (labels dropped: the semi-supervised protocol "label N of the pool, the
  rest is unlabeled"); **pretraining** pools ``train`` (labels dropped) and
  ``unlabeled``: validation and test images never reach a self-supervised stage either.

:func:`split_cases` checks that no image appears in two of train / val / test.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medssl.data.dataset import Case, DatasetSpec, list_cases, read_dataset_json
from medssl.errors import ConfigError, DataError

DEFAULT_VAL_FRACTION = 0.2


@dataclass
class Splits:
    """The cases of one run, by role (see the module docstring)."""

    spec: DatasetSpec
    train: list[Case]
    val: list[Case]
    test: list[Case]
    unlabeled: list[Case] = field(default_factory=list)
    val_source: str = ""

    def pretraining_pool(self) -> list[Case]:
        """Training images (labels dropped) and unlabeled images: what a self-supervised stage sees."""
        return [dataclasses.replace(c, label=None) for c in self.train + self.unlabeled]


def _labeled(cases: list[Case]) -> list[Case]:
    return [c for c in cases if c.label is not None]


def split_cases(
    root: str | Path,
    num_val: int | None = None,
    split_seed: int = 0,
    num_labeled: int | None = None,
    labeled_seed: int | None = None,
    require_val: bool = True,
    unlabeled_from_train: bool = False,
) -> Splits:
    """The train / val / test / unlabeled cases of dataset ``root``.

    Args:
        root: a medssl dataset folder.
        num_val: labeled ``imagesTr/`` cases held out for validation; ``None``: ``imagesVal/``
            when present, else :data:`DEFAULT_VAL_FRACTION` of ``imagesTr/`` (at least 1).
        split_seed: seed of that draw.
        num_labeled: keep only N of the remaining labeled training cases.
        labeled_seed: draw those N at random with this seed instead of taking the first N.
        require_val: raise when no validation case can be had (a self-supervised stage, which
            has no validation, passes False).
        unlabeled_from_train: the training cases not kept by ``num_labeled`` join the unlabeled
            cases, without their labels.

    Raises:
        DataError: no labeled training case, or none left for validation.
        ConfigError: ``num_val`` with an ``imagesVal/`` folder, or more cases asked for than exist.
    """
    root = Path(root)
    spec = read_dataset_json(root)
    labeled = _labeled(list_cases(root, "train", spec))
    given_val = _labeled(list_cases(root, "val", spec))
    if given_val and num_val is not None:
        raise ConfigError(f"{root} has imagesVal/ ({len(given_val)} cases) and data.num_val={num_val} is set: "
                          "use one validation source (remove data.num_val to validate on imagesVal/)")
    if given_val:
        val, source = given_val, f"imagesVal/ ({len(given_val)} cases)"
    else:
        n = num_val if num_val is not None else max(1, round(DEFAULT_VAL_FRACTION * len(labeled)))
        if require_val and n >= len(labeled):
            raise DataError(
                f"{len(labeled)} labeled training case(s) cannot give {n} validation case(s) and still leave one to "
                "train on: add imagesVal/ + labelsVal/, or more labeled cases", root)
        n = min(n, max(0, len(labeled) - 1))
        pick = set(np.random.default_rng(split_seed).choice(len(labeled), n, replace=False).tolist()) if n else set()
        val = [labeled[i] for i in sorted(pick)]
        labeled = [c for i, c in enumerate(labeled) if i not in pick]
        source = f"{n} of imagesTr/ held out (data.split_seed={split_seed})"
    if not labeled:
        raise DataError("no labeled training cases (imagesTr/ + labelsTr/); run `medssl data check` on it", root)
    pool = labeled
    if num_labeled is not None:
        if num_labeled > len(labeled):
            raise ConfigError(f"data.num_labeled={num_labeled} but {root} has only {len(labeled)} labeled training "
                              f"cases besides the {len(val)} validation case(s)")
        if labeled_seed is None:
            labeled = labeled[:num_labeled]
        else:  # which cases are labeled is part of the experiment: draw them reproducibly
            pick = np.random.default_rng(labeled_seed).choice(len(labeled), num_labeled, replace=False)
            labeled = [labeled[i] for i in sorted(pick)]
    test = _labeled(list_cases(root, "test", spec))
    unlabeled = list_cases(root, "unlabeled", spec)
    if unlabeled_from_train:
        kept = {c.image for c in labeled}
        unlabeled += [dataclasses.replace(c, label=None, split="unlabeled") for c in pool if c.image not in kept]
    splits = Splits(spec, labeled, val, test, unlabeled, source)
    _check_disjoint(splits, root)
    return splits


def _check_disjoint(s: Splits, root: Path) -> None:
    seen: dict[Path, str] = {}
    for role, cases in (("train", s.train), ("val", s.val), ("test", s.test)):
        for c in cases:
            key = c.image.resolve()
            if key in seen and seen[key] != role:
                raise DataError(f"case {c.name!r} is in both the {seen[key]} and the {role} split", root)
            seen[key] = role
