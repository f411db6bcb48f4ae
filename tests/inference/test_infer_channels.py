"""Two-channel models: a CSV list (case,<channel>,<channel>, paths relative to the CSV) and a
folder of nnU-Net channel files on the two-channel phantoms; a case with a channel missing fails
alone, with its reason in errors.csv."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

from medssl.data.io import read_volume
from medssl.inference.infer import run_inference


def test_csv_list_with_two_channels(tiny_model_2ch, tmp_path: Path):
    ckpt, data = tiny_model_2ch
    cases = sorted({p.name[: -len("_0000.nii.gz")] for p in (data / "imagesUnlabeled").glob("*_0000.nii.gz")})[:2]
    lst = tmp_path / "lists" / "cases.csv"
    lst.parent.mkdir()
    rows = [["case", "mri_a", "mri_b"]] + [[c, f"../ds/{c}_0000.nii.gz", f"../ds/{c}_0001.nii.gz"] for c in cases]
    rows.append(["half", f"../ds/{cases[0]}_0000.nii.gz", ""])
    shutil.copytree(data / "imagesUnlabeled", tmp_path / "ds")
    with open(lst, "w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    res = run_inference(ckpt, lst, tmp_path / "out", progress=False)
    assert sorted(res.done) == cases and [f[0] for f in res.failed] == ["half"] and not res.ok
    for c in cases:
        ref = read_volume(tmp_path / "ds" / f"{c}_0000.nii.gz")
        assert read_volume(tmp_path / "out" / f"{c}.nii.gz").same_geometry(ref)
        rec = json.loads((tmp_path / "out" / f"{c}.json").read_text())
        assert rec["input"]["channels"] == 2 and rec["input"]["files"] == 2
    errors = list(csv.DictReader(open(tmp_path / "out" / "errors.csv")))
    assert errors[0]["case"] == "half" and "no path for channel(s) mri_b" in errors[0]["reason"]


def test_folder_of_channel_files_groups_cases(tiny_model_2ch, tmp_path: Path):
    ckpt, data = tiny_model_2ch
    folder = tmp_path / "in"
    folder.mkdir()
    case = sorted((data / "imagesTs").glob("*_0000.nii.gz"))[0].name[: -len("_0000.nii.gz")]
    for k in (0, 1):
        shutil.copy(data / "imagesTs" / f"{case}_{k:04d}.nii.gz", folder)
    shutil.copy(data / "imagesTs" / f"{case}_0000.nii.gz", folder / "lonely_0000.nii.gz")
    res = run_inference(ckpt, folder, tmp_path / "out", progress=False)
    assert res.done == [case] and [f[0] for f in res.failed] == ["lonely"]
    assert "the model takes 2 channels: _0000, _0001" in res.failed[0][2]
