"""The UMCT recipe-set report from stored run folders (hand-made metrics, known answers)."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from medssl.errors import DataError
from medssl.eval.umct_report import build_report, collect, main


def _run(root, arm, n, seed, dice, wall=60.0):
    run = root / f"{arm}-n{n}-s{seed}"
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"name": f"{arm}-n{n}", "trainer": {"seed": seed}}))
    (run / "metrics.json").write_text(json.dumps({"step": 500, "wall_time_s": wall, "best": {"val_dice_mean": 0.7},
        "test": {"dice_mean": dice, "dice": {"Anterior": dice - 0.01, "Posterior": dice + 0.01},
                 "hd95_mean_mm": 3.0, "hd95_mm": {"Anterior": 2.0, "Posterior": 4.0}}}))


def test_paired_gains_verdicts_and_ablation(tmp_path):
    single = {0: 0.60, 1: 0.50, 2: 0.70}
    paper = {0: 0.65, 1: 0.56, 2: 0.72}       # better in every seed
    ensemble = {0: 0.66, 1: 0.57, 2: 0.71}    # the ensemble is as good: the gain is not co-training's
    for s in range(3):
        _run(tmp_path, "single_view", 4, s, single[s])
        _run(tmp_path, "cotrain_variance", 4, s, paper[s])
        _run(tmp_path, "ensemble_supervised", 4, s, ensemble[s])
    _run(tmp_path, "cotrain_variance", 2, 0, 0.4)
    (tmp_path / "notes").mkdir()                  # not a run: ignored
    (tmp_path / "cotrain_variance-n2-s1").mkdir()  # unfinished: ignored
    runs = collect(tmp_path)
    assert set(runs) == {("single_view", 4), ("cotrain_variance", 4), ("ensemble_supervised", 4), ("cotrain_variance", 2)}
    text = build_report(tmp_path, ablation_n=4)
    gains = [paper[s] - single[s] for s in range(3)]
    assert f"+{statistics.mean(gains):.3f} ± {statistics.stdev(gains):.3f} (3/3 seeds > 0: +0.050 +0.060 +0.020)" in text
    assert "N = 4: UMCT beats a single-view network: **reproduced** (+0.043 Dice, better in every seed, n=3)" in text
    assert "N = 4: UMCT beats a 3-network supervised ensemble: **not reproduced**" in text
    # the ablation's delta is to the PREVIOUS arm: ensemble - single, then paper - ensemble
    assert "-0.003 ± 0.012 (1/3 seeds > 0: -0.010 -0.010 +0.010)" in text
    assert "| 2.00 ± 0.00 | 4.00 ± 0.00 |" in text  # HD95 per class
    assert "10 runs, 500 steps each" in text and "0.17 h of run time" in text


def test_main_writes_report_and_plot(tmp_path):
    for s in range(2):
        for n in (2, 4):
            _run(tmp_path / "r", "single_view", n, s, 0.5 + 0.1 * s)
            _run(tmp_path / "r", "cotrain_variance", n, s, 0.55 + 0.1 * s)
    out = tmp_path / "rep" / "u.md"
    assert main([str(tmp_path / "r"), "--out", str(out)]) == 0
    assert "![Dice vs labeled volumes](u.png)" in out.read_text()
    assert (tmp_path / "rep" / "u.png").stat().st_size > 1000


def test_no_runs_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no finished UMCT runs"):
        collect(tmp_path)
