"""`medssl infer` on every real NIfTI/NRRD volume of ../shared/data/volumes (given as a CSV list):
every output (segmentation, uncertainty in its three storage forms, probabilities) has the input's
geometry. The volumes are small (at most 256x256x25), so all of them run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.inference.case_outputs import OutputOptions
from medssl.inference.infer import run_inference


def _images(shared_data: Path) -> list[Path]:
    images = sorted(p for p in (shared_data / "volumes").glob("*/image.*"))
    assert len(images) >= 6
    return images


def test_every_real_volume_keeps_its_geometry(tiny_model, shared_data: Path, tmp_path: Path):
    ckpt, _ = tiny_model
    images = _images(shared_data)
    lst = tmp_path / "cases.csv"
    with open(lst, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["case", "image"])
        for p in images:
            w.writerow([p.parent.name, p])  # absolute paths are fine too (relative ones: test_infer_channels)
    out = tmp_path / "out"
    res = run_inference(ckpt, lst, out, OutputOptions(probabilities=True, probabilities_dtype="float32"), progress=False)
    assert res.ok and len(res.done) == len(images), res.failed
    for p in images:
        ref, case = read_volume(p), p.parent.name
        for name in (f"{case}.nii.gz", f"{case}_uncertainty.nii.gz"):
            got = read_volume(out / name)
            assert got.same_geometry(ref, atol=1e-4), (case, name, got.geometry_dict(), ref.geometry_dict())
        probs = nib.load(out / f"{case}_probs.nii.gz")
        assert probs.shape == (*ref.shape, 4) and probs.get_data_dtype() == np.float32
        np.testing.assert_allclose(probs.affine, ref.affine, atol=1e-4)
        unc = read_volume(out / f"{case}_uncertainty.nii.gz").array
        assert unc.dtype == np.uint8  # the default form: normalised entropy x 255
        rec = json.loads((out / f"{case}.json").read_text())
        assert rec["input"]["geometry"] == ref.geometry_dict() and rec["input"]["kind"] == "file"
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert sorted(r["case"] for r in rows) == sorted(p.parent.name for p in images)
    assert all(r["status"] == "done" for r in rows) and not (out / "errors.csv").exists()


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_uncertainty_storage_forms_read_back_alike(tiny_model, shared_data: Path, tmp_path: Path, dtype):
    ckpt, _ = tiny_model
    image = shared_data / "volumes" / "anatomical_mri" / "image.nii"  # big-endian int16, 33x41x25
    res = run_inference(ckpt, image, tmp_path, OutputOptions(uncertainty_dtype=dtype), progress=False)
    assert res.ok and res.done == ["image"]
    img = nib.load(tmp_path / "image_uncertainty.nii.gz")
    assert img.get_data_dtype() == {"uint8": np.uint8, "float16": np.uint16, "float32": np.float32}[dtype]
    values = img.get_fdata() / (255.0 if dtype == "uint8" else 1.0)
    assert 0.0 <= values.min() and values.max() <= 1.0 + 1e-6
    rec = json.loads((tmp_path / "image.json").read_text())
    assert values.mean() == pytest.approx(rec["mean_uncertainty"]["overall"], abs=2.5e-3)
