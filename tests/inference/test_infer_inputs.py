"""Finding cases (files, nnU-Net channel groups, CSV lists, DICOM trees with series options),
the tolerant DICOM read (duplicate and missing slices), shards and progress lines: no model."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import numpy as np
import pytest

from medssl.data.io import read_volume, write_volume
from medssl.data.volume import Volume
from medssl.errors import DataError
from medssl.inference.inputs import SeriesFilter, find_cases


def _vol(path: Path, value: float = 1.0) -> Path:
    write_volume(Volume(np.full((4, 4, 3), value, np.float32)), path)
    return path


def test_folder_of_files_one_channel_drops_a_common_0000(tmp_path: Path):
    for n in ("a_0000", "b_0000"):
        _vol(tmp_path / f"{n}.nii.gz")
    cases, _ = find_cases(tmp_path, 1)
    assert [c.name for c in cases] == ["a", "b"] and all(c.error is None for c in cases)
    _vol(tmp_path / "scan_2019.nrrd")  # not every file has _0000: names are the full stems
    assert [c.name for c in find_cases(tmp_path, 1)[0]] == ["a_0000", "b_0000", "scan_2019"]


def test_folder_groups_channels_by_nnunet_suffix_and_flags_wrong_counts(tmp_path: Path):
    for n in ("a_0000", "a_0001", "b_0000", "b_0001", "c_0000", "d_0000", "d_0002", "loose"):
        _vol(tmp_path / f"{n}.nii.gz")
    cases = {c.name: c for c in find_cases(tmp_path, 2)[0]}
    assert [p.name for p in cases["a"].sources] == ["a_0000.nii.gz", "a_0001.nii.gz"] and cases["a"].error is None
    assert cases["b"].error is None
    assert "_0000; the model takes 2 channels: _0000, _0001" in cases["c"].error
    assert "_0000, _0002" in cases["d"].error
    assert "no channel suffix" in cases["loose"].error


def test_csv_list_relative_paths_and_per_row_errors(tmp_path: Path):
    sub = tmp_path / "imgs"
    sub.mkdir()
    for n in ("p1_t1", "p1_t2", "p2_t1"):
        _vol(sub / f"{n}.nii.gz")
    csv = tmp_path / "list.csv"
    csv.write_text("case,t1,t2\np1,imgs/p1_t1.nii.gz,imgs/p1_t2.nii.gz\np2,imgs/p2_t1.nii.gz,\np1,imgs/p1_t1.nii.gz,imgs/p1_t2.nii.gz\n")
    cases = find_cases(csv, 2)[0]
    assert [c.name for c in cases] == ["p1", "p2", "p1"]
    assert cases[0].error is None and cases[0].sources == [sub / "p1_t1.nii.gz", sub / "p1_t2.nii.gz"]
    assert "no path for channel(s) t2" in cases[1].error
    assert "used by an earlier case" in cases[2].error
    one = find_cases(csv, 1)[0]  # two channel columns for a one-channel model: every row is an error
    assert all("lists 2 channel(s) (t1, t2); the model takes 1" in c.error for c in one[:1])
    bad = tmp_path / "bad.csv"
    bad.write_text("image\nx.nii.gz\n")
    with pytest.raises(DataError, match="header 'case,<channel>"):
        find_cases(bad, 1)


def test_dicom_tree_series_options(shared_data: Path):
    root = shared_data / "dicom"
    cases, notes = find_cases(root, 1)
    names = [c.name for c in cases]
    # the DICOM-SEG of the 3-slice series is no scan: left out with a note, not a failed case
    assert "ct_series_j2k" in names and "ct_3slice_with_seg_series" in names
    assert any("SEG object, not a scan" in n for n in notes)
    j2k = next(c for c in cases if c.name == "ct_series_j2k")
    assert j2k.info["orientation"] == "axial" and j2k.info["n_files"] == 20 and j2k.info["series_key"].startswith("series-")
    assert [c.name for c in find_cases(root, 1, SeriesFilter(min_slices=10))[0]] == ["ct_series_j2k"]
    assert [c.name for c in find_cases(root, 1, SeriesFilter(description="body"))[0]] == ["ct_series_j2k"]
    by_mod = find_cases(root, 1, SeriesFilter(modality="ct", orientation="axial"))[0]
    assert {"ct_series_j2k", "ct_3slice_with_seg_series"} <= {c.name for c in by_mod}
    with pytest.raises(DataError, match="none of its .* DICOM series is selected"):
        find_cases(root, 1, SeriesFilter(orientation="sagittal", modality="CT", min_slices=3))
    with pytest.raises(DataError, match="not a valid regular expression"):
        SeriesFilter(description="(")


def test_dicom_case_named_after_the_patient_is_renamed(shared_data: Path, tmp_path: Path):
    # the 3-slice series' PatientID is 99000: a folder named so must not reach names or paths
    shutil.copytree(shared_data / "dicom" / "ct_3slice_with_seg" / "series", tmp_path / "JANCT000_99000")
    (case,), _ = find_cases(tmp_path, 1)
    assert "99000" not in case.name and "JANCT" not in case.name and "99000" not in case.display
    assert case.name.startswith("series-") and case.sources[0].n_slices == 3
    (case,), _ = find_cases(tmp_path / "JANCT000_99000", 1)  # the user's own root named so: not shown either
    assert "99000" not in case.name + case.display
    assert case.scrub(f"{tmp_path}/JANCT000_99000: has a gap") == f"{tmp_path}/<patient>_<patient>: has a gap"


def _copy_series(shared_data: Path, dest: Path, files: list[str]) -> Path:
    dest.mkdir(parents=True)
    src = shared_data / "dicom" / "ct_3slice_with_seg" / "series"
    for f in files:
        shutil.copy(src / f.split(":")[0], dest / f.split(":")[-1])
    return dest


def test_tolerant_read_drops_duplicates_and_fills_missing_slices(shared_data: Path, tmp_path: Path):
    from medssl.data.dicom import read_series
    from medssl.data.dicom_series import find_dicom_series
    from medssl.data.dicom_tolerant import read_series_tolerant

    full = read_volume(shared_data / "dicom" / "ct_3slice_with_seg" / "series")
    dup = _copy_series(shared_data, tmp_path / "dup", ["01.dcm", "02.dcm", "03.dcm", "02.dcm:02_copy.dcm"])
    (s,) = find_dicom_series(dup)
    with pytest.raises(DataError, match="same position"):
        read_series(s, dup)  # the strict reader (training data) still refuses
    got = read_series_tolerant(s, dup)
    assert got.volume.same_geometry(full) and np.array_equal(got.volume.array, full.array)
    assert len(got.warnings) == 1 and "1 file(s) at the position of another slice were ignored: 02_copy.dcm" in got.warnings[0]
    assert got.slice_index == [0, 1, 2] and got.filled == []



def test_tolerant_read_fills_missing_slices(shared_data: Path, tmp_path: Path):
    from medssl.data.dicom_series import find_dicom_series
    from medssl.data.dicom_tolerant import read_series_tolerant

    src = shared_data / "dicom" / "ct_series_j2k"
    full = read_volume(src)
    gap = tmp_path / "gap"
    gap.mkdir()
    files = sorted(src.iterdir())
    order = np.argsort([float(__import__("pydicom").dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]) for f in files])
    missing = {int(order[7]), int(order[8])}  # the 8th and 9th slice along the normal
    for i, f in enumerate(files):
        if i not in missing:
            shutil.copy(f, gap / f.name)
    (s,) = find_dicom_series(gap)
    got = read_series_tolerant(s, gap)
    assert got.volume.same_geometry(full)  # the regular grid from the first to the last slice
    assert got.filled == [7, 8] and got.slice_index == [z for z in range(20) if z not in (7, 8)]
    assert len(got.warnings) == 1 and "missing slices: 2 slice(s) between" in got.warnings[0]
    kept = [z for z in range(20) if z not in (7, 8)]
    assert np.array_equal(got.volume.array[:, :, kept], full.array[:, :, kept])
    a, b = full.array[:, :, 6].astype(np.float64), full.array[:, :, 9].astype(np.float64)
    assert np.array_equal(got.volume.array[:, :, 7], np.rint(a + (b - a) / 3))


def test_case_hash_follows_content_not_location(tmp_path: Path):
    a = _vol(tmp_path / "x" / "a.nii.gz")
    (case,), _ = find_cases(a, 1)
    h = case.sha256()
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    assert find_cases(tmp_path / "y" / "a.nii.gz", 1)[0][0].sha256() == h
    _vol(a, value=2.0)
    assert case.sha256() != h


def test_shard_of_env():
    from medssl.inference.infer import shard_of_env

    assert shard_of_env({}) == (0, 1)
    assert shard_of_env({"RANK": "1", "WORLD_SIZE": "2"}) == (1, 2)
    assert shard_of_env({"LOCAL_RANK": "3", "LOCAL_WORLD_SIZE": "4"}) == (3, 4)
    with pytest.raises(DataError, match="not a valid shard"):
        shard_of_env({"RANK": "2", "WORLD_SIZE": "2"})


def test_progress_plain_lines_every_n_cases_with_time_left():
    from medssl.inference.progress import CaseProgress

    buf = io.StringIO()
    p = CaseProgress(5, bar=False, every=2, seconds=1e9, stream=buf)
    p.update(None)  # skipped: no line yet, no rate
    p.update(2.0)
    p.update(4.0)
    p.update(None)
    p.update(3.0)
    lines = buf.getvalue().splitlines()
    assert lines == ["infer: 2/5 cases, 2.0 s/case, about 6 s left", "infer: 4/5 cases, 3.0 s/case, about 3 s left",
                     "infer: 5/5 cases, 3.0 s/case, about 0 s left"]
