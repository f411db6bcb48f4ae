"""A pseudo-label export resumes only what it started: same checkpoint, same dataset split."""

from __future__ import annotations

import shutil
import stat
import subprocess
import sys

import pytest

from medssl.errors import DataError
from medssl.inference.pseudo_label import export_pseudo_labels
from medssl.inference.review_manifest import ReviewManifest
from tests.engines.conftest import tiny_data  # noqa: F401  (fixture)
from tests.methods.test_umct import umct_cfg

MEDSSL = [sys.executable, "-m", "medssl.cli"]


@pytest.fixture(scope="module")
def two_checkpoints(tiny_data, tmp_path_factory):  # noqa: F811
    from medssl.engines.train import run_training

    root = tmp_path_factory.mktemp("pl_faults")
    for seed in (0, 1):
        run_training(umct_cfg(tiny_data, **{"trainer.max_steps": 2, "trainer.val_every": 2, "trainer.seed": seed}),
                     out=root / f"s{seed}")
    return root / "s0/checkpoints/last.ckpt", root / "s1/checkpoints/last.ckpt"


def test_rerun_with_another_checkpoint_is_refused_then_forced(two_checkpoints, tiny_data, tmp_path):  # noqa: F811
    a, b = two_checkpoints
    out = tmp_path / "pl"
    path = export_pseudo_labels(a, tiny_data, out, progress=False)
    first = ReviewManifest.read(path)
    assert first.checkpoint_sha256 and first.dataset_fingerprint
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    res = subprocess.run(MEDSSL + ["pseudo-label", "--checkpoint", str(b), "--data", str(tiny_data), "--out", str(out)],
                         capture_output=True, text=True)
    assert res.returncode == 1 and "Traceback" not in res.stderr
    assert "another checkpoint" in res.stderr and "--force" in res.stderr
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # nothing touched
    export_pseudo_labels(b, tiny_data, out, progress=False, force=True)
    again = ReviewManifest.read(path)
    assert again.checkpoint_sha256 != first.checkpoint_sha256 and len(again.cases) == len(first.cases)


def test_rerun_with_another_dataset_is_refused(two_checkpoints, tiny_data, tmp_path):  # noqa: F811
    a, _ = two_checkpoints
    out = tmp_path / "pl"
    export_pseudo_labels(a, tiny_data, out, progress=False)
    other = tmp_path / "copy"
    shutil.copytree(tiny_data, other)
    with pytest.raises(DataError, match="another dataset"):
        export_pseudo_labels(a, other, out, progress=False)


def test_same_export_resumes_and_outputs_are_readable_by_the_team(two_checkpoints, tiny_data, tmp_path):  # noqa: F811
    import os

    a, _ = two_checkpoints
    old = os.umask(0o022)
    try:
        path = export_pseudo_labels(a, tiny_data, tmp_path / "pl", progress=False)
    finally:
        os.umask(old)
    m = ReviewManifest.read(path)
    for f in [path, m.resolve(m.cases[0].label), m.resolve(m.cases[0].uncertainty)]:
        assert stat.S_IMODE(f.stat().st_mode) == 0o644, f  # the umask's mode, not mkstemp's 0600
    assert export_pseudo_labels(a, tiny_data, tmp_path / "pl", progress=False) == path


def test_a_broken_case_is_recorded_and_the_others_are_done(two_checkpoints, tiny_data, tmp_path):  # noqa: F811
    """Through the batch engine: with the checks skipped, an unreadable image goes to errors.csv,
    every other case is pseudo-labelled, and the export ends with one clear error."""
    a, _ = two_checkpoints
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    broken = sorted((data / "imagesUnlabeled").iterdir())[0]
    broken.write_bytes(b"not a nifti")
    with pytest.raises(DataError, match=r"1 of 2 case\(s\) failed"):
        export_pseudo_labels(a, data, tmp_path / "pl", progress=False, skip_checks=True)
    manifest = ReviewManifest.read(tmp_path / "pl" / "manifest.json")
    assert [c.name for c in manifest.cases] == [sorted((data / "imagesUnlabeled").iterdir())[1].name[:-12]]
    assert broken.name[:-12] in (tmp_path / "pl" / "errors.csv").read_text()
