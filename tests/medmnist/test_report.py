"""Report rendering and results files from a small stored results dict."""

from __future__ import annotations

import csv
import json

import matplotlib.image as mpimg
import numpy as np
import pytest

from medssl.eval.tables import mean_ci
from medssl.medmnist.report import PUBLISHED_MEDMNIST_V2, main, read_results_csv, render_report, write_results


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
    # one pretraining: the interval over eval seeds, and beside it the probe-only sd (0.01)
    assert "| 100% | supervised | 0.800 ± 0.025 (n=3) | 0.750 ± 0.025 (n=3) | 0.850 ± 0.025 (n=3) | 0.010 | " \
           "ResNet-18 (28): 0.901 / 0.863 |" in text
    assert "| 1% | simclr | 0.800 ± 0.025 (n=3) | 0.750 ± 0.025 (n=3) | 0.850 ± 0.025 (n=3) | 0.010 |  |" in text
    assert "| 10% | simclr | 0.770 (n=1) | 0.700 (n=1) | n/a | n/a |" in text  # nan AUROC, one seed
    assert "| ResNet-50 (28) | 0.857 | 0.812 |" in text  # the published table of the dataset
    assert "| breastmnist → pneumoniamnist | far | simclr | energy | 0.905 ± 0.064 (n=2) |" in text
    assert "covers only the labeled subset and the probe" in text
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
    assert list(rows[0])[:9] == ["dataset", "protocol", "method", "pretrain_seed", "fraction", "seed", "acc",
                                 "balanced_acc", "auroc"]
    assert rows[0]["arch"] == "resnet18_28" and float(rows[0]["acc"]) == pytest.approx(0.79)
    ood_rows = list(csv.DictReader((tmp_path / "ood.csv").open()))
    assert len(ood_rows) == 4 and "roc" not in ood_rows[0]
    # a report renders the same from the stored JSON (nan -> null)
    assert render_report(stored, tmp_path / "again").read_text() == render_report(results, tmp_path / "r").read_text()


def test_report_rerendered_from_results_csv(tmp_path, capsys):
    """results.csv alone is enough to re-render the tables with the current code: the numbers come
    back typed (float fraction and metrics, int seeds, nan -> None) and the tables are the same as
    from the records themselves; the module's entry point writes it with --meta lines on top."""
    results = _results()
    results.pop("ood")
    write_results(results, tmp_path / "run")
    back = read_results_csv(tmp_path / "run" / "results.csv")
    assert len(back["records"]) == len(results["records"])
    first, last = back["records"][0], back["records"][-1]
    assert first["fraction"] == 0.01 and first["seed"] == 0 and first["acc"] == pytest.approx(0.79)
    assert last["auroc"] is None
    direct = render_report({"records": results["records"]}, tmp_path / "direct").read_text()
    assert render_report(back, tmp_path / "from_csv").read_text() == direct
    assert main([str(tmp_path / "run" / "results.csv"), "--out", str(tmp_path / "cli"),
                 "--meta", "made with=medssl before issue 12"]) == 0
    text = (tmp_path / "cli" / "report.md").read_text()
    assert text.startswith("# MedMNIST evaluation report\n\n- made with: medssl before issue 12\n")
    assert "| 100% | supervised | 0.800 ± 0.025 (n=3) |" in text


