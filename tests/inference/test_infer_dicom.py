"""`medssl infer` on the real DICOM CT series of ../shared/data/dicom: the segmentation has the
series' geometry, the DICOM-SEG reads back with highdicom and pydicom and references the series,
duplicate and missing slices are warnings in the case JSON, and no patient data is logged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.inference.case_outputs import OutputOptions
from medssl.inference.infer import run_inference


def _same_geometry(out_file: Path, ref) -> None:
    got = read_volume(out_file)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got.spacing, ref.spacing, atol=1e-5)
    np.testing.assert_allclose(got.origin, ref.origin, atol=1e-4)
    np.testing.assert_allclose(got.direction, ref.direction, atol=1e-6)


def test_j2k_series_geometry_and_json(tiny_model, shared_data: Path, tmp_path: Path, capsys):
    ckpt, _ = tiny_model
    series = shared_data / "dicom" / "ct_series_j2k"
    res = run_inference(ckpt, series, tmp_path / "out", OutputOptions(dicom_seg=True, probabilities=True), progress=False)
    assert res.ok and res.done == ["ct_series_j2k"], res.failed
    ref = read_volume(series)
    out = tmp_path / "out"
    for name in ("ct_series_j2k.nii.gz", "ct_series_j2k_uncertainty.nii.gz"):
        _same_geometry(out / name, ref)
    label = read_volume(out / "ct_series_j2k.nii.gz").array
    assert label.dtype == np.uint8 and label.max() <= 3
    rec = json.loads((out / "ct_series_j2k.json").read_text())
    assert rec["input"]["kind"] == "dicom" and rec["input"]["files"] == 20 and rec["input"]["geometry"]["shape"] == [512, 512, 20]
    assert set(rec["volumes_ml"]) == {"liver", "kidney", "spleen"}
    voxel_ml = float(np.prod(ref.spacing)) / 1000
    assert rec["volumes_ml"]["liver"] == pytest.approx(float((label == 1).sum()) * voxel_ml, rel=1e-4)
    assert 0 <= rec["ood_score"] <= 1 and 0 <= rec["mean_uncertainty"]["overall"] <= 1
    assert set(rec["timings_s"]) == {"hash", "read", "predict", "write", "total"}
    assert rec["versions"]["torch"] and rec["model_sha256"] == rec["model"]["sha256"] and len(rec["input_sha256"]) == 64
    # the series is anonymised down to its UIDs: no DICOM-SEG can reference it, and the JSON says so
    assert "dicom_seg" not in rec["outputs"] and "SOPInstanceUID" in rec["dicom_seg_skipped"]
    assert not (out / "ct_series_j2k_seg.dcm").exists()
    probs = __import__("nibabel").load(out / "ct_series_j2k_probs.nii.gz")
    assert probs.shape == (512, 512, 20, 4)
    np.testing.assert_allclose(probs.affine, ref.affine, atol=1e-4)
    p = np.asarray(probs.dataobj[200:210, 200:210, 5:7, :])  # float16 form: uint16 + scl_slope
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=2e-3)
    assert np.array_equal(p.argmax(-1), label[200:210, 200:210, 5:7])


def test_dicom_seg_references_series_and_slice_faults_are_warnings(tiny_model, shared_data: Path, tmp_path: Path, capfd):
    import highdicom as hd
    import pydicom

    ckpt, _ = tiny_model
    src = shared_data / "dicom" / "ct_3slice_with_seg" / "series"
    tree = tmp_path / "tree"
    shutil.copytree(src, tree / "dup")
    shutil.copy(src / "02.dcm", tree / "dup" / "02_again.dcm")  # the same instance twice in the export
    res = run_inference(ckpt, tree, tmp_path / "out", OutputOptions(dicom_seg=True, preview=True), progress=False)
    assert res.ok and res.done == ["dup"], res.failed
    out = tmp_path / "out"
    ref = read_volume(src)
    headers = sorted((pydicom.dcmread(f, stop_before_pixels=True) for f in src.iterdir()),
                     key=lambda h: float(h.ImagePositionPatient[2]))
    for case in ("dup",):
        _same_geometry(out / f"{case}.nii.gz", ref)
        label = read_volume(out / f"{case}.nii.gz").array
        ds = pydicom.dcmread(out / f"{case}_seg.dcm")
        assert ds.Modality == "SEG" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
        assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == headers[0].SeriesInstanceUID
        assert ds.FrameOfReferenceUID == headers[0].FrameOfReferenceUID and ds.StudyInstanceUID == headers[0].StudyInstanceUID
        seg = hd.seg.segread(out / f"{case}_seg.dcm")
        assert seg.number_of_segments == 3 and seg.get_segment_description(1).segment_label == "liver"
        frames = seg.get_pixels_by_source_instance([h.SOPInstanceUID for h in headers], combine_segments=True,
                                                   relabel=False)
        assert np.array_equal(frames.transpose(2, 1, 0), label)  # (slice, row, col) -> (x, y, z), slice by slice
        assert (out / f"{case}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dup = json.loads((out / "dup.json").read_text())
    assert dup["dicom_seg_skipped"] is None and dup["outputs"]["dicom_seg"]["file"] == "dup_seg.dcm"
    assert len(dup["warnings"]) == 1 and "duplicate slice positions: 1 file(s)" in dup["warnings"][0]
    assert dup["input"]["files"] == 4  # every file of the case is hashed, the ignored one too
    # no patient data (PatientName JANCT000, PatientID 99000) in the JSON, tables or logs
    logged = capfd.readouterr()
    texts = [p.read_text() for p in out.iterdir() if p.suffix in (".json", ".csv")] + [logged.out, logged.err]
    assert not any("JANCT000" in t or "99000" in t for t in texts)
