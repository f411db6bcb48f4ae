"""The review API without Qt: decisions, files, manifest, log, drafts, preloading."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.errors import DataError
from medssl.inference.review_manifest import ReviewManifest, sha256_file

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

from napari_medssl import drafts, review_log  # noqa: E402
from napari_medssl.session import ReviewSession, is_export  # noqa: E402

from .conftest import SHAPE, case_arrays  # noqa: E402


def test_queue_progress_and_loading(export):
    s = ReviewSession(export / "manifest.json", reviewer="dr a")
    assert [c.name for c in s.queue()] == ["case_b", "case_d", "case_c", "case_a"]  # least confident first
    assert [c.name for c in s.queue("uncertainty")] == ["case_b", "case_d", "case_c", "case_a"]
    assert s.progress() == "0 of 4 reviewed"
    data = s.load("case_b")
    image, label, views, unc = case_arrays(1)
    assert data.label.dtype == np.uint8 and (data.label == label).all() and data.label_source == "pseudo-label"
    assert np.allclose(data.image.array, image) and data.image.spacing == pytest.approx((0.8, 1.2, 3.0))
    assert data.uncertainty.dtype == np.float32 and np.allclose(data.uncertainty, unc)
    assert len(data.views) == 3 and all(v.dtype == np.uint8 for v in data.views)
    # disagreement: view 1 drops 2x8x7 liver voxels, view 2 relabels 6x2x7 kidney voxels
    assert data.disagreement.sum() == 2 * 8 * 7 + 6 * 2 * 7
    assert data.modality == "MRI"
    s.close()


def test_decisions_write_manifest_files_and_log(export):
    s = ReviewSession(export, reviewer="dr a", preload=False)
    s.accept("case_b")
    s.reject("case_d")
    edited = case_arrays(2)[1].copy()
    edited[0:3, 0:3, 0:3] = 2
    first = s.save_edit("case_c", edited)
    second = s.save_edit("case_c", edited)  # a second save is a second file: nothing is overwritten
    assert first == export / "reviewed" / "case_c_r1.nii.gz" and second == export / "reviewed" / "case_c_r2.nii.gz"
    assert first.is_file() and (read_volume(second).array == edited).all()
    assert read_volume(second).same_geometry(read_volume(export / "labels" / "case_c.nii.gz"))
    assert (read_volume(export / "labels" / "case_c.nii.gz").array == case_arrays(2)[1]).all()  # pseudo-label intact

    m = ReviewManifest.read(export)
    b, c, d = m.case("case_b"), m.case("case_c"), m.case("case_d")
    assert (b.status, b.reviewer, b.reviewed_label_sha256) == ("accepted", "dr a", sha256_file(export / b.label))
    assert (d.status, d.reviewed_label) == ("rejected", None)
    assert (c.status, c.reviewed_label) == ("edited", "reviewed/case_c_r2.nii.gz")
    assert c.reviewed_label_sha256 == sha256_file(second) and c.reviewed_at
    assert s.progress() == "3 of 4 reviewed"
    assert [x.name for x in m.reviewed_cases()] == ["reviewed_case_b", "reviewed_case_c"]

    log = review_log.read(export)
    assert [(e["action"], e["case"], e.get("status_before")) for e in log] == [
        ("accept", "case_b", "pending"), ("reject", "case_d", "pending"), ("edit", "case_c", "pending"),
        ("edit", "case_c", "edited")]
    assert all(e["reviewer"] == "dr a" and e["time"] for e in log)
    assert log[2]["label"] == "reviewed/case_c_r1.nii.gz" and log[3]["label_sha256"] == sha256_file(second)
    lines = (export / "review_log.jsonl").read_text().splitlines()
    s.reset("case_d")
    assert (export / "review_log.jsonl").read_text().splitlines()[:4] == lines  # append-only
    assert ReviewManifest.read(export).case("case_d").status == "pending"

    # reopening shows the saved state: the edited case comes back with its reviewed label
    again = ReviewSession(export, preload=False).load("case_c")
    assert again.label_source == "reviewed" and (again.label == edited).all()


def test_drafts_are_restored_and_cleared_by_a_decision(export):
    s = ReviewSession(export, reviewer="dr b", preload=False)
    draft = np.zeros(SHAPE, np.uint8)
    draft[1, 1, 1] = 2
    s.save_draft("case_a", draft)
    assert (export / "drafts" / "case_a.npz").is_file()
    back = ReviewSession(export, preload=False).load("case_a")  # reopening the export
    assert back.label_source == "draft" and (back.label == draft).all()
    with pytest.raises(TypeError, match="uint8"):
        drafts.save(export, "case_a", draft.astype(np.int64))
    s.accept("case_a")
    assert not s.has_draft("case_a")
    assert ReviewSession(export, preload=False).load("case_a").label_source == "pseudo-label"
    np.savez(export / "drafts" / "case_b.npz", label=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="case_b.npz.*remove it"):
        s.load("case_b")


def test_bad_edits_and_exports_are_clear_errors(export, tmp_path):
    s = ReviewSession(export, preload=False)
    with pytest.raises(DataError, match="shape"):
        s.save_edit("case_a", np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(DataError, match="value 7; the classes are 0..2"):
        s.save_edit("case_a", np.full(SHAPE, 7, np.uint8))
    assert not (export / "reviewed").exists()  # nothing written
    assert ReviewManifest.read(export).case("case_a").status == "pending"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="not a medssl pseudo-label export"):
        ReviewSession(tmp_path / "empty")
    assert is_export(export) and is_export(export / "manifest.json") and not is_export(tmp_path / "empty")
    (export / "labels" / "case_a.nii.gz").unlink()
    with pytest.raises(DataError, match="case_a.nii.gz"):
        s.load("case_a")


def test_next_case_is_read_in_the_background(export, monkeypatch):
    import napari_medssl.session as session_mod

    s = ReviewSession(export, preload=True)
    calls = []
    real = session_mod.load_case
    monkeypatch.setattr(session_mod, "load_case", lambda m, c, with_draft: calls.append(c.name) or real(m, c, with_draft))
    s.preload("case_d")
    s._preloader._future.result(timeout=30)
    assert calls == ["case_d"]
    data = s.load("case_d")  # taken from the preloader, not read again
    assert calls == ["case_d"] and data.name == "case_d" and s._preloader.pending is None
    s.preload("case_c")
    s.preload("case_a")  # only one slot: the request for case_c is dropped
    assert s.load("case_a").name == "case_a" and s._preloader.pending is None
    s.close()
    entries = [json.loads(x) for x in (export / "review_log.jsonl").read_text().splitlines()]
    assert [e["action"] for e in entries] == ["open", "open"]
