"""The preprocessing plan: target spacing and CT statistics from the training cases, planned
caches, and scores mapped back to each scan's own grid before the metrics."""

from __future__ import annotations

import json

import numpy as np
import torch

from medssl.data.cache import VolumeCache
from medssl.data.dataset import Case
from medssl.data.io import write_volume
from medssl.data.plan import DatasetPlan, make_plan, read_plan, resolve_plan
from medssl.data.seg_dataset import VolumeDataset
from medssl.data.volume import Volume
from medssl.eval.seg_metrics import dice_hd95
from medssl.methods.base import _native_argmax


def _case(tmp_path, name, spacing, value_fg=100.0, shape=(30, 30, 12), box=(slice(8, 20), slice(10, 22), slice(3, 9))):
    img = np.full(shape, -500.0, np.float32)
    lab = np.zeros(shape, np.uint8)
    lab[box] = 1
    img[lab > 0] = value_fg + np.linspace(-50, 50, int(lab.sum()))
    direction = np.diag([-1.0, -1.0, 1.0])  # RAS-stored, as NIfTI from many tools
    ip, lp = tmp_path / f"{name}_0000.nii.gz", tmp_path / f"{name}.nii.gz"
    write_volume(Volume(img, spacing, (0, 0, 0), direction), ip)
    write_volume(Volume(lab, spacing, (0, 0, 0), direction), lp)
    return Case(name, ip, lp)


def test_make_plan_spacing_and_ct_window(tmp_path):
    cases = [_case(tmp_path, "a", (0.8, 0.8, 3.0)), _case(tmp_path, "b", (1.0, 1.0, 5.0)),
             _case(tmp_path, "c", (0.9, 0.9, 4.0))]
    plan = make_plan(cases, ["CT"])
    assert plan.median_spacing == (0.9, 0.9, 4.0)
    assert plan.spacing == (round(float(np.exp(np.mean(np.log([0.9, 0.9, 4.0])))), 3),) * 3
    assert make_plan(cases, ["CT"], isotropic=False).spacing == (0.9, 0.9, 4.0)
    lo, hi = plan.intensity[0]["window"]
    assert 45 < lo < 60 and 140 < hi < 155  # percentiles of FOREGROUND voxels only (50..150), not the -500 background
    norm = plan.norm_for(0)
    assert norm.lo == lo and abs(norm.center - 100) < 2
    assert make_plan(cases, ["MRI"]).intensity[0] == {"mode": "zscore"} and make_plan(cases, ["MRI"]).norm_for(0) is None


def test_resolve_plan_writes_and_keeps_it(tmp_path):
    cases = [_case(tmp_path, "a", (0.8, 0.8, 3.0))]
    run = tmp_path / "run"
    run.mkdir()
    plan = resolve_plan("auto", cases, ["MRI"], run, tmp_path / "cache")
    assert read_plan(run / "plan.json") == plan
    assert resolve_plan("none", cases, ["MRI"], run, tmp_path / "cache") is None
    stored = json.loads((run / "plan.json").read_text())
    stored["spacing"] = [2.0, 2.0, 2.0]
    (run / "plan.json").write_text(json.dumps(stored))
    assert resolve_plan("auto", cases, ["MRI"], run, tmp_path / "cache").spacing == (2.0, 2.0, 2.0)  # a resumed run keeps its plan
    assert DatasetPlan.from_json(plan.to_json()).key == plan.key


def test_metrics_in_native_geometry_from_a_planned_grid(tmp_path):
    case = _case(tmp_path, "a", (0.7, 0.7, 4.0), box=(slice(3, 27), slice(5, 26), slice(2, 10)))  # ~17 x 15 x 32 mm
    plan = make_plan([case], ["MRI"], spacing=(1.5, 1.5, 1.5))
    ds = VolumeDataset([case], tmp_path / "cache", plan=plan)
    item = ds[0]
    grid = json.loads(item["grid"])
    assert np.allclose(grid["spacing"], 1.5) and item["label"].shape[1:] == (30, 30, 12)
    assert torch.allclose(item["spacing"], torch.tensor([0.7, 0.7, 4.0], dtype=torch.float64))
    # a perfect prediction ON THE PLANNED GRID (the planned label) scores near 1 once mapped back
    planned_label = torch.from_numpy(np.asarray(ds.vols.label(0)).astype(np.int64))
    probs = torch.nn.functional.one_hot(planned_label, 2).permute(3, 0, 1, 2).float()
    native = _native_argmax(probs, item["grid"], item["grid_map"])
    assert native.shape == (30, 30, 12)
    dice = dice_hd95(native[None, None], item["label"][None], 2, [0.7, 0.7, 4.0])[0, 0]
    assert dice > 0.9
    # the planned volumes live in a cache folder of their own, with the way back in the sidecar
    planned = VolumeCache(ds.vols.cache.cache_dir, transform=plan.grid(1)).get(case.image)
    assert "grid_map" in planned.meta and ds.vols.cache.cache_dir != tmp_path / "cache"


def test_cli_data_plan_and_data_info_report_it(tmp_path):
    from typer.testing import CliRunner

    from medssl.cli import app
    from medssl.data.phantoms import generate_sample_data

    root = generate_sample_data(tmp_path / "ds", seed=0, n_labeled=2, n_unlabeled=0, n_val=1, n_test=1,
                                progress=False, shape=(32, 32, 16))
    res = CliRunner().invoke(app, ["data", "plan", str(root), "--out", str(tmp_path / "plan.json")])
    assert res.exit_code == 0, res.output
    plan = read_plan(tmp_path / "plan.json")
    assert "target spacing" in res.output and plan.n_cases == 2 and len(set(plan.spacing)) == 1
    info = CliRunner().invoke(app, ["data", "info", str(root)])
    assert info.exit_code == 0 and "channels     1" in info.output and "0: MRI" in info.output
