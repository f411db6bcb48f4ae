"""Refuse broken cases before heavy work: the checks of ``medssl data check``, once per file version.

``train``, ``pseudo-label`` and ``infer`` call :func:`preflight` on the cases they are about to
use, before training or predicting. It runs :func:`medssl.data.check.check_case` (the very checks
of ``medssl data check``: readable 3D volume, regular orthogonal geometry, no NaN / inf voxel, not
constant; label values declared in ``dataset.json`` and whole numbers; image and label on the
same grid) and raises one :class:`PreflightError` (a :class:`~medssl.errors.DataError`) naming the
first failing file, the case and the values, e.g.::

    /data/labelsTr/a.nii.gz: case a (train): has label values not declared in dataset.json: 7
    (declared: 0, 1, 2) (and 2 more errors in cases b, c; `medssl data check /data` lists them all)

(one line). Warnings of ``data check`` (an empty label map, ...) do not stop a run.

Speed: with ``volume_cache`` the volumes are read through the memory-mapped
:class:`~medssl.data.cache.VolumeCache` the run needs anyway, so the first check pays the one
conversion per file that training would pay, and the checks themselves scan memory maps. Cases
that pass are remembered in a small JSON file in the cache root
(``medssl.core.paths.cache_dir("checks", <dataset folder>)/passed.json``), keyed per case by the
resolved path, size and mtime_ns of its image and label files (a DICOM folder: summed sizes and
newest mtime, as the volume cache does), the declared label values and :data:`CHECK_VERSION`; a
later run only ``stat``-s the files and re-checks a case whose files or labels changed. Failing
cases are never remembered.

Measured on this 2-core machine (busy with other jobs, so +-50%), 64 volumes of 40 sample cases
of 96x96x48 (``generate_sample_data``, 24 with labels): 0.3-0.6 s reading the ``.nii.gz`` files
directly, 0.4-0.5 s through a cold volume cache (the conversion the run needs anyway), 0.05 s on a
warm one, 0.003-0.008 s when every case is remembered (``stat`` only). The 208 real cases of MSD
Hippocampus (416 small volumes): 0.5-0.8 s direct, 1.2-2.2 s cold cache, 0.2-0.3 s warm,
0.015-0.023 s remembered.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from medssl.data.check import check_case
from medssl.data.check_report import Problem
from medssl.data.dataset import SPLIT_FOLDERS, Case, DatasetSpec
from medssl.errors import DataError

__all__ = ["CHECK_VERSION", "PreflightError", "preflight", "preflight_cache_file"]

log = logging.getLogger(__name__)

#: Bumped whenever :func:`medssl.data.check.check_case` checks more or differently: every case is
#: then checked again, whatever the results file says.
CHECK_VERSION = 1
_RESULTS = "passed.json"
_IMAGE_FOLDERS = {img for img, _ in SPLIT_FOLDERS.values()}


class PreflightError(DataError):
    """Cases failed the checks; the message names the first, ``problems`` lists every error.

    Attributes:
        problems: every error-severity :class:`~medssl.data.check_report.Problem` found, in case order.
    """

    def __init__(self, message: str, path: str | Path | None, problems: list[Problem]):
        super().__init__(message, path)
        self.problems = problems


@dataclass(frozen=True)
class _Key:
    entry: str  # which case: "image|label" (resolved paths)
    version: str  # what was checked: hash of paths, sizes, mtimes, labels, CHECK_VERSION


def _file_version(path: Path) -> tuple[int, int] | None:
    from medssl.data.cache import _source_version  # the volume cache's notion of a source version

    try:
        return _source_version(path)
    except OSError:
        return None


def _key(case: Case, declared: list[int] | None, resample_channels: bool = False) -> _Key | None:
    """The results-file key of ``case``, or ``None`` if a file cannot be stat-ed (then it is checked)."""
    parts = []
    for path in (case.image, case.label, *case.channels):
        if path is None:
            parts.append(None)
            continue
        resolved = Path(path).resolve()
        version = _file_version(resolved)
        if version is None:
            return None
        parts.append([str(resolved), *version])
    entry = "|".join("" if p is None else p[0] for p in parts)
    # a single-channel case keeps the key it had before channels existed (no re-check after upgrade)
    raw = json.dumps([CHECK_VERSION, declared, parts] + ([True] if resample_channels else []))
    return _Key(entry, hashlib.sha1(raw.encode("utf-8")).hexdigest())


def _dataset_root(cases: list[Case]) -> Path | None:
    """The dataset folder of the cases (the parent of their images folder), if they share one."""
    roots = {c.image.parent.parent if c.image.parent.name in _IMAGE_FOLDERS else c.image.parent for c in cases}
    return next(iter(roots)) if len(roots) == 1 else None


def preflight_cache_file(cases: Iterable[Case]) -> Path:
    """Where :func:`preflight` remembers the cases of ``cases`` that passed (a JSON file).

    ``medssl.core.paths.cache_dir("checks", <dataset folder>) / "passed.json"``; the dataset folder
    is the parent of the cases' images folder (``imagesTr``...), or their common folder.
    """
    from medssl.core.paths import cache_dir

    cases = list(cases)
    root = _dataset_root(cases)
    if root is None:
        root = Path(os.path.commonpath([str(c.image.resolve().parent) for c in cases])) if cases else Path(".")
    return cache_dir("checks", root) / _RESULTS


def _load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # absent, half-written by a killed process, or not ours: check again
    if not isinstance(data, dict) or data.get("check_version") != CHECK_VERSION:
        return {}
    if not isinstance(data.get("passed"), dict):
        return {}
    return {str(k): str(v) for k, v in data["passed"].items()}


def _save(path: Path, passed: dict[str, str]) -> None:
    from medssl.core.jsonfile import write_json

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, {"check_version": CHECK_VERSION, "passed": dict(sorted(passed.items()))})
    except OSError as exc:  # a read-only cache costs a re-check next time, nothing else
        log.debug("cannot write the preflight results %s: %s", path, exc)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


def _error(errors: list[Problem], cases: list[Case]) -> PreflightError:
    first = errors[0]
    text = f"case {first.case} ({first.split}): {first.message}"
    rest = errors[1:]
    if rest:
        others = list(dict.fromkeys(p.case for p in rest if p.case != first.case))
        where = "in this case" if not others else (
            ("in this case and " if any(p.case == first.case for p in rest) else "")
            + f"in case{'s' * (len(others) != 1)} "
            + ", ".join(str(c) for c in others[:5])
            + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        )
        root = _dataset_root(cases)
        how = f"`medssl data check {root}` lists them all" if root is not None else "`medssl data check` lists them all"
        text += f" (and {_plural(len(rest), 'more error')} {where}; {how})"
    return PreflightError(text, first.path, errors)


def preflight(
    cases: Iterable[Case],
    spec: DatasetSpec | None,
    *,
    volume_cache: "str | Path | None" = None,
    use_cache: bool = True,
    progress: bool = False,
    resample_channels: bool = False,
) -> None:
    """Check the cases a command is about to use; raise before any heavy work if one is broken.

    Signature: ``preflight(cases, spec, *, volume_cache=None, use_cache=True, progress=False,
    resample_channels=False) -> None``.

    Every case is checked with :func:`medssl.data.check.check_case`: its image (and its label
    when ``case.label`` is set) must be a readable 3D volume on a regular orthogonal grid (no
    zero-scale or sheared affine), with no NaN / inf voxel and not constant; label values must be
    whole numbers declared in ``spec``; image and label must agree in shape, spacing, origin and
    direction. All cases are checked, then the first error is raised (with a count of the rest).
    Cases that passed are remembered (module docstring), so a second call with unchanged files
    reads no volume.

    Args:
        cases: the cases to check (any splits; a ``label`` of ``None`` checks the image only, e.g.
            unlabeled images or images to predict). Whether a label is required is the caller's
            business (:func:`medssl.data.check.check_dataset` reports a missing one).
        spec: the dataset's ``dataset.json`` (its label values); ``None`` skips the label-value check.
        volume_cache: a :class:`~medssl.data.cache.VolumeCache` folder: volumes are read (and
            converted on first use) through it, as the run will read them; ``None`` reads each
            file with :func:`medssl.data.io.read_volume` and writes no volume cache.
        use_cache: remember passing cases and skip them while their files are unchanged; ``False``
            checks everything and writes no results file.
        progress: a tqdm bar (stderr) over the cases that are actually checked.
        resample_channels: the run resamples channels that are not on channel 0's grid (their
            mismatch is not an error).

    Raises:
        PreflightError: (a :class:`~medssl.errors.DataError`) one line: ``"<file>: case <name>
            (<split>): <problem>"``, plus ``"(and N more errors in cases ...; `medssl data check
            DIR` lists them all)"`` when there are more; ``.problems`` holds every error. E.g.
            ``"<label>: case a (train): image and label geometry differ: spacing (1, 1, 1) vs
            (1, 1, 2) mm"``, ``"<image>: case u (unlabeled): 1 of 4096 voxels are not finite (1 NaN,
            0 inf)"``, ``"<image>: case a (train): zero-scale affine in the sform: voxel size 0
            along array axis 2 (...)"``.
    """
    from tqdm.auto import tqdm

    cases = list(cases)
    if not cases:
        return
    declared = None if spec is None else sorted(set(spec.labels.values()))
    declared_set = None if declared is None else set(declared)
    if volume_cache is not None:
        from medssl.data.cache import VolumeCache

        cache = volume_cache if isinstance(volume_cache, VolumeCache) else VolumeCache(volume_cache)

        def read(path: Path):
            return cache.get(path).volume()
    else:
        from medssl.data.io import read_volume as read

    results = preflight_cache_file(cases) if use_cache else None
    passed = _load(results) if results is not None else {}
    keys = [_key(c, declared, resample_channels) if use_cache else None for c in cases]
    todo = [(c, k) for c, k in zip(cases, keys) if k is None or passed.get(k.entry) != k.version]
    errors: list[Problem] = []
    newly = 0
    for case, key in tqdm(todo, desc="checking data", unit="case", disable=not progress or not todo, leave=False):
        found = [p for p in check_case(case, declared_set, read=read, resample_channels=resample_channels)
                 if p.severity == "error"]
        errors.extend(found)
        if not found and key is not None:
            passed[key.entry] = key.version
            newly += 1
    if newly and results is not None:
        _save(results, passed)
    log.debug("preflight: %d cases, %d checked, %d errors", len(cases), len(todo), len(errors))
    if errors:
        raise _error(errors, cases)
