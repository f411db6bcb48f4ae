"""The typed review manifest: schema, validation, review decisions, reviewed cases for training."""

from __future__ import annotations

import json

import pytest

from medssl.errors import DataError
from medssl.inference.review_manifest import SCHEMA_PATH, ReviewCase, ReviewManifest, set_status, sha256_file


def _manifest(tmp_path, statuses) -> ReviewManifest:
    m = ReviewManifest.new(tmp_path / "manifest.json", tmp_path / "ck.ckpt", tmp_path, ["background", "organ"])
    (tmp_path / "labels").mkdir(exist_ok=True)
    for i, st in enumerate(statuses):
        (tmp_path / f"img{i}.nii.gz").write_bytes(b"x")
        (tmp_path / "labels" / f"c{i}.nii.gz").write_bytes(b"x")
        case = ReviewCase(name=f"c{i}", image=str(tmp_path / f"img{i}.nii.gz"), label=f"labels/c{i}.nii.gz",
                          confidence=0.5, status=st)
        if st == "edited":
            (tmp_path / f"fixed{i}.nii.gz").write_bytes(b"y")
            case.reviewed_label = f"fixed{i}.nii.gz"
        m.put(case)
    m.write()
    return m


def test_only_accepted_and_edited_cases_are_used(tmp_path):
    _manifest(tmp_path, ["pending", "accepted", "rejected", "edited"])
    cases = ReviewManifest.read(tmp_path / "manifest.json").reviewed_cases()
    assert [c.name for c in cases] == ["reviewed_c1", "reviewed_c3"]
    assert cases[0].label == tmp_path / "labels/c1.nii.gz"  # relative to the manifest's folder
    assert cases[1].label == tmp_path / "fixed3.nii.gz"  # the corrected label, not the pseudo-label


def test_invalid_manifests_are_clear_errors(tmp_path):
    m = _manifest(tmp_path, ["accepted"])
    raw = m.to_json()
    raw["cases"][0]["status"] = "maybe"
    with pytest.raises(DataError, match="status 'maybe'"):
        ReviewManifest.from_json(raw, tmp_path / "manifest.json")
    raw["cases"][0]["status"] = "edited"
    with pytest.raises(DataError, match="reviewed_label"):
        ReviewManifest.from_json(raw)
    raw["cases"][0]["status"] = "accepted"
    raw["cases"][0]["confidence"] = 1.5
    with pytest.raises(DataError, match="confidence"):
        ReviewManifest.from_json(raw)
    raw["cases"][0]["confidence"] = 0.5
    raw["cases"].append(dict(raw["cases"][0]))
    with pytest.raises(DataError, match="repeat"):
        ReviewManifest.from_json(raw)
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not a medssl pseudo-label manifest"):
        ReviewManifest.read(tmp_path / "other.json")
    (tmp_path / "labels/c0.nii.gz").unlink()
    with pytest.raises(DataError, match="does not exist"):
        ReviewManifest.read(tmp_path).reviewed_cases()


def test_set_status_records_reviewer_time_and_label_hash(tmp_path):
    _manifest(tmp_path, ["pending", "pending"])
    (tmp_path / "reviewed").mkdir()
    fixed = tmp_path / "reviewed" / "c0.nii.gz"
    fixed.write_bytes(b"corrected")
    case = set_status(tmp_path / "manifest.json", "c0", "edited", reviewed_label=fixed, reviewer="dr a")
    assert case.reviewed_label == "reviewed/c0.nii.gz"  # stored relative to the manifest
    assert case.reviewed_label_sha256 == sha256_file(fixed) and case.reviewer == "dr a" and case.reviewed_at
    again = ReviewManifest.read(tmp_path / "manifest.json").case("c0")
    assert again.status == "edited" and again.reviewed_label_sha256 == case.reviewed_label_sha256
    set_status(tmp_path / "manifest.json", "c1", "rejected", reviewer="dr b")
    with pytest.raises(DataError, match="needs the corrected label"):
        set_status(tmp_path / "manifest.json", "c1", "edited")
    with pytest.raises(DataError, match="no case 'zz'"):
        set_status(tmp_path / "manifest.json", "zz", "accepted")
    back = set_status(tmp_path / "manifest.json", "c0", "pending")
    assert back.reviewed_label is None and back.reviewer is None


def test_written_manifests_follow_the_json_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    _manifest(tmp_path, ["pending", "accepted", "rejected", "edited"])
    raw = json.loads((tmp_path / "manifest.json").read_text())
    jsonschema.validate(raw, schema)
    raw["cases"][0]["status"] = "maybe"  # the schema rejects what the module rejects
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)
    raw["cases"][0]["status"] = "edited"
    raw["cases"][0]["reviewed_label"] = None
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(raw, schema)


def test_accepting_records_the_label_hash_and_training_refuses_a_changed_label(tmp_path):
    from medssl.inference.review_manifest import reviewed_provenance

    _manifest(tmp_path, ["pending", "pending", "pending"])
    accepted = set_status(tmp_path / "manifest.json", "c0", "accepted", reviewer="dr a")
    assert accepted.reviewed_label is None and accepted.reviewed_label_sha256 == sha256_file(tmp_path / "labels/c0.nii.gz")
    (tmp_path / "reviewed").mkdir()
    (tmp_path / "reviewed" / "c1.nii.gz").write_bytes(b"fixed")
    set_status(tmp_path / "manifest.json", "c1", "edited", reviewed_label=tmp_path / "reviewed" / "c1.nii.gz", reviewer="dr b")
    set_status(tmp_path / "manifest.json", "c2", "rejected", reviewer="dr a")
    prov = reviewed_provenance(tmp_path)
    assert prov["manifest"] == str((tmp_path / "manifest.json").resolve())
    assert prov["manifest_sha256"] == sha256_file(tmp_path / "manifest.json")
    assert [(c["name"], c["status"], c["reviewer"]) for c in prov["cases"]] == [("c0", "accepted", "dr a"),
                                                                              ("c1", "edited", "dr b")]
    assert prov["cases"][1]["label"] == str((tmp_path / "reviewed" / "c1.nii.gz").resolve())
    assert prov["cases"][1]["label_sha256"] == sha256_file(tmp_path / "reviewed" / "c1.nii.gz")
    assert len(ReviewManifest.read(tmp_path).reviewed_cases()) == 2
    (tmp_path / "labels/c0.nii.gz").write_bytes(b"changed after review")
    with pytest.raises(DataError, match="'c0'.*changed after it was reviewed"):
        ReviewManifest.read(tmp_path).reviewed_cases()
