"""Importing a Decathlon task (MSD Hippocampus, in its own layout) as a medssl dataset."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medssl.data.check import check_dataset
from medssl.data.dataset import list_cases, read_dataset_json
from medssl.data.io import read_volume
from medssl.data.msd import import_msd, split_msd
from medssl.errors import DataError

#: a uint8 case, a float32 image with a float32 label map (003), and plain float32 images
CASES = ["hippocampus_001", "hippocampus_003", "hippocampus_004", "hippocampus_006", "hippocampus_019",
         "hippocampus_008", "hippocampus_011", "hippocampus_014", "hippocampus_015", "hippocampus_020"]


@pytest.fixture
def mini_task(shared_data, tmp_path) -> Path:
    """A 10-case Decathlon task folder made of real MSD Hippocampus files (own layout and dtypes)."""
    src = shared_data / "hippocampus_msd"
    task = tmp_path / "Task04_Hippocampus"
    (task / "imagesTr").mkdir(parents=True)
    (task / "labelsTr").mkdir()
    meta = json.loads((src / "dataset.json").read_text())
    meta["training"] = [e for e in meta["training"] if Path(e["image"]).name.split(".")[0] in CASES]
    assert len(meta["training"]) == len(CASES)
    meta["numTraining"] = len(CASES)
    for name in CASES:
        shutil.copy(src / "imagesTr" / f"{name}.nii.gz", task / "imagesTr")
        shutil.copy(src / "labelsTr" / f"{name}.nii.gz", task / "labelsTr")
    (task / "dataset.json").write_text(json.dumps(meta))
    return task


def test_import_makes_a_checked_dataset_with_a_recorded_split(mini_task, tmp_path):
    dst = import_msd(mini_task, tmp_path / "hippo", seed=0, n_val=2, n_test=2)
    spec = read_dataset_json(dst)
    assert spec.labels == {"background": 0, "Anterior": 1, "Posterior": 2} and spec.modality == "MRI"
    rec = json.loads((dst / "dataset.json").read_text())["medssl_split"]
    got = {s: sorted(c.name for c in list_cases(dst, s)) for s in ("train", "val", "test")}
    assert got["val"] == rec["val"] and got["test"] == rec["test"] and len(got["train"]) == 6
    assert sorted(sum(got.values(), [])) == sorted(CASES)  # every case once
    report = check_dataset(dst, progress=False)
    assert report.ok, report.format()
    # images byte-identical; the float32 label map became uint8 with the same values
    for c in list_cases(dst, "train") + list_cases(dst, "val") + list_cases(dst, "test"):
        assert c.image.read_bytes() == (mini_task / "imagesTr" / f"{c.name}.nii.gz").read_bytes()
        lab = read_volume(c.label)
        assert lab.array.dtype == np.uint8
        src = read_volume(mini_task / "labelsTr" / f"{c.name}.nii.gz")
        assert np.array_equal(lab.array, src.array.astype(np.uint8)) and lab.same_geometry(src)


def test_split_is_a_function_of_the_seed(mini_task, tmp_path):
    a = split_msd(CASES, 2, 2, seed=0)
    assert a == split_msd(CASES, 2, 2, seed=0) and a != split_msd(CASES, 2, 2, seed=1)
    with pytest.raises(DataError, match="cannot split"):
        split_msd(CASES, 5, 5, seed=0)


def test_refusals(mini_task, tmp_path):
    dst = import_msd(mini_task, tmp_path / "hippo", n_val=2, n_test=2)
    with pytest.raises(DataError, match="is not empty"):
        import_msd(mini_task, dst, n_val=2, n_test=2)
    bad = tmp_path / "bad"
    shutil.copytree(mini_task, bad)
    lab = bad / "labelsTr" / "hippocampus_001.nii.gz"
    import nibabel as nib

    img = nib.load(str(lab))
    arr = np.asarray(img.dataobj).astype(np.float32)
    arr[0, 0, 0] = 0.5
    nib.save(nib.Nifti1Image(arr, img.affine), str(lab))
    with pytest.raises(DataError, match="hippocampus_001.nii.gz: label map has values that are not whole"):
        import_msd(bad, tmp_path / "out_bad", n_val=2, n_test=2)
    assert not (tmp_path / "out_bad" / "dataset.json").exists()  # an unfinished import is not a dataset
    (bad / "imagesTr" / "hippocampus_003.nii.gz").unlink()
    with pytest.raises(DataError, match="hippocampus_003.nii.gz, which does not exist"):
        import_msd(bad, tmp_path / "out_bad2")


def test_an_interrupted_import_is_finished_by_running_it_again(mini_task, tmp_path, monkeypatch):
    import medssl.data.msd as msd

    calls = {"n": 0}
    orig = msd._write_label

    def flaky(src, dst, allowed):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        orig(src, dst, allowed)

    monkeypatch.setattr(msd, "_write_label", flaky)
    with pytest.raises(KeyboardInterrupt):
        import_msd(mini_task, tmp_path / "hippo", n_val=2, n_test=2)
    assert not (tmp_path / "hippo" / "dataset.json").exists()
    monkeypatch.setattr(msd, "_write_label", orig)
    dst = import_msd(mini_task, tmp_path / "hippo", n_val=2, n_test=2)
    assert check_dataset(dst, progress=False).ok and not (dst / ".medssl_import.json").exists()


def test_the_whole_real_task_imports(shared_data, tmp_path):
    dst = import_msd(shared_data / "hippocampus_msd", tmp_path / "hippo")  # defaults: 10% val, 20% test
    counts = {s: len(list_cases(dst, s)) for s in ("train", "val", "test")}
    assert counts == {"train": 145, "val": 21, "test": 42} and sum(counts.values()) == 208
