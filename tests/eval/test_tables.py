"""Table cells, markdown tables and CSV rows, against hand-written values."""

from __future__ import annotations

import csv
import io
import math

import pytest

from medssl.eval.tables import ci_cell, csv_text, markdown_table, mean_ci, sd_cell, write_csv


def test_mean_ci_by_hand():
    # values 0.80, 0.82, 0.84: mean 0.82, s = 0.02, t_{0.975, 2} = 4.302653,
    # half-width = 4.302653 * 0.02 / sqrt(3) = 0.0496828
    mean, half = mean_ci([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82)
    assert half == pytest.approx(4.302653 * 0.02 / math.sqrt(3), rel=1e-6)
    assert half == pytest.approx(0.0496828, abs=1e-6)
    # 90 %: t_{0.95, 2} = 2.919986
    assert mean_ci([0.80, 0.82, 0.84], confidence=0.9)[1] == pytest.approx(2.919986 * 0.02 / math.sqrt(3), rel=1e-6)


def test_mean_ci_edge_cases():
    mean, half = mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)
    assert all(math.isnan(v) for v in mean_ci([]))
    assert mean_ci([0.80, None, float("nan"), 0.84])[0] == pytest.approx(0.82)  # undefined values dropped


def test_ci_cell():
    assert ci_cell([0.84, 0.85, 0.86]) == "0.850 ± 0.025 (n=3)"
    assert ci_cell([0.77, None, float("nan")]) == "0.770 (n=1)"
    assert ci_cell([None]) == "n/a" and ci_cell([], empty="—") == "—"
    assert ci_cell([0.05, 0.05]) == "0.050 ± 0.000 (n=2)"
    assert ci_cell([0.04, 0.06], signed=True).startswith("+0.050 ± ")
    assert ci_cell([-0.04], signed=True) == "-0.040 (n=1)"


def test_sd_cell():
    assert sd_cell([0.80, 0.82, 0.84]) == "0.820 ± 0.020"
    assert sd_cell([0.8]) == "0.800" and sd_cell([None, float("nan")]) == "n/a"
    assert sd_cell([], empty="—") == "—"
    assert sd_cell([0.01, 0.03], signed=True) == "+0.020 ± 0.014"


def test_markdown_table():
    assert markdown_table(["a", "b"], [["1", "2"], ["3", "4"]]) == ["| a | b |", "|---|---|", "| 1 | 2 |", "| 3 | 4 |"]
    assert markdown_table(["only"], []) == ["| only |", "|---|"]


def test_csv_columns_json_and_skip(tmp_path):
    rows = [{"seed": 0, "name": "x", "zeta": 1, "params": {"lr": 0.1}, "roc": [1, 2]}, {"name": "y", "alpha": 2.5}]
    text = csv_text(rows, first=["name", "seed", "missing"], skip=("roc",))
    got = list(csv.DictReader(io.StringIO(text)))
    assert text.splitlines()[0] == "name,seed,missing,alpha,params,zeta"
    assert got[0]["params"] == '{"lr": 0.1}' and got[0]["missing"] == "" and got[1]["alpha"] == "2.5"
    path = write_csv(tmp_path / "sub" / "t.csv", rows, ["name"])
    assert path.read_text() == csv_text(rows, ["name"])
    assert not [p for p in path.parent.iterdir() if p.name != "t.csv"]  # no temporary file left
