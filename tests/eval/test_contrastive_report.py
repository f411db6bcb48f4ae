"""The contrastive recipe report from stored run folders."""

from __future__ import annotations

import json
import statistics

import yaml

from medssl.eval.contrastive_report import build_report, collect, main


def _run(root, init, n, seed, dice):
    run = root / f"ft-{init}-n{n}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": f"ft-{init}-n{n}", "trainer": {"seed": seed}}))
    (run / "metrics.json").write_text(json.dumps({"best": {"val_dice_mean": 0.5}, "test": {
        "dice_mean": dice, "dice": {"liver": dice, "kidney": dice}, "hd95_mean_mm": 10.0}}))


def test_report_tables_and_plot(tmp_path):
    vals = {("random", 1): [0.30, 0.40], ("local2d", 1): [0.50, 0.56], ("random", 2): [0.6, 0.62],
            ("local2d", 2): [0.65, 0.61]}
    for (init, n), ds in vals.items():
        for seed, d in enumerate(ds):
            _run(tmp_path, init, n, seed, d)
    (tmp_path / "global_2d").mkdir()
    (tmp_path / "global_2d" / "metrics.json").write_text(json.dumps({"step": 600, "final_loss": 2.5, "wall_time_s": 54}))
    table = collect(tmp_path, [1, 2])
    assert table["local2d"][1] == [0.50, 0.56] and "global2d" not in table
    text = build_report(tmp_path, [1, 2])
    want = f"{statistics.mean([0.5, 0.56]):.3f} ± {statistics.stdev([0.5, 0.56]):.3f}"
    assert f"| global G^D + local L^D (2D) | {want} |" in text
    assert "`global_2d`: 600 steps" in text
    assert "+0.200 +0.160" in text  # paired per-seed deltas to random init at N = 1
    out = tmp_path / "rep" / "r.md"
    assert main([str(tmp_path), "--labeled", "1", "2", "--out", str(out)]) == 0
    assert out.is_file() and (tmp_path / "rep" / "r.png").stat().st_size > 1000
