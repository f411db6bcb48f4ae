"""Comparison table over seeds from stored run folders."""

from __future__ import annotations

import json
import statistics

import pytest
import yaml

from medssl.eval.compare import compare_runs
from medssl.errors import DataError


def _run(tmp_path, name, seed, dice, hd):
    run = tmp_path / f"{name}-s{seed}"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"name": name, "trainer": {"seed": seed}}))
    (run / "metrics.json").write_text(json.dumps({"best": {"val_dice_mean": 0.5}, "test": {
        "dice_mean": sum(dice.values()) / len(dice), "dice": dice, "hd95_mean_mm": hd}}))
    return run


def test_table_means_and_spreads(tmp_path):
    runs = [
        _run(tmp_path, "base", 0, {"a": 0.5, "b": 0.7}, 10.0),
        _run(tmp_path, "base", 1, {"a": 0.6, "b": 0.8}, 12.0),
        _run(tmp_path, "new", 0, {"a": 0.7, "b": 0.9}, 8.0),
        _run(tmp_path, "new", 1, {"a": 0.8, "b": 0.9}, 6.0),
    ]
    table, summary = compare_runs(runs, baseline="base")
    assert summary["base"]["seeds"] == [0, 1]
    base_row = next(line for line in table.splitlines() if line.startswith("| base"))
    new_row = next(line for line in table.splitlines() if line.startswith("| new"))
    sd = statistics.stdev([0.6, 0.7])
    assert f"0.650 ± {sd:.3f}" in base_row and "11.000 ±" in base_row and "—" in base_row
    assert "+0.175" in new_row  # mean(0.8, 0.85) - mean(0.6, 0.7)


def test_errors(tmp_path):
    with pytest.raises(DataError, match="not a finished medssl run"):
        compare_runs([tmp_path])
    run = _run(tmp_path, "x", 0, {"a": 0.5}, 1.0)
    with pytest.raises(DataError, match="baseline"):
        compare_runs([run], baseline="nope")


def test_runs_selected_on_test_or_without_test_are_refused(tmp_path):
    old = tmp_path / "old-s0"
    old.mkdir()
    (old / "config.yaml").write_text(yaml.safe_dump({"name": "old", "trainer": {"seed": 0}}))
    (old / "metrics.json").write_text(json.dumps({"dice_mean": 0.9, "dice": {"a": 0.9}}))  # the pre-split format
    with pytest.raises(DataError, match="predates the val/test separation"):
        compare_runs([old])
    (old / "metrics.json").write_text(json.dumps({"test": None, "best": {}}))
    with pytest.raises(DataError, match="no test split"):
        compare_runs([old])


def test_table_shows_the_validation_dice_used_for_selection(tmp_path):
    table, summary = compare_runs([_run(tmp_path, "a", 0, {"x": 0.7}, 3.0)])
    assert summary["a"]["val_dice_mean"] == [0.5] and "val Dice (selection)" in table
