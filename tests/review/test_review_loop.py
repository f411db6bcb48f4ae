"""Closing the loop on tiny phantoms: UMCT -> pseudo-label -> scripted review through the review
API -> retrain with data.extra_labels; the retrained run records the reviewed cases it used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.inference.review_manifest import ReviewManifest, sha256_file

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

@pytest.fixture(scope="module")
def loop_data(tmp_path_factory):
    """Tiny phantoms (32x32x16, seed 3) with 4 unlabeled cases: 2 get reviewed, 2 stay unlabeled for UMCT."""
    from medssl.data.phantoms import generate_sample_data

    return generate_sample_data(tmp_path_factory.mktemp("loop") / "phantoms", seed=3, n_labeled=2, n_unlabeled=4,
                                n_val=1, n_test=2, progress=False, shape=(32, 32, 16))


TINY_UMCT = {
    "model.channels": "[4,8,16]", "model.strides": "[2,2]", "data.patch_size": "[16,16,16]", "data.batch_size": 2,
    "data.num_labeled": 2, "trainer.max_steps": 4, "trainer.val_every": 2, "trainer.progress": "false",
    "trainer.log_every": 1, "trainer.threads": 1, "val.roi_size": "[16,16,16]",
    "umct.stage1_steps": 2, "umct.rampup_steps": 2, "umct.mc_samples": 2,
}


def test_review_loop_on_tiny_phantoms(loop_data, tmp_path):
    from napari_medssl import review_log
    from napari_medssl.review_loop import format_summary, phantom_truth, run_loop

    out = tmp_path / "loop"
    s = run_loop(loop_data, out, [f"{k}={v}" for k, v in TINY_UMCT.items()], n_edit=1, n_accept=1, dataset_seed=3)
    manifest = ReviewManifest.read(out / "pseudo_labels")
    by_conf = sorted(manifest.cases, key=lambda c: (c.confidence, c.name))
    assert s["review"]["edited"] == [by_conf[0].name] and s["review"]["accepted"] == [by_conf[-1].name]
    edited, accepted = manifest.case(by_conf[0].name), manifest.case(by_conf[-1].name)
    assert edited.status == "edited" and accepted.status == "accepted" and s["review"]["progress"] == "2 of 4 reviewed"
    # the correction is the phantom's true label, saved as a new file; the pseudo-label is untouched
    truth = phantom_truth(3, edited.name, manifest.resolve(edited.image))
    assert (read_volume(manifest.resolve(edited.reviewed_label)).array == truth).all()
    assert edited.reviewed_label.startswith("reviewed/") and manifest.resolve(edited.label).is_file()
    assert [e["action"] for e in review_log.read(out / "pseudo_labels") if e["action"] != "open"] == ["edit", "accept"]

    # the retrained run used exactly these reviewed labels, and says so
    used = json.loads((out / "after" / "reviewed_cases.json").read_text())
    metrics = json.loads((out / "after" / "metrics.json").read_text())
    assert metrics["reviewed"] == used
    assert {(c["name"], c["status"], c["label_sha256"]) for c in used["cases"]} == {
        (edited.name, "edited", sha256_file(manifest.resolve(edited.reviewed_label))),
        (accepted.name, "accepted", sha256_file(manifest.resolve(accepted.label)))}
    assert s["after"]["n_train_cases"] == s["before"]["n_train_cases"] + 2
    assert metrics["n_train_cases"] == s["after"]["n_train_cases"]
    for run in ("before", "after"):
        assert 0.0 <= s[run]["test_dice"] <= 1.0 and 0.0 <= s[run]["val_dice"] <= 1.0
    assert json.loads((out / "review_loop.json").read_text())["after"] == s["after"]
    text = format_summary(s)
    assert "1 edited" in text and "before: val Dice" in text and "after:  val Dice" in text


def test_phantom_truth_checks_the_seed(loop_data):
    from napari_medssl.review_loop import phantom_truth

    image = loop_data / "imagesUnlabeled" / "phantom_ul_000_0000.nii.gz"
    assert set(np.unique(phantom_truth(3, "phantom_ul_000", image))) <= {0, 1, 2, 3}
    with pytest.raises(ValueError, match="seed 4 gives another image"):
        phantom_truth(4, "phantom_ul_000", image)
    with pytest.raises(ValueError, match="not an unlabeled phantom"):
        phantom_truth(3, "case_7", image)
