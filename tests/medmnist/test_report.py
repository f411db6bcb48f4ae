"""Report rendering and results files from a small stored results dict."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from medssl.eval.tables import mean_ci
from medssl.medmnist.report import PUBLISHED_MEDMNIST_V2, render_report, write_results


def _results() -> dict:
    records = []
    for method, base in (("simclr", 0.80), ("supervised", 0.70)):
        for fraction, gain in ((0.01, 0.0), (0.1, 0.05), (1.0, 0.1)):
            for seed, jitter in enumerate((-0.01, 0.0, 0.01)):
                v = base + gain + jitter
                records.append({"dataset": "breastmnist", "protocol": "fine_tune", "method": method,
                                "fraction": fraction, "seed": seed, "acc": v, "balanced_acc": v - 0.05,
                                "auroc": v + 0.05, "arch": "resnet18_28"})
    records.append({"dataset": "breastmnist", "protocol": "linear", "method": "simclr", "fraction": 0.1,
                    "seed": 0, "acc": 0.77, "balanced_acc": 0.7, "auroc": float("nan")})
    fpr = np.linspace(0, 1, 11)
    ood = [{"train": "breastmnist", "test": "pneumoniamnist", "method": "simclr", "score": score, "seed": seed,
            "auroc": 0.9 + 0.01 * seed, "aupr_in": 0.8, "aupr_out": 0.85, "fpr95": 0.4,
            "roc": {"fpr": fpr.tolist(), "tpr": np.sqrt(fpr).tolist()}}
           for score in ("msp", "energy") for seed in (0, 1)]
    return {"records": records, "ood": ood, "meta": {"backbone": "resnet18"}}


def test_render_report(tmp_path):
    report = render_report(_results(), tmp_path)
    text = report.read_text()
    # three seeds 0.84, 0.85, 0.86 (supervised, 100 %, AUROC): 0.850 ± t_{0.975,2} * 0.01 / sqrt(3) = 0.025
    mean, half = mean_ci([0.84, 0.85, 0.86])
    assert f"{mean:.3f} ± {half:.3f} (n=3)" == "0.850 ± 0.025 (n=3)"
    assert "| 100% | supervised | 0.800 ± 0.025 (n=3) | 0.750 ± 0.025 (n=3) | 0.850 ± 0.025 (n=3) | " \
           "ResNet-18 (28): 0.901 / 0.863 |" in text
    assert "| 1% | simclr | 0.800 ± 0.025 (n=3) | 0.750 ± 0.025 (n=3) | 0.850 ± 0.025 (n=3) |  |" in text
    assert "| 10% | simclr | 0.770 (n=1) | 0.700 (n=1) | n/a |" in text  # nan AUROC, one seed
    assert "| ResNet-50 (28) | 0.857 | 0.812 |" in text  # the published table of the dataset
    assert "| breastmnist → pneumoniamnist | simclr | energy | 0.905 ± 0.064 (n=2) |" in text
    assert "- backbone: resnet18" in text
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["breastmnist_fine_tune.png", "breastmnist_linear.png", "ood_breastmnist_vs_pneumoniamnist.png"]
    for name in pngs:
        assert f"]({name})" in text
        img = mpimg.imread(tmp_path / name)
        assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100 and img.std() > 0.01


def test_published_numbers_can_be_left_out(tmp_path):
    text = render_report(_results(), tmp_path, published={}).read_text()
    assert "0.901" not in text and "published" not in text.lower()
    assert PUBLISHED_MEDMNIST_V2["adrenalmnist3d"]["resnet50_3d_28"] == {"auc": 0.828, "acc": 0.745}


def test_write_results_roundtrip(tmp_path):
    results = _results()
    paths = write_results(results, tmp_path)
    assert [p.name for p in paths] == ["results.json", "results.csv", "ood.csv"]
    stored = json.loads((tmp_path / "results.json").read_text())
    assert len(stored["records"]) == len(results["records"])
    assert stored["records"][-1]["auroc"] is None  # nan is stored as null
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert list(rows[0])[:8] == ["dataset", "protocol", "method", "fraction", "seed", "acc", "balanced_acc", "auroc"]
    assert rows[0]["arch"] == "resnet18_28" and float(rows[0]["acc"]) == pytest.approx(0.79)
    ood_rows = list(csv.DictReader((tmp_path / "ood.csv").open()))
    assert len(ood_rows) == 4 and "roc" not in ood_rows[0]
    # a report renders the same from the stored JSON (nan -> null)
    assert render_report(stored, tmp_path / "again").read_text() == render_report(results, tmp_path / "r").read_text()


def test_paired_differences_against_the_baseline(tmp_path):
    """Hand-computed: per-seed AUROC differences (0.10, 0.05, 0.12), their t interval, wins, and
    the paired t-test p-value; a seed missing for the baseline is not paired."""
    from scipy import stats

    def rec(method, seed, auroc, fraction=0.1, **kw):
        return {"dataset": "breastmnist", "protocol": "linear", "method": method, "fraction": fraction,
                "seed": seed, "acc": 0.7, "balanced_acc": 0.7, "auroc": auroc, **kw}

    base = [0.60, 0.70, 0.65]
    records = [rec("random-init", s, a, ssl_method="none", init="random") for s, a in enumerate(base)]
    records += [rec("simclr", s, a + d, ssl_method="simclr", init="random")
                for s, (a, d) in enumerate(zip(base, (0.10, 0.05, 0.12)))]
    records.append(rec("simclr", 3, 0.99, ssl_method="simclr", init="random"))  # no baseline for seed 3
    records += [rec("byol", s, a - 0.01, ssl_method="byol", init="random") for s, a in enumerate(base)]
    text = render_report({"records": records}, tmp_path, published={}).read_text()
    diff = np.array([0.10, 0.05, 0.12])
    half = stats.t.ppf(0.975, 2) * diff.std(ddof=1) / np.sqrt(3)
    p = stats.ttest_1samp(diff, 0).pvalue
    assert f"| 10% | simclr | +{diff.mean():.3f} ± {half:.3f} (n=3) | 3/3 | {p:.3g} |" in text
    assert "| 10% | byol | -0.010 ± 0.000 (n=3) | 0/3 | n/a |" in text  # constant difference: no test
    assert "Δ AUROC vs random-init" in text
    assert "Δ AUROC" not in render_report({"records": records}, tmp_path / "none", published={},
                                          baseline=None).read_text()
    named = render_report({"records": records}, tmp_path / "byol", published={}, baseline="byol").read_text()
    assert "| 10% | random-init | +0.010 ± 0.000 (n=3) | 3/3 | n/a |" in named
