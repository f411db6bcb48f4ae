"""Faults of one case of a dataset, each built in a copy of the sample dataset: ``data check``
reports it and :func:`medssl.data.preflight.preflight` refuses it, in one line naming the file,
the case and the values, before any training or prediction."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from medssl.data.check import check_dataset
from medssl.data.dataset import read_dataset_json
from medssl.data.io import read_volume, write_volume
from medssl.data.preflight import PreflightError, preflight
from medssl.data.volume import Volume
from medssl.errors import DataError
from tests.faults.conftest import all_cases, sheared, write_nifti_raw, zero_scale

TR, UL, VA = "phantom_tr_000", "phantom_ul_000", "phantom_va_001"


def _image(root: Path, name: str) -> Path:
    return next(c.image for c in all_cases(root) if c.name == name)


def _label(root: Path, name: str) -> Path:
    return next(c.label for c in all_cases(root) if c.name == name)


def _rewrite(path: Path, change: Callable[[Volume], Volume]) -> Path:
    write_volume(change(read_volume(path)), path)
    return path


def _nan_in_image(root: Path) -> tuple[Path, str, str, list[str]]:
    def nan(v: Volume) -> Volume:
        arr = v.array.astype(np.float32)
        arr[3, 4, 5] = np.nan
        return v.with_array(arr)

    return _rewrite(_image(root, TR), nan), TR, "nonfinite", ["1 of 16384 voxels are not finite (1 NaN, 0 inf)"]


def _inf_in_unlabeled(root: Path):
    def inf(v: Volume) -> Volume:
        arr = v.array.astype(np.float32)
        arr[0, 0, 0] = -np.inf
        return v.with_array(arr)

    return _rewrite(_image(root, UL), inf), UL, "nonfinite", ["(0 NaN, 1 inf)"]


def _geometry(attr: str, value) -> Callable:
    def fault(root: Path):
        def change(v: Volume) -> Volume:
            geom = dict(spacing=v.spacing, origin=v.origin, direction=v.direction)
            geom[attr] = value
            return Volume(v.array, **geom)

        return _rewrite(_label(root, VA), change), VA, "geometry_mismatch", [f"image and label geometry differ: {attr}"]

    return fault


def _shape(root: Path):
    lab = _label(root, TR)
    _rewrite(lab, lambda v: Volume(v.array[:, :, :15].copy(), v.spacing, v.origin, v.direction))
    return lab, TR, "geometry_mismatch", ["shape (32, 32, 16) (image) vs (32, 32, 15) (label)"]


def _label_value(value: int, dtype) -> Callable:
    def fault(root: Path):
        def change(v: Volume) -> Volume:
            arr = v.array.astype(dtype)
            arr[1, 1, 1] = value
            return v.with_array(arr)

        msg = f"has label values not declared in dataset.json: {value} (declared: 0, 1, 2, 3)"
        return _rewrite(_label(root, TR), change), TR, "undeclared_labels", [msg]

    return fault


def _bad_affine(edit, needle: str) -> Callable:
    def fault(root: Path):
        import nibabel as nib

        path = _image(root, TR)
        write_nifti_raw(path, np.asarray(nib.load(path).dataobj), edit)
        return path, TR, "bad_geometry", [needle]

    return fault


FAULTS = {
    "nan-voxel": _nan_in_image,
    "inf-voxel-unlabeled": _inf_in_unlabeled,
    "shape": _shape,
    "spacing": _geometry("spacing", (1.0, 1.0, 1.0)),
    "origin": _geometry("origin", (5.0, 0.0, 0.0)),
    "direction": _geometry("direction", np.diag([1.0, -1.0, -1.0])),
    "label-7": _label_value(7, np.uint8),
    "label-minus-1": _label_value(-1, np.int16),
    "zero-scale-affine": _bad_affine(zero_scale, "zero-scale affine in the sform: voxel size 0 along array axis 2"),
    "sheared-affine": _bad_affine(sheared, "sheared affine in the sform (non-orthogonal axes"),
}


@pytest.mark.parametrize("name", list(FAULTS))
def test_check_reports_and_preflight_refuses(dataset: Path, tmp_path: Path, name: str):
    path, case, code, needles = FAULTS[name](dataset)

    report = check_dataset(dataset, progress=False)
    found = [p for p in report.errors if p.code == code]
    assert len(found) == 1 and found[0].path == path and found[0].case == case, report.format()
    for needle in needles:
        assert needle in found[0].message

    spec = read_dataset_json(dataset)
    for kw in (dict(use_cache=False), dict(volume_cache=tmp_path / "volumes")):
        with pytest.raises(DataError) as info:
            preflight(all_cases(dataset), spec, **kw)
        assert isinstance(info.value, PreflightError)
        msg = str(info.value)
        assert msg.startswith(f"{path}: case {case} (") and "\n" not in msg, msg
        for needle in needles:
            assert needle in msg
        assert [p.code for p in info.value.problems] == [code]


def test_geometry_message_gives_both_values(dataset: Path):
    path, *_ = _geometry("spacing", (1.0, 1.0, 1.0))(dataset)
    with pytest.raises(PreflightError) as info:
        preflight(all_cases(dataset), read_dataset_json(dataset), use_cache=False)
    sx, sy, sz = read_volume(_image(dataset, VA)).spacing
    assert f"spacing ({sx:.6g}, {sy:.6g}, {sz:.6g}) vs (1, 1, 1) mm" in str(info.value)


def test_several_faults_one_line_with_a_count(dataset: Path):
    _nan_in_image(dataset)
    _label_value(7, np.uint8)(dataset)
    _inf_in_unlabeled(dataset)
    with pytest.raises(PreflightError) as info:
        preflight(all_cases(dataset), read_dataset_json(dataset), use_cache=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"{_image(dataset, TR)}: case {TR} (train): 1 of 16384 voxels are not finite")
    assert f"(and 2 more errors in this case and in case {UL}; `medssl data check {dataset}` lists them all)" in msg
    assert len(info.value.problems) == 3


def test_preflight_checks_only_the_cases_given(dataset: Path):
    """A broken training label does not stop a command that only reads unlabeled images."""
    _label_value(7, np.uint8)(dataset)
    unlabeled = [c for c in all_cases(dataset) if c.split == "unlabeled"]
    preflight(unlabeled, read_dataset_json(dataset), use_cache=False)
    preflight([], None)
