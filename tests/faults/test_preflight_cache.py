"""The preflight results cache: a second run with unchanged files reads no volume; a changed file
(or changed dataset.json labels) is checked again; a failing case is never remembered; nothing is
written into the dataset folder."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import medssl.data.preflight as pf
from medssl.core.paths import cache_root
from medssl.data.cache import VolumeCache
from medssl.data.dataset import read_dataset_json
from medssl.data.preflight import PreflightError, preflight, preflight_cache_file
from tests.faults.conftest import all_cases


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def _no_reading(monkeypatch):
    """Make every way of reading a volume fail."""

    def boom(*args, **kwargs):
        raise AssertionError("a volume was read")

    monkeypatch.setattr("medssl.data.io.read_volume", boom)
    monkeypatch.setattr(VolumeCache, "get", boom)


def _count_checks(monkeypatch) -> list[str]:
    checked: list[str] = []
    real = pf.check_case

    def counting(case, *args, **kwargs):
        checked.append(case.name)
        return real(case, *args, **kwargs)

    monkeypatch.setattr(pf, "check_case", counting)
    return checked


@pytest.mark.parametrize("through_volume_cache", [False, True], ids=["read_volume", "volume-cache"])
def test_second_run_reads_nothing(dataset: Path, tmp_path: Path, monkeypatch, through_volume_cache: bool):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    kw = dict(volume_cache=tmp_path / "volumes") if through_volume_cache else {}
    before = _files(dataset)
    preflight(cases, spec, **kw)
    results = preflight_cache_file(cases)
    assert results.is_file() and results.is_relative_to(cache_root() / "checks")
    assert _files(dataset) == before  # nothing written into the user's dataset folder

    with monkeypatch.context() as m:
        _no_reading(m)
        preflight(cases, spec, **kw)  # every case remembered: no volume is read


def test_touched_file_is_checked_again(dataset: Path, monkeypatch):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    preflight(cases, spec)
    checked = _count_checks(monkeypatch)
    label = next(c.label for c in cases if c.name == "phantom_ts_001")
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))  # touched, same bytes
    preflight(cases, spec)
    assert checked == ["phantom_ts_001"]
    preflight(cases, spec)
    assert checked == ["phantom_ts_001"]  # and remembered again


def test_changed_file_is_refused_after_a_cached_pass(dataset: Path):
    """The cache never hides a fault introduced after a passing run."""
    import nibabel as nib

    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    preflight(cases, spec)
    image = next(c.image for c in cases if c.name == "phantom_ul_001")
    img = nib.load(image)
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[0, 0, 0] = np.nan
    nib.save(nib.Nifti1Image(arr, img.affine), image)
    with pytest.raises(PreflightError, match="phantom_ul_001 .unlabeled.: 1 of 16384 voxels are not finite"):
        preflight(cases, spec)


def test_other_labels_check_again(dataset: Path, monkeypatch):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    preflight(cases, spec)
    checked = _count_checks(monkeypatch)
    preflight(cases, replace(spec, labels={**spec.labels, "tumour": 4}))
    assert len(checked) == len(cases)


def test_failing_case_is_not_remembered(dataset: Path, monkeypatch):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    narrow = replace(spec, labels={"background": 0, "liver": 1})  # labels 2 and 3 become undeclared
    for _ in range(2):
        with pytest.raises(PreflightError, match="not declared in dataset.json: 2, 3"):
            preflight(cases, narrow)
    checked = _count_checks(monkeypatch)
    with pytest.raises(PreflightError):
        preflight(cases, narrow)
    labeled = [c.name for c in cases if c.label is not None]
    assert checked == labeled  # the unlabeled images passed and were remembered


def test_use_cache_false_always_checks(dataset: Path, monkeypatch):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    preflight(cases, spec)
    checked = _count_checks(monkeypatch)
    preflight(cases, spec, use_cache=False)
    assert len(checked) == len(cases)


def test_damaged_results_file_means_check_again(dataset: Path, monkeypatch):
    cases, spec = all_cases(dataset), read_dataset_json(dataset)
    preflight(cases, spec)
    preflight_cache_file(cases).write_text('{"check_version": 1, "passed": ')
    checked = _count_checks(monkeypatch)
    preflight(cases, spec)
    assert len(checked) == len(cases)
