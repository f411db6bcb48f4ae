"""Tests of ``medssl data check`` on tiny, deliberately broken dataset folders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from medssl.cli import app
from medssl.data.check import CheckReport, check_case, check_dataset
from medssl.data.dataset import Case, DatasetSpec, write_dataset_json
from medssl.data.io import write_volume
from medssl.data.volume import Volume

SHAPE = (8, 8, 4)
SPACING = (1.5, 1.5, 3.0)
LABELS = {"background": 0, "liver": 1, "kidney": 2}


def _geometry(spacing=SPACING, origin=(0.0, 0.0, 0.0), direction=None) -> tuple:
    return spacing, origin, np.eye(3) if direction is None else direction


def _image(seed: int = 0, **geom) -> Volume:
    return Volume(np.random.default_rng(seed).uniform(0, 1000, SHAPE).astype(np.float32), *_geometry(**geom))


def _label(values=(0, 1, 2), dtype=np.uint8, **geom) -> Volume:
    arr = np.zeros(SHAPE, dtype=dtype)
    for i, v in enumerate(values):
        arr[i % SHAPE[0], :, :] = v
    return Volume(arr, *_geometry(**geom))


def _dataset(
    root: Path, train=("a", "b"), unlabeled=("u",), test=("t",), labels=LABELS, num_training=None, val=()
) -> Path:
    """A clean dataset: train/val/test cases with images and labels, unlabeled images (no val by default)."""
    for split, names, img_dir, lab_dir in (
        ("train", train, "imagesTr", "labelsTr"),
        ("unlabeled", unlabeled, "imagesUnlabeled", None),
        ("val", val, "imagesVal", "labelsVal"),
        ("test", test, "imagesTs", "labelsTs"),
    ):
        for i, name in enumerate(names):
            write_volume(_image(i), root / img_dir / f"{name}_0000.nii.gz")
            if lab_dir:
                write_volume(_label(), root / lab_dir / f"{name}.nii.gz")
    n = len(train) if num_training is None else num_training
    write_dataset_json(root, DatasetSpec("tiny", dict(labels), {"0": "MRI"}, ".nii.gz", n))
    return root


def _codes(report: CheckReport, case: str | None = None) -> list[str]:
    return [p.code for p in report.problems if case is None or p.case == case]


def _one(report: CheckReport, code: str):
    found = [p for p in report.problems if p.code == code]
    assert len(found) == 1, report.format()
    return found[0]


# ------------------------------------------------------------------------------------ clean
def test_clean_dataset_is_ok(tmp_path: Path) -> None:
    report = check_dataset(_dataset(tmp_path), progress=False)
    assert report.ok and report.problems == [], report.format()
    assert report.counts == {"train": 2, "unlabeled": 1, "val": 0, "test": 1}
    assert report.labeled == {"train": 2, "val": 0, "test": 1}
    text = report.format()
    assert text.splitlines()[0].startswith(f"dataset {tmp_path} (tiny): train 2 (2 labeled), unlabeled 1, test 1")
    assert "liver=1" in text.splitlines()[0]
    assert text.splitlines()[-1] == "OK"
    assert report.to_json()["ok"] is True


def test_progress_bar(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    check_dataset(_dataset(tmp_path), progress=True)
    assert "checking" in capsys.readouterr().err


# ------------------------------------------------------------------------ unreadable files
def test_truncated_file_is_reported_not_raised(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    path = root / "imagesTr" / "a_0000.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = check_dataset(root, progress=False)
    p = _one(report, "unreadable")
    assert (p.case, p.split, p.path, p.severity) == ("a", "train", path, "error")
    assert "truncated" in p.message and str(path) not in p.message  # the path is shown once, by format()
    assert not report.ok
    # the label of that case is still checked, the other cases too
    assert _codes(report) == ["unreadable"]


def test_not_an_image_and_empty_file(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "labelsTr" / "a.nii.gz").write_text("this is not a NIfTI file")
    (root / "imagesUnlabeled" / "u_0000.nii.gz").write_bytes(b"")
    report = check_dataset(root, progress=False)
    by_case = {p.case: p for p in report.problems}
    assert by_case["a"].code == "unreadable" and by_case["a"].path.name == "a.nii.gz"
    assert by_case["u"].code == "unreadable" and "empty file" in by_case["u"].message
    assert by_case["u"].split == "unlabeled"


def test_not_3d(tmp_path: Path) -> None:
    import SimpleITK as sitk

    root = _dataset(tmp_path)
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((8, 8), np.float32)), str(root / "imagesTr" / "b_0000.nii.gz"))
    report = check_dataset(root, progress=False)
    p = _one(report, "not_3d")
    assert p.case == "b" and "2D" in p.message and p.severity == "error"


# ------------------------------------------------------------------------ missing / orphans
def test_missing_label_and_orphan_label(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "labelsTr" / "a.nii.gz").unlink()
    write_volume(_label(), root / "labelsTs" / "ghost.nii.gz")
    report = check_dataset(root, progress=False)
    missing = _one(report, "missing_label")
    assert (missing.case, missing.split) == ("a", "train")
    assert missing.path == root / "labelsTr" / "a.nii.gz"
    orphan = _one(report, "orphan_label")
    assert (orphan.case, orphan.split, orphan.path.name) == ("ghost", "test", "ghost.nii.gz")
    assert "imagesTs/ghost_0000.nii.gz" in orphan.message
    assert report.labeled["train"] == 1


def test_test_split_without_label_folder_is_a_warning(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    for f in (root / "labelsTs").iterdir():
        f.unlink()
    (root / "labelsTs").rmdir()
    report = check_dataset(root, progress=False)
    assert _codes(report) == ["no_test_labels"] and report.ok


# ----------------------------------------------------------------------- validation split
def test_clean_validation_split(tmp_path: Path) -> None:
    report = check_dataset(_dataset(tmp_path, val=("v1", "v2")), progress=False)
    assert report.ok and report.problems == [], report.format()
    assert report.counts["val"] == 2 and report.labeled["val"] == 2
    summary = report.format().splitlines()[0]
    assert "train 2 (2 labeled), unlabeled 1, val 2 (2 labeled), test 1" in summary


def test_validation_split_is_checked_as_image_label_pairs(tmp_path: Path) -> None:
    root = _dataset(tmp_path, val=("v1", "v2", "v3"))
    write_volume(_label(spacing=(1.5, 1.5, 2.0)), root / "labelsVal" / "v1.nii.gz")
    (root / "labelsVal" / "v2.nii.gz").unlink()
    write_volume(_label(values=(0, 9)), root / "labelsVal" / "v3.nii.gz")
    write_volume(_label(), root / "labelsVal" / "ghost.nii.gz")
    write_volume(_label(values=(0,)), root / "labelsTs" / "t.nii.gz")  # a warning in the test split
    report = check_dataset(root, progress=False)
    assert _codes(report, "v1") == ["geometry_mismatch"]
    assert _codes(report, "v2") == ["missing_label"]
    assert _codes(report, "v3") == ["undeclared_labels"]
    orphan = _one(report, "orphan_label")
    assert (orphan.case, orphan.split) == ("ghost", "val") and "imagesVal/ghost_0000.nii.gz" in orphan.message
    assert {p.split for p in report.errors} == {"val"} and report.labeled["val"] == 2
    lines = report.format().splitlines()
    assert lines.index("val/ghost") < lines.index("val/v1") < lines.index("val/v2") < lines.index("test/t")


def test_validation_split_without_label_folder_is_an_error(tmp_path: Path) -> None:
    """Unlike the test split (nnU-Net raw datasets may ship unlabeled test images), a validation
    split exists to be scored: every image without its label is an error."""
    root = _dataset(tmp_path, val=("v1",))
    (root / "labelsVal" / "v1.nii.gz").unlink()
    (root / "labelsVal").rmdir()
    report = check_dataset(root, progress=False)
    assert _codes(report) == ["missing_label"] and not report.ok


# --------------------------------------------------------------------------------- geometry
@pytest.mark.parametrize(
    ("geom", "what", "values"),
    [
        ({"spacing": (1.5, 1.5, 2.0)}, "spacing", ("(1.5, 1.5, 3)", "(1.5, 1.5, 2)")),
        ({"origin": (0.0, 5.0, 0.0)}, "origin", ("(0, 0, 0)", "(0, 5, 0)")),
        ({"direction": np.diag([-1.0, 1.0, 1.0])}, "direction", ("(1, 0, 0,", "(-1, 0, 0,")),
    ],
)
def test_geometry_mismatch(tmp_path: Path, geom: dict, what: str, values: tuple[str, str]) -> None:
    root = _dataset(tmp_path)
    write_volume(_label(**geom), root / "labelsTr" / "b.nii.gz")
    p = _one(check_dataset(root, progress=False), "geometry_mismatch")
    assert p.case == "b" and p.severity == "error"
    assert f"{what} {values[0]}" in p.message and values[1] in p.message
    assert p.message.count(";") == 0  # only the attribute that differs


def test_shape_mismatch(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    write_volume(Volume(np.zeros((8, 8, 5), np.uint8), SPACING), root / "labelsTs" / "t.nii.gz")
    p = _one(check_dataset(root, progress=False), "geometry_mismatch")
    assert p.case == "t" and "shape (8, 8, 4) (image) vs (8, 8, 5) (label)" in p.message


# ----------------------------------------------------------------------------- label values
def test_undeclared_label_values(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    write_volume(_label(values=(0, 1, 5, 7)), root / "labelsTr" / "a.nii.gz")
    p = _one(check_dataset(root, progress=False), "undeclared_labels")
    assert p.case == "a" and "5, 7" in p.message and "declared: 0, 1, 2" in p.message


def test_non_integer_label_values(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    write_volume(_label(values=(0, 1, 2, 0.5), dtype=np.float32), root / "labelsTr" / "a.nii.gz")
    report = check_dataset(root, progress=False)
    p = _one(report, "non_integer_labels")
    assert p.case == "a" and "0.5" in p.message
    assert "undeclared_labels" not in _codes(report)  # 0, 1, 2 are declared


def test_empty_label_is_a_warning(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    write_volume(_label(values=(0,)), root / "labelsTr" / "a.nii.gz")
    report = check_dataset(root, progress=False)
    p = _one(report, "empty_label")
    assert p.case == "a" and p.severity == "warning"
    assert report.ok
    assert report.format().splitlines()[-1] == "OK (0 errors, 1 warning)"


def test_class_never_seen(tmp_path: Path) -> None:
    root = _dataset(tmp_path, labels={**LABELS, "spleen": 3})
    p = _one(check_dataset(root, progress=False), "class_never_seen")
    assert "'spleen'" in p.message and p.case is None and p.severity == "warning"


# ------------------------------------------------------------------------------ image values
def test_nan_and_inf_in_image(tmp_path: Path) -> None:
    """Counted on the array read by nibabel, which keeps NaN / inf (SimpleITK turned them into 0)."""
    root = _dataset(tmp_path)
    vol = _image()
    vol.array[0, 0, 0] = np.nan
    vol.array[1, 0, 0] = np.inf
    vol.array[2, 0, 0] = np.nan
    write_volume(vol, root / "imagesUnlabeled" / "u_0000.nii.gz")
    p = _one(check_dataset(root, progress=False), "nonfinite")
    assert p.case == "u" and p.split == "unlabeled"
    assert "3 of 256 voxels are not finite (2 NaN, 1 inf)" in p.message


def test_nan_in_label_map(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    vol = _label(dtype=np.float32)
    vol.array[0, 0, 0] = np.nan
    write_volume(vol, root / "labelsTr" / "b.nii.gz")
    p = _one(check_dataset(root, progress=False), "non_integer_labels")
    assert p.case == "b" and "nan" in p.message


def _nifti_dataset(root: Path, ending: str) -> Path:
    for name in ("a", "b", "c"):
        write_volume(_image(), root / "imagesTr" / f"{name}_0000{ending}")
        write_volume(_label(), root / "labelsTr" / f"{name}{ending}")
    write_dataset_json(root, DatasetSpec("nifti", dict(LABELS), {"0": "MRI"}, ending, 3))
    return root


@pytest.mark.parametrize(
    ("ending", "cut"),
    [
        (".nii", 4),
        (".nii.gz", 16),  # into the deflate data (the last 8 bytes are the gzip CRC and length)
        (".nii.gz", 4),  # only the gzip trailer lost: caught by the CRC/length check
    ],
)
def test_truncated_and_nan_files_are_reported(tmp_path: Path, ending: str, cut: int) -> None:
    """What the NIfTI reader raises or returns reaches the report: truncation, NaN voxels."""
    root = _nifti_dataset(tmp_path, ending)
    assert check_dataset(root, progress=False).problems == []
    path = root / "imagesTr" / f"a_0000{ending}"
    path.write_bytes(path.read_bytes()[:-cut])
    vol = _image()
    vol.array[3, 2, 1] = np.nan
    write_volume(vol, root / "imagesTr" / f"b_0000{ending}")
    report = check_dataset(root, progress=False)
    assert [(p.code, p.case) for p in report.problems] == [("unreadable", "a"), ("nonfinite", "b")], report.format()
    truncated, nan = report.problems
    assert (truncated.path, truncated.split) == (path, "train") and "truncated" in truncated.message
    assert "1 of 256 voxels are not finite (1 NaN, 0 inf)" in nan.message
    assert report.for_case("c") == [] and not report.ok


def test_uncompressed_nifti_dataset(tmp_path: Path) -> None:
    for name in ("a", "b"):
        write_volume(_image(), tmp_path / "imagesTr" / f"{name}_0000.nii")
        write_volume(_label(), tmp_path / "labelsTr" / f"{name}.nii")
    write_dataset_json(tmp_path, DatasetSpec("raw", dict(LABELS), {"0": "CT"}, ".nii", 2))
    assert check_dataset(tmp_path, progress=False).ok
    path = tmp_path / "labelsTr" / "b.nii"
    path.write_bytes(path.read_bytes()[:-10])
    p = _one(check_dataset(tmp_path, progress=False), "unreadable")
    assert p.case == "b" and "truncated" in p.message


def test_nii_beside_nii_gz(tmp_path: Path) -> None:
    """``a.nii`` beside ``a.nii.gz``: a warning; only the file with the dataset's file_ending is read."""
    root = _dataset(tmp_path)
    write_volume(_label(values=(0, 9)), root / "labelsTr" / "a.nii")  # would be undeclared_labels if read
    report = check_dataset(root, progress=False)
    p = _one(report, "ambiguous_file")
    assert p.path == root / "labelsTr" / "a.nii.gz" and "a.nii exists beside it" in p.message
    assert p.severity == "warning" and "only a.nii.gz is used" in p.message
    assert sorted(_codes(report)) == ["ambiguous_file", "stray_file"] and report.ok


