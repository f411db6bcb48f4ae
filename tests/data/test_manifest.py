"""The pseudo-label manifest: validation and which reviewed cases become training labels."""

from __future__ import annotations

import pytest

from medssl.data.manifest import new_manifest, read_manifest, reviewed_cases, write_manifest
from medssl.errors import DataError


def _manifest(tmp_path, statuses):
    m = new_manifest(tmp_path / "ck.ckpt", tmp_path, ["background", "organ"])
    for i, st in enumerate(statuses):
        (tmp_path / f"img{i}.nii.gz").write_bytes(b"x")
        (tmp_path / "labels").mkdir(exist_ok=True)
        (tmp_path / "labels" / f"c{i}.nii.gz").write_bytes(b"x")
        case = {"name": f"c{i}", "image": str(tmp_path / f"img{i}.nii.gz"), "label": f"labels/c{i}.nii.gz",
                "views": [], "uncertainty": "", "confidence": 0.5, "status": st, "reviewed_label": None}
        if st == "edited":
            (tmp_path / f"fixed{i}.nii.gz").write_bytes(b"x")
            case["reviewed_label"] = f"fixed{i}.nii.gz"
        m["cases"].append(case)
    return write_manifest(tmp_path / "manifest.json", m)


def test_only_accepted_and_edited_cases_are_used(tmp_path):
    path = _manifest(tmp_path, ["pending", "accepted", "rejected", "edited"])
    cases = reviewed_cases(path)
    assert [c.name for c in cases] == ["reviewed_c1", "reviewed_c3"]
    assert cases[0].label == tmp_path / "labels/c1.nii.gz"  # relative to the manifest's folder
    assert cases[1].label == tmp_path / "fixed3.nii.gz"  # the corrected label, not the pseudo-label


def test_invalid_manifests_are_clear_errors(tmp_path):
    path = _manifest(tmp_path, ["accepted"])
    m = read_manifest(path)
    m["cases"][0]["status"] = "maybe"
    with pytest.raises(DataError, match="status 'maybe'"):
        write_manifest(path, m)
    m["cases"][0]["status"] = "edited"
    with pytest.raises(DataError, match="reviewed_label"):
        write_manifest(path, m)
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    with pytest.raises(DataError, match="not a medssl pseudo-label manifest"):
        read_manifest(tmp_path / "other.json")
    (tmp_path / "labels/c0.nii.gz").unlink()
    with pytest.raises(DataError, match="does not exist"):
        reviewed_cases(path)