def test_results_csv_refused_in_one_line(tmp_path, capsys):
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    assert main([str(tmp_path / "other.csv"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {tmp_path / 'other.csv'}: not a medssl results.csv (missing dataset,")
    assert "Traceback" not in err and not (tmp_path / "r").exists()
    assert main([str(tmp_path / "none.csv"), "--out", str(tmp_path / "r")]) == 2
    assert "no such results file" in capsys.readouterr().err


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
    assert f"| 10% | simclr | +{diff.mean():.3f} ± {half:.3f} (n=3) | 3/3 | {p:.3g} | probe only" in text
    assert "| 10% | byol | -0.010 ± 0.000 (n=3) | 0/3 | n/a |" in text  # constant difference: no test
    assert "Δ AUROC vs random-init" in text
    assert "Δ AUROC" not in render_report({"records": records}, tmp_path / "none", published={},
                                          baseline=None).read_text()
    named = render_report({"records": records}, tmp_path / "byol", published={}, baseline="byol").read_text()
    assert "| 10% | random-init | +0.010 ± 0.000 (n=3) | 3/3 | n/a |" in named


def _rec(method, pseed, seed, auroc, fraction=0.1, **kw):
    return {"dataset": "breastmnist", "protocol": "linear", "method": method, "pretrain_seed": pseed,
            "fraction": fraction, "seed": seed, "acc": 0.7, "balanced_acc": 0.7, "auroc": auroc, **kw}


def test_spread_across_pretraining_seeds(tmp_path):
    """Three pretrainings x two eval seeds: the cell is the mean ± sd of the three per-pretraining
    means (hand-computed), the probe sd the mean of the three within-pretraining sds; the baseline
    comparison is Welch's test on per-pretraining means and says so."""
    from scipy import stats

    from medssl.medmnist.report import summarize

    simclr = {0: (0.80, 0.82), 1: (0.70, 0.74), 2: (0.75, 0.75)}
    base = {0: (0.60, 0.62), 1: (0.66, 0.66), 2: (0.63, 0.61)}
    records = [_rec("simclr", ps, s, a, ssl_method="simclr", init="random") for ps, v in simclr.items()
               for s, a in enumerate(v)]
    records += [_rec("random-init", ps, s, a, ssl_method="none", init="random") for ps, v in base.items()
                for s, a in enumerate(v)]
    means = np.array([0.81, 0.72, 0.75])
    within = np.mean([np.std(v, ddof=1) for v in simclr.values()])  # (0.01414 + 0.02828 + 0) / 3
    cell = summarize([r for r in records if r["method"] == "simclr"], "auroc")
    assert cell["kind"] == "pretrain" and cell["P"] == 3 and cell["E"] == "2"
    assert cell["mean"] == pytest.approx(means.mean()) and cell["spread"] == pytest.approx(means.std(ddof=1))
    assert cell["probe_sd"] == pytest.approx(within)
    text = render_report({"records": records}, tmp_path, published={}).read_text()
    assert f"| 10% | simclr | 0.700 ± 0.000 [3×2] | 0.700 ± 0.000 [3×2] | {means.mean():.3f} ± {means.std(ddof=1):.3f} " \
           f"[3×2] | {within:.3f} |" in text
    b = np.array([0.61, 0.66, 0.62])
    welch = stats.ttest_ind(means, b, equal_var=False)
    va, vb = means.var(ddof=1) / 3, b.var(ddof=1) / 3
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = stats.t.ppf(0.975, df) * np.sqrt(va + vb)
    assert (f"| 10% | simclr | {means.mean() - b.mean():+.3f} ± {half:.3f} [3 vs 3] | 9/9 pairs | {welch.pvalue:.3g} "
            f"| pretraining + probe (Welch, per-pretraining means) |") in text
    assert "mean ± sd [P×E]" in text


def test_ood_inverted_detectors_are_flagged_and_left_out_and_near_far_apart(tmp_path):
    def ood(test, score, auroc, pseed=0):
        return {"train": "pneumoniamnist", "test": test, "method": "simclr", "pretrain_seed": pseed, "score": score,
                "seed": 0, "auroc": auroc, "aupr_in": 0.5, "aupr_out": 0.5, "fpr95": 0.5}

    rows = [ood("chestmnist", "energy", 0.70), ood("chestmnist", "energy", 0.40, pseed=1),  # near (chest X-ray)
            ood("breastmnist", "energy", 0.90), ood("dermamnist", "energy", 0.30), ood("dermamnist", "energy", 0.2, 1)]
    text = render_report({"records": [], "ood": rows}, tmp_path, published={}).read_text()
    line = next(ln for ln in text.splitlines() if ln.startswith("| pneumoniamnist → chestmnist"))
    assert "| near |" in line and "**inverted** (1/2)" in line
    assert "**inverted** (2/2)" in next(ln for ln in text.splitlines() if ln.startswith("| pneumoniamnist → derma"))
    assert "| far |" in next(ln for ln in text.splitlines() if ln.startswith("| pneumoniamnist → breastmnist"))
    # near: only seed 0 of the chest pair (0.70); far: breast 0.90, derma left out entirely
    assert ("| simclr | energy | 0.700 (1 pair) | 0.900 (1 pair) | pneumoniamnist → chestmnist (seed 1); "
            "pneumoniamnist → dermamnist (seed 0); pneumoniamnist → dermamnist (seed 1) |") in text


def test_published_numbers_are_reference_lines_not_probe_points(tmp_path, monkeypatch):
    from medssl.medmnist import report as rep

    figs = []
    monkeypatch.setattr(rep, "_save", lambda fig, path: figs.append(fig) or path)
    rep.render_report(_results(), tmp_path)
    linear = figs[1]  # breastmnist / linear: a probe
    ax = linear.axes[0]
    refs = [ln for ln in ax.get_lines() if ln.get_label().startswith("reference, not a probe")]
    assert refs and all(ln.get_xdata()[0] == 0 and ln.get_xdata()[1] == 1 for ln in refs)  # axhline: full width
    assert "supervised end to end" in refs[0].get_label()
    assert not [ln for ln in ax.get_lines() if ln.get_marker() in ("*", "P", "X")]  # no star at 100 %


def test_pretraining_table(tmp_path):
    rows = [{"entry": "mocov3", "pretrain_seed": 1, "datasets": "breastmnist", "method": "mocov3", "arch": "resnet18",
             "epochs": 100, "status": "done", "epochs_run": 100, "steps": 200, "time_s": 600.0, "final_loss": 5.1234,
             "images_per_s": 230, "code": "medssl 0.1.0 (git abc)", "lr": 0.001,
             "method_kwargs": {"temperature": 1.0, "predictor_last_bn": False}, "augment": "mocov3"}]
    text = render_report({"records": [], "pretraining": rows}, tmp_path, published={}).read_text()
    assert ("| mocov3 | 1 | breastmnist | done | 100 / 100 | 200 | 10.0 min | 5.1234 | 0.001 | temperature=1.0, "
            "predictor_last_bn=False | mocov3 | medssl 0.1.0 (git abc) |") in text
