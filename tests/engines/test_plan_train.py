"""A run with a preprocessing plan: plan.json in the run folder and in the checkpoint, metrics in
each scan's own geometry, and pseudo-labels written on each input's exact grid."""

from __future__ import annotations

import json

import torch

from medssl.config import load_config
from medssl.data.io import read_volume
from medssl.engines.train import run_training
from medssl.inference.pseudo_label import export_pseudo_labels
from medssl.inference.review_manifest import ReviewManifest
from tests.methods.test_umct import umct_cfg

from .conftest import tiny_overrides


def test_planned_run_and_native_outputs(tiny_data, tmp_path):
    cfg = load_config(None, tiny_overrides(tiny_data, **{"data.plan": "auto", "trainer.max_steps": 3}))
    res = run_training(cfg, out=tmp_path / "sup")
    plan = json.loads((tmp_path / "sup/plan.json").read_text())
    assert len(set(plan["spacing"])) == 1 and plan["median_spacing"][2] > plan["median_spacing"][0]  # isotropic target
    ckpt = torch.load(tmp_path / "sup/checkpoints/best.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["medssl"]["plan"] == plan
    assert 0.0 <= res["test"]["dice_mean"] <= 1.0 and res["test"]["n_cases"] == 2

    umct = umct_cfg(tiny_data, **{"data.plan": "auto", "trainer.max_steps": 2, "trainer.val_every": 2})
    run_training(umct, out=tmp_path / "umct")
    manifest = ReviewManifest.read(export_pseudo_labels(tmp_path / "umct/checkpoints/last.ckpt", tiny_data,
                                                        tmp_path / "pl", progress=False))
    for case in manifest.cases:
        image = read_volume(case.image)
        for rel in (case.label, case.uncertainty, *case.views):
            assert read_volume(manifest.resolve(rel)).same_geometry(image), rel
