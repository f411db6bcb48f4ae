"""A multi-channel model on a DICOM tree: one series per channel picked by its description, one
case per study; a study without a match for every channel is its own error."""

from __future__ import annotations

import json

import pydicom
import pytest

from medssl.inference.infer import run_inference
from medssl.inference.inputs import SeriesFilter, find_cases


def _study(shared_data, dest, descriptions, study_uid):
    """Copies of the real 3-slice CT series as the series of one study, one per description."""
    src = sorted((shared_data / "dicom" / "ct_3slice_with_seg" / "series").glob("*.dcm"))
    for i, desc in enumerate(descriptions):
        folder = dest / desc
        folder.mkdir(parents=True)
        series_uid = pydicom.uid.generate_uid()
        for f in src:
            ds = pydicom.dcmread(f)
            ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SeriesDescription = study_uid, series_uid, desc
            ds.SeriesNumber = i + 1
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / f.name)


def test_series_per_channel_by_description(shared_data, tmp_path, tiny_model_2ch):
    tree = tmp_path / "tree"
    _study(shared_data, tree / "study_a", ["T1 axial", "T2 axial"], pydicom.uid.generate_uid())
    _study(shared_data, tree / "study_b", ["T1 axial"], pydicom.uid.generate_uid())
    cases, _ = find_cases(tree, 2, SeriesFilter(channels=("t1", "t2")))
    assert len(cases) == 2
    good = next(c for c in cases if c.error is None)
    assert [s.description for s in good.sources] == ["T1 axial", "T2 axial"]
    bad = next(c for c in cases if c.error is not None)
    assert "channel 1 ('t2'): 0 matching series" in bad.error
    with pytest.raises(Exception, match="1 --channel-description rule"):
        find_cases(tree, 2, SeriesFilter(channels=("t1",)))
    without = find_cases(tree, 2)[0]
    assert all("--channel-description" in c.error for c in without)

    ckpt, _ = tiny_model_2ch
    res = run_inference(ckpt, tree, tmp_path / "out", series=SeriesFilter(channels=("t1", "t2")), progress=False)
    assert len(res.done) == 1 and len(res.failed) == 1
    rec = json.loads((tmp_path / "out" / f"{good.name}.json").read_text())
    assert rec["input"]["channels"] == 2
