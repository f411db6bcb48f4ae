"""Any segmentation checkpoint: a UMCT model (three views, MC-dropout uncertainty) trained with a
preprocessing plan predicts a real MRI volume on the plan's grid, and `medssl infer` writes the
outputs on the scan's own grid with the plan recorded in the case JSON."""

from __future__ import annotations

import json
from pathlib import Path

from medssl.data.io import read_volume
from medssl.inference.case_outputs import OutputOptions
from medssl.inference.infer import run_inference
from tests.methods.test_umct import umct_cfg


def test_umct_with_plan_outputs_on_the_scan_grid(tiny_model, shared_data: Path, tmp_path: Path):
    from medssl.engines.train import run_training

    _, data = tiny_model
    cfg = umct_cfg(data, **{"data.plan": "auto", "trainer.max_steps": 2, "trainer.val_every": 2,
                            "val.roi_size": "[32,32,32]", "val.overlap": 0.0, "umct.stage1_steps": 1})
    run_training(cfg, out=tmp_path / "umct")
    image = shared_data / "volumes" / "anatomical_mri" / "image.nii"  # 33x41x25 at 2 mm, big-endian
    res = run_inference(tmp_path / "umct" / "checkpoints" / "last.ckpt", image, tmp_path / "out",
                        OutputOptions(probabilities=True), progress=False)
    assert res.ok and res.done == ["image"], res.failed
    ref = read_volume(image)
    for name in ("image.nii.gz", "image_uncertainty.nii.gz"):
        assert read_volume(tmp_path / "out" / name).same_geometry(ref)
    rec = json.loads((tmp_path / "out" / "image.json").read_text())
    plan = json.loads((tmp_path / "umct" / "plan.json").read_text())
    assert rec["plan"] == plan and rec["model"]["method"] == "umct" and rec["model"]["mc_samples"] == 2
