"""Tests of the synthetic phantom dataset (``medssl sample-data``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medssl.cli import app
from medssl.data import phantoms
from medssl.data.check import check_dataset
from medssl.data.dataset import list_cases, read_dataset_json
from medssl.data.io import read_volume
from medssl.data.phantoms import LABELS, SPLIT_STREAMS, case_name, case_rng, generate_sample_data, make_phantom
from medssl.errors import DataError

SHAPE = (48, 48, 24)  # small but big enough for every organ; the default is (96, 96, 48)


def _generate(out: Path, **kw) -> Path:
    kw = {"n_labeled": 2, "n_unlabeled": 2, "n_test": 2, "n_val": 2, "progress": False, "shape": SHAPE, **kw}
    return generate_sample_data(out, **kw)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return _generate(tmp_path_factory.mktemp("phantoms") / "ds", seed=0)


def _labeled(root: Path):
    return list_cases(root, "train") + list_cases(root, "val") + list_cases(root, "test")


def _same_volume(a: Path, b: Path) -> bool:
    """Same dtype, same voxels byte for byte, same geometry (no tolerance)."""
    va, vb = read_volume(a), read_volume(b)
    return va.array.dtype == vb.array.dtype and np.array_equal(va.array, vb.array) and va.same_geometry(vb, atol=0)


def _best_threshold_dice(image: np.ndarray, mask: np.ndarray, n_bins: int = 100) -> float:
    """Best Dice of ``lo <= image <= hi`` over all intervals between intensity quantiles."""
    edges = np.unique(np.quantile(image, np.linspace(0, 1, n_bins + 1)))
    idx = np.searchsorted(edges, image.ravel(), side="right")
    nb = len(edges) + 1
    cum_all = np.concatenate([[0], np.cumsum(np.bincount(idx, minlength=nb))])
    cum_pos = np.concatenate([[0], np.cumsum(np.bincount(idx, weights=mask.ravel(), minlength=nb))])
    m = mask.sum()
    best = 0.0
    for a in range(nb):
        tp, pred = cum_pos[a + 1 :] - cum_pos[a], cum_all[a + 1 :] - cum_all[a]
        best = max(best, float((2 * tp / (pred + m)).max()))
    return best


def test_folder_layout_and_dataset_json(dataset: Path) -> None:
    spec = read_dataset_json(dataset)
    assert spec.labels == LABELS and len(spec.labels) >= 3
    assert spec.channel_names == {"0": "MRI"}
    assert spec.file_ending == ".nii.gz"
    assert spec.num_training == 2
    counts = {split: len(list_cases(dataset, split, spec)) for split in ("train", "unlabeled", "val", "test")}
    assert counts == {"train": 2, "unlabeled": 2, "val": 2, "test": 2}
    assert sorted(p.name for p in (dataset / "imagesTr").iterdir()) == [
        "phantom_tr_000_0000.nii.gz",
        "phantom_tr_001_0000.nii.gz",
    ]
    labels_ts = sorted(p.name for p in (dataset / "labelsTs").iterdir())
    assert labels_ts == ["phantom_ts_000.nii.gz", "phantom_ts_001.nii.gz"]
    assert sorted(p.name for p in (dataset / "imagesVal").iterdir()) == [
        "phantom_va_000_0000.nii.gz",
        "phantom_va_001_0000.nii.gz",
    ]
    labels_va = sorted(p.name for p in (dataset / "labelsVal").iterdir())
    assert labels_va == ["phantom_va_000.nii.gz", "phantom_va_001.nii.gz"]
    assert all(c.label is not None for c in _labeled(dataset))
    assert {p.name for p in dataset.iterdir()} == {
        "dataset.json", "README.md", "imagesTr", "labelsTr", "imagesUnlabeled", "imagesVal", "labelsVal",
        "imagesTs", "labelsTs",
    }
    assert spec.num_training == 2  # validation cases are not training cases
    readme = (dataset / "README.md").read_text()
    assert "liver = 1" in readme and "--seed 0" in readme
    assert "--val 2" in readme and "| validation (labeled) | `imagesVal/`, `labelsVal/` | 2 |" in readme
    assert "phantom_va_000" in readme


def test_generated_dataset_passes_check(dataset: Path) -> None:
    report = check_dataset(dataset, progress=False)
    assert report.ok and report.problems == [], report.format()


def test_labels_exactly_declared_and_every_class_in_every_labeled_case(dataset: Path) -> None:
    for case in _labeled(dataset):
        lab = read_volume(case.label).array
        assert lab.dtype == np.uint8
        assert set(np.unique(lab).tolist()) == set(LABELS.values()), case.name


def test_image_dtype_range_and_geometry(dataset: Path) -> None:
    spacings = []
    for case in _labeled(dataset):
        img, lab = read_volume(case.image), read_volume(case.label)
        assert img.array.dtype == np.int16
        assert img.shape == SHAPE
        assert 0 <= img.array.min() and 600 < img.array.max() < 2000  # MRI-like magnitudes
        assert img.same_geometry(lab)
        sx, sy, sz = img.spacing
        assert sx == sy and 1.2 <= sx <= 1.6 and 2.5 <= sz <= 4.0  # anisotropic, thick slices
        assert sz / sx > 1.5
        np.testing.assert_allclose(img.direction, np.eye(3))
        assert img.orientation == "LPS"
        spacings.append(img.spacing)
    assert len(set(spacings)) == len(spacings)  # spacing varies per case


def test_same_seed_identical_and_independent_of_counts(dataset: Path, tmp_path: Path) -> None:
    # fewer cases per split: case i is the same, whatever the number of other cases
    again = _generate(tmp_path / "again", seed=0, n_labeled=1, n_unlabeled=0, n_test=2)
    for split in ("train", "test"):
        for case in list_cases(again, split):
            ref = next(c for c in list_cases(dataset, split) if c.name == case.name)
            assert _same_volume(case.image, ref.image) and _same_volume(case.label, ref.label)
    assert list_cases(again, "unlabeled") == []


def test_validation_cases_change_no_other_case(dataset: Path, tmp_path: Path) -> None:
    """The validation split has its own random stream: with or without it, every other case is
    the same, byte for byte (the files too), and the validation cases are new cases."""
    assert len({stream for _, stream in SPLIT_STREAMS.values()}) == len(SPLIT_STREAMS)
    assert len({prefix for prefix, _ in SPLIT_STREAMS.values()}) == len(SPLIT_STREAMS)
    without = _generate(tmp_path / "noval", seed=0, n_val=0)
    assert list_cases(without, "val") == [] and len(list_cases(dataset, "val")) == 2
    for split in ("train", "unlabeled", "test"):
        ref_cases, new_cases = list_cases(dataset, split), list_cases(without, split)
        assert [c.name for c in ref_cases] == [c.name for c in new_cases] and len(ref_cases) == 2
        for ref, new in zip(ref_cases, new_cases):
            assert ref.image.read_bytes() == new.image.read_bytes()
            assert _same_volume(ref.image, new.image)
            if ref.label is not None:
                assert ref.label.read_bytes() == new.label.read_bytes()
    # fewer validation cases: validation case 0 is the same
    one = _generate(tmp_path / "oneval", seed=0, n_labeled=0, n_unlabeled=0, n_test=0, n_val=1)
    (ref,), (new,) = list_cases(dataset, "val")[:1], list_cases(one, "val")
    assert ref.name == new.name == case_name("val", 0) == "phantom_va_000"
    assert _same_volume(ref.image, new.image) and _same_volume(ref.label, new.label)
    # validation cases are not copies of the cases of another split
    val = [read_volume(c.label).array for c in list_cases(dataset, "val")]
    others = [read_volume(c.label).array for c in list_cases(dataset, "train") + list_cases(dataset, "test")]
    assert not any(np.array_equal(v, o) for v in val for o in others)
    val_img = [read_volume(c.image).array for c in list_cases(dataset, "val")]
    other_img = [read_volume(c.image).array for s in ("train", "unlabeled", "test") for c in list_cases(dataset, s)]
    assert not any(v.shape == o.shape and np.array_equal(v, o) for v in val_img for o in other_img)


def test_different_seed_differs(dataset: Path, tmp_path: Path) -> None:
    other = _generate(tmp_path / "other", seed=1, n_labeled=1, n_unlabeled=0, n_test=0)
    a = read_volume(list_cases(other, "train")[0].label).array
    b = read_volume(list_cases(dataset, "train")[0].label).array
    assert not np.array_equal(a, b)


def test_make_phantom_deterministic_and_cases_differ() -> None:
    a = make_phantom(case_rng(3, "train", 0), SHAPE)
    b = make_phantom(case_rng(3, "train", 0), SHAPE)
    c = make_phantom(case_rng(3, "train", 1), SHAPE)
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.label.array, b.label.array)
    assert a.image.spacing == b.image.spacing and a.image.origin == b.image.origin
    assert not np.array_equal(a.label.array, c.label.array)
    assert make_phantom(case_rng(3, "test", 0), SHAPE).image.spacing != a.image.spacing  # splits differ


def test_anatomy_is_physical_and_resolution_independent() -> None:
    """The same case at two resolutions has the same spacing and (nearly) the same organ fractions."""
    lo = make_phantom(case_rng(0, "train", 0), (32, 32, 16))
    hi = make_phantom(case_rng(0, "train", 0), (64, 64, 32))
    assert lo.image.spacing == hi.image.spacing
    f_lo = np.bincount(lo.label.array.ravel(), minlength=4) / lo.label.array.size
    f_hi = np.bincount(hi.label.array.ravel(), minlength=4) / hi.label.array.size
    np.testing.assert_allclose(f_lo[1:], f_hi[1:], rtol=0.35)
    # shapes are defined in mm: the liver's extent in mm is similar in-plane and along z,
    # so in voxels it spans fewer slices than columns (slices are 2.5-4 mm, pixels 1.2-1.6 mm)
    idx = np.argwhere(hi.label.array == LABELS["liver"])
    ext_vox = idx.max(0) - idx.min(0) + 1
    ext_mm = ext_vox * np.array(hi.label.spacing)
    assert ext_vox[2] < ext_vox[1]
    assert 0.5 < ext_mm[2] / ext_mm[1] < 2.0


def test_not_solvable_by_a_global_threshold(dataset: Path) -> None:
    for case in _labeled(dataset):
        img = read_volume(case.image).array.astype(np.float32)
        lab = read_volume(case.label).array
        dice = {c: _best_threshold_dice(img, lab == c) for c in (1, 2, 3)}
        assert dice[1] < 0.9, (case.name, dice)
        assert dice[2] < 0.6 and dice[3] < 0.6, (case.name, dice)


def test_organs_have_overlapping_but_distinct_intensities(dataset: Path) -> None:
    case = list_cases(dataset, "train")[0]
    img, lab = read_volume(case.image).array, read_volume(case.label).array
    means = {c: float(img[lab == c].mean()) for c in range(4)}
    stds = {c: float(img[lab == c].std()) for c in range(4)}
    assert 300 < means[1] < 800
    assert stds[1] > 20  # texture, noise and bias field, not a flat region
    assert abs(means[3] - means[1]) < 3 * max(stds[1], stds[3])  # spleen close to liver


def test_refuses_to_overwrite_without_force(tmp_path: Path) -> None:
    out = _generate(tmp_path / "ds", n_labeled=2, n_unlabeled=1, n_test=1)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=r"--force") as err:
        _generate(out, n_labeled=1, n_unlabeled=0, n_test=1)
    assert str(out) in str(err.value)
    before = sorted(p.name for p in (out / "imagesTr").iterdir())
    assert len(before) == 2  # untouched
    _generate(out, n_labeled=1, n_unlabeled=0, n_test=1, force=True)
    assert [c.name for c in list_cases(out, "train")] == ["phantom_tr_000"]  # stale cases removed
    assert list_cases(out, "unlabeled") == []
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 1
    assert (out / "notes.txt").read_text() == "mine"  # unrelated files are kept


def test_empty_existing_folder_is_fine_and_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    _generate(tmp_path / "empty", n_labeled=1, n_unlabeled=0, n_test=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        _generate(tmp_path / "file", force=True)


def test_dataset_json_is_written_last(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = phantoms.write_volume

    def failing(vol, dest, **kw):
        calls.append(dest)
        if len(calls) == 3:
            raise OSError("disk full")
        return real(vol, dest, **kw)

    monkeypatch.setattr(phantoms, "write_volume", failing)
    with pytest.raises(OSError):
        _generate(tmp_path / "ds")
    assert not (tmp_path / "ds" / "dataset.json").exists()
    assert not check_dataset(tmp_path / "ds", progress=False).ok  # the half-written folder is detected


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="shape"):
        _generate(tmp_path / "a", shape=(16, 16, 8))
    with pytest.raises(ValueError, match="counts"):
        _generate(tmp_path / "b", n_labeled=-1)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_progress_bar_shown(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _generate(tmp_path / "ds", n_labeled=1, n_unlabeled=0, n_test=0, progress=True)
    assert "phantoms" in capsys.readouterr().err


def test_cli_sample_data(tmp_path: Path) -> None:
    out = tmp_path / "cli"
    result = CliRunner().invoke(app, ["sample-data", str(out), "--labeled", "2", "--unlabeled", "2", "--test", "1"])
    assert result.exit_code == 0, result.output
    assert f"sample data written to {out}" in result.output
    assert [len(list_cases(out, s)) for s in ("train", "unlabeled", "test")] == [2, 2, 1]
    assert len(list_cases(out, "val")) == 4  # generate_sample_data's default n_val
    assert read_volume(list_cases(out, "train")[0].image).shape == phantoms.DEFAULT_SHAPE
    again = CliRunner().invoke(app, ["sample-data", str(out), "--labeled", "1"])
    assert again.exit_code != 0 and isinstance(again.exception, DataError)