def test_constant_image(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    write_volume(Volume(np.full(SHAPE, 7, np.int16), SPACING), root / "imagesTs" / "t_0000.nii.gz")
    p = _one(check_dataset(root, progress=False), "constant_image")
    assert p.case == "t" and p.severity == "error" and "value 7" in p.message


# ---------------------------------------------------------------------------- dataset level
def test_invalid_dataset_json_still_checks_the_files(tmp_path: Path) -> None:
    root = _dataset(tmp_path)
    (root / "dataset.json").write_text("{not json")
    (root / "labelsTr" / "b.nii.gz").unlink()
    report = check_dataset(root, progress=False)
    p = _one(report, "dataset_json")
    assert p.case is None and "valid JSON" in p.message
    assert "missing_label" in _codes(report, "b")
    assert report.format().splitlines()[2] == "[dataset]"


def test_missing_dataset_json_and_missing_folder(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds")
    (root / "dataset.json").unlink()
    assert "no dataset.json" in _one(check_dataset(root, progress=False), "dataset_json").message
    report = check_dataset(tmp_path / "nowhere", progress=False)
    assert not report.ok and "not found" in report.problems[0].message


def test_structure_warnings(tmp_path: Path) -> None:
    root = _dataset(tmp_path, test=("a",), num_training=5)
    (root / "imagesTr" / "notes.txt").write_text("x")
    (root / "imagesTr" / ".a_0000.abc123.tmp.nii.gz").write_bytes(b"partial")
    report = check_dataset(root, progress=False)
    assert sorted(_codes(report)) == ["duplicate_case", "num_training", "stray_file", "stray_file"]
    assert report.ok
    assert "numTraining is 5 but imagesTr holds 2" in _one(report, "num_training").message


def test_no_training_images(tmp_path: Path) -> None:
    root = _dataset(tmp_path, train=())
    report = check_dataset(root, progress=False)
    assert _codes(report) == ["no_training_cases"] and not report.ok


# ------------------------------------------------------------------------- every problem, CLI
def _broken(root: Path) -> Path:
    _dataset(root, train=("a", "b", "c", "d"))
    path = root / "imagesTr" / "a_0000.nii.gz"
    path.write_bytes(path.read_bytes()[:100])  # truncated image
    write_volume(_label(values=(0, 9)), root / "labelsTr" / "a.nii.gz")  # ...and a bad label
    write_volume(_label(spacing=(1.0, 1.0, 1.0)), root / "labelsTr" / "b.nii.gz")
    (root / "labelsTr" / "c.nii.gz").unlink()
    write_volume(_label(values=(0,)), root / "labelsTr" / "d.nii.gz")
    return root


def test_reports_every_problem_grouped_per_case(tmp_path: Path) -> None:
    report = check_dataset(_broken(tmp_path), progress=False)
    assert _codes(report, "a") == ["unreadable", "undeclared_labels"]
    assert _codes(report, "b") == ["geometry_mismatch"]
    assert _codes(report, "c") == ["missing_label"]
    assert _codes(report, "d") == ["empty_label"]
    assert len(report.errors) == 4 and len(report.warnings) == 1
    text = report.format()
    lines = text.splitlines()
    assert lines[-1] == "4 errors, 1 warning"
    assert lines.index("train/a") < lines.index("train/b") < lines.index("train/c") < lines.index("train/d")
    a = lines.index("train/a")
    assert lines[a + 1].startswith("  error    imagesTr/a_0000.nii.gz: ")
    assert lines[a + 2].startswith("  error    labelsTr/a.nii.gz: has label values not declared")
    assert any(ln.startswith("  warning  labelsTr/d.nii.gz: is empty") for ln in lines)


def test_to_json(tmp_path: Path) -> None:
    data = json.loads(json.dumps(check_dataset(_broken(tmp_path), progress=False).to_json()))
    assert data["ok"] is False and data["n_errors"] == 4 and data["n_warnings"] == 1
    assert data["counts"]["train"] == 4 and data["labels"] == LABELS
    first = data["problems"][0]
    assert set(first) == {"case", "split", "path", "severity", "code", "message"}
    assert first["case"] == "a" and first["path"].endswith("a_0000.nii.gz")


def test_cli_exit_codes(tmp_path: Path) -> None:
    runner = CliRunner()
    clean = runner.invoke(app, ["data", "check", str(_dataset(tmp_path / "clean"))])
    assert clean.exit_code == 0, clean.output
    assert "OK" in clean.output
    broken = runner.invoke(app, ["data", "check", str(_broken(tmp_path / "broken"))])
    assert broken.exit_code == 1
    assert "4 errors, 1 warning" in broken.output and "train/c" in broken.output
    as_json = runner.invoke(app, ["data", "check", "--json", str(tmp_path / "broken")])
    assert as_json.exit_code == 1
    assert json.loads(as_json.stdout)["n_errors"] == 4


def test_real_volumes(shared_data: Path, tmp_path: Path) -> None:
    """Real CT volumes (copied into tmp_path): a clean case, undeclared labels, mismatched pair."""
    import shutil

    vols = shared_data / "volumes"
    pairs = {
        "spleen": ("spleen_ct", "spleen_ct"),
        "abdomen": ("abdomen_ct", "abdomen_ct"),
        "mixed": ("abdomen_ct", "spleen_ct"),  # image of one, label of the other
    }
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for name, (img, lab) in pairs.items():
        shutil.copy(vols / img / "image.nii.gz", tmp_path / "imagesTr" / f"{name}_0000.nii.gz")
        shutil.copy(vols / lab / "label.nii.gz", tmp_path / "labelsTr" / f"{name}.nii.gz")
    write_dataset_json(tmp_path, DatasetSpec("real", {"background": 0, "spleen": 1}, {"0": "CT"}, ".nii.gz", 3))
    report = check_dataset(tmp_path, progress=False)
    assert report.for_case("spleen") == []
    assert _codes(report, "abdomen") == ["undeclared_labels"]
    assert "(40 in all)" in report.for_case("abdomen")[0].message
    mixed = report.for_case("mixed")
    assert [p.code for p in mixed] == ["geometry_mismatch"]
    assert all(f"{k} " in mixed[0].message for k in ("shape", "spacing", "origin"))


def test_bad_geometry_is_its_own_code(tmp_path: Path) -> None:
    """A sheared image is a ``bad_geometry`` error (not ``unreadable``); its label is still checked."""
    root = _dataset(tmp_path)
    direction = np.eye(3)
    direction[:, 1] = [0.6, 0.8, 0.0]
    # NRRD keeps a sheared direction as written (ITK's NIfTI writer would orthogonalise it)
    write_volume(_image(direction=direction), root / "imagesTr" / "a_0000.nrrd")
    (root / "imagesTr" / "a_0000.nii.gz").unlink()
    spec = DatasetSpec("tiny", dict(LABELS), {"0": "MRI"}, ".nrrd", 2)
    case = Case("a", root / "imagesTr" / "a_0000.nrrd", root / "labelsTr" / "a.nii.gz", "train")
    problems = check_case(case, set(spec.labels.values()))
    assert [p.code for p in problems] == ["bad_geometry"]
    assert problems[0].message.startswith("sheared affine (space directions) (non-orthogonal axes: array axes 0 and 1")


def test_check_case_through_the_volume_cache_finds_the_same(tmp_path: Path) -> None:
    """preflight reads through the memory-mapped cache: same problems as data check's reader."""
    from medssl.data.cache import VolumeCache

    root = _dataset(tmp_path / "ds")
    write_volume(_label(values=(0, 1, 7)), root / "labelsTr" / "b.nii.gz")
    img = _image(1)
    img.array[0, 0, 0] = np.nan
    write_volume(img, root / "imagesTr" / "b_0000.nii.gz")
    case = Case("b", root / "imagesTr" / "b_0000.nii.gz", root / "labelsTr" / "b.nii.gz", "train")
    cache = VolumeCache(tmp_path / "cache")
    direct = check_case(case, set(LABELS.values()))
    cached = check_case(case, set(LABELS.values()), read=lambda p: cache.get(p).volume())
    assert [p.code for p in direct] == ["nonfinite", "undeclared_labels"]
    assert cached == direct
    report = check_dataset(root, progress=False)
    assert [p for p in report.for_case("b")] == direct


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.int32, np.int64, np.uint64, bool, np.float32])
def test_unique_values_matches_numpy(dtype) -> None:
    from medssl.data.check import _unique_values

    rng = np.random.default_rng(0)
    low = -2 if np.dtype(dtype).kind == "i" else 0
    arr = rng.integers(low, 5, (9, 7, 5)).astype(dtype)
    assert np.array_equal(_unique_values(arr), np.unique(arr))
    assert _unique_values(arr).dtype == np.unique(arr).dtype
    wide = np.array([0, 1, 100_000], dtype=np.int64).reshape(1, 1, 3)  # a range too wide to count
    assert np.array_equal(_unique_values(wide), [0, 1, 100_000])
