"""Markdown + PNG report of a MedMNIST label-fraction / OOD evaluation, and its raw results files.

The ``results`` structure consumed here (and written by :func:`write_results`)::

    {
        "records": [  # one per (dataset, protocol, method, pretrain_seed, fraction, seed)
            {"dataset": "breastmnist", "protocol": "linear", "method": "simclr",
             "pretrain_seed": 0,  # optional (0 when missing): which pretraining of the method
             "fraction": 0.01, "seed": 0, "acc": 0.81, "balanced_acc": 0.74, "auroc": 0.86,
             "arch": "resnet18_28",  # optional: matches a key of the published numbers
             ...},                    # any further keys are kept in results.json / .csv
        ],
        "ood": [  # optional, one per (train, test, method, pretrain_seed, score, seed)
            {"train": "breastmnist", "test": "pneumoniamnist", "method": "simclr",
             "score": "energy", "seed": 0, "auroc": 0.9, "aupr_in": 0.8, "aupr_out": 0.9,
             "fpr95": 0.4, "roc": {"fpr": [...], "tpr": [...]}},  # roc: see ood.roc_curve_points
        ],
        "pretraining": [...],  # optional: what each pretraining ran (run.MedMNISTRun.pretraining_summary)
        "meta": {...},  # optional, free-form (code version, backbone, ...), listed at the top
    }

``fraction`` is the label fraction in (0, 1] (shown as 1 %, 10 %, 100 %). Metrics are fractions
in [0, 1]; a missing or ``None`` metric (``results.json`` stores ``nan`` as ``null``) is left out
of its mean.

Which variance a cell covers (:func:`summarize`; GUIDE item 15). Eval seeds (``seed``) draw the
labeled subset and the probe / fine-tune seed; pretraining seeds (``pretrain_seed``) draw the
pretraining (or the random initialisation). Eval seeds that share one pretraining are not
independent repeats of the method. So:

* with P >= 2 pretraining seeds a cell is ``mean ± sd [PxE]``: the mean and sample standard
  deviation over the P pretraining seeds of each one's mean over its E eval seeds; this spread
  covers the pretraining and (averaged) the probe;
* with one pretraining it is ``mean ± h (n=E)``: the mean and the half-width of the 95 % Student-t
  interval (:func:`medssl.eval.tables.mean_ci`) over the E eval seeds: the labeled subset and the
  probe only, not the pretraining; ``mean (n=1)`` for one seed.

Each table also gives the AUROC's standard deviation over eval seeds within one pretraining
(averaged over pretrainings), the probe-only spread, beside the cell. Differences against a
baseline entry (:func:`_paired_rows`) use Welch's t-test on the per-pretraining means when both
entries have several pretraining seeds, and the paired t-test over eval seeds (probe-only) otherwise;
each row names the variance it covers.

OOD: a result with AUROC < 0.5 is **inverted** (the score ranks the OOD set above the
in-distribution test set); the table marks it, and the near- / far-OOD summary
(:func:`medssl.medmnist.ood.ood_relation`) leaves it out of its averages and counts it.

Plots: the published MedMNIST v2 numbers are supervised networks trained end to end on 100 % of
the labels, not probes; the label-fraction plots draw them as horizontal reference lines named so
in the legend, never as points of a probe curve.

Published baselines: a record is a *supervised* row when its method is ``"supervised"`` or starts
with ``"supervised"``. At fraction 100 % such rows get the MedMNIST v2 numbers of their dataset
(:data:`PUBLISHED_MEDMNIST_V2`, the ``arch`` entry if the record names one, else all entries)
in an extra column, and each dataset section lists the published numbers in a table of its own.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from pathlib import Path

import numpy as np

from medssl.core.atomic import write_atomic_bytes, write_atomic_text
from medssl.errors import DataError
from medssl.eval.tables import ci_cell, markdown_table, mean_ci, write_csv

__all__ = ["PUBLISHED_MEDMNIST_V2", "auto_baseline", "read_results_csv", "render_report", "summarize", "write_results"]

#: Test AUC / ACC of supervised baselines trained on 100 % of the labels, MedMNIST v2 (Yang et al.,
#: Scientific Data 2023, Tables 3-4); key ``<arch>_<input size>``, ``_3d`` for the "+3D" ResNets.
PUBLISHED_MEDMNIST_V2: dict[str, dict[str, dict[str, float]]] = {
    "breastmnist": {"resnet18_28": {"auc": 0.901, "acc": 0.863}, "resnet50_28": {"auc": 0.857, "acc": 0.812}},
    "pneumoniamnist": {"resnet18_28": {"auc": 0.944, "acc": 0.854}},
    "retinamnist": {"resnet18_28": {"auc": 0.717, "acc": 0.524}},
    "adrenalmnist3d": {"resnet18_3d_28": {"auc": 0.827, "acc": 0.721}, "resnet50_3d_28": {"auc": 0.828, "acc": 0.745}},
    "organmnist3d": {"resnet18_3d_28": {"auc": 0.996, "acc": 0.907}},
    "nodulemnist3d": {"resnet18_3d_28": {"auc": 0.863, "acc": 0.844}},
}

RECORD_COLUMNS = ["dataset", "protocol", "method", "pretrain_seed", "fraction", "seed", "acc", "balanced_acc", "auroc"]
OOD_COLUMNS = ["train", "test", "method", "pretrain_seed", "score", "seed", "auroc", "aupr_in", "aupr_out", "fpr95"]
METRIC_NAMES = {"acc": "ACC", "balanced_acc": "balanced ACC", "auroc": "AUROC", "aupr_in": "AUPR-In",
                "aupr_out": "AUPR-Out", "fpr95": "FPR95"}


# ---------------------------------------------------------------- results files


def _plain(value):
    """JSON-safe copy: numpy scalars/arrays to Python, non-finite floats to ``None``."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_results(results: dict, out_dir: str | Path) -> list[Path]:
    """Write ``results.json`` (everything) and ``results.csv`` (one row per record) atomically;
    also ``ood.csv`` (one row per OOD record, without the ROC points) when there are OOD records.

    Args:
        results: the structure in the module doc.
        out_dir: folder, created if needed.

    Returns:
        The paths written.
    """
    out_dir = Path(out_dir)
    plain = _plain(results)
    paths = [write_atomic_text(out_dir / "results.json", json.dumps(plain, indent=1) + "\n"),
             write_csv(out_dir / "results.csv", plain.get("records", []), RECORD_COLUMNS)]
    if plain.get("ood"):
        paths.append(write_csv(out_dir / "ood.csv", plain["ood"], OOD_COLUMNS, skip=("roc",)))
    return paths


#: results.csv columns read back as numbers (the rest stay strings); an empty cell is ``None``
_CSV_FLOATS = ("fraction", "acc", "balanced_acc", "auroc", "val_auroc", "time_s")
_CSV_INTS = ("pretrain_seed", "seed", "n_train")


def read_results_csv(path: str | Path) -> dict:
    """Read a ``results.csv`` written by :func:`write_results` back into the ``results`` structure
    (``{"records": [...]}``), typed as :func:`render_report` expects, so a report can be re-rendered
    by the current code from the CSV alone (OOD ROC points and pretraining summaries are not in it).

    Raises:
        DataError: the file is missing or lacks a column of :data:`RECORD_COLUMNS` but ``pretrain_seed``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError("no such results file", path)
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in RECORD_COLUMNS if c != "pretrain_seed" and rows and c not in rows[0]]
    if not rows or missing:
        raise DataError(f"not a medssl results.csv ({'no rows' if not rows else 'missing ' + ', '.join(missing)})", path)
    for r in rows:
        for keys, cast in ((_CSV_FLOATS, float), (_CSV_INTS, int)):
            for k in keys:
                if k in r:
                    r[k] = cast(r[k]) if r[k] not in ("", None) else None
    return {"records": rows}


# ---------------------------------------------------------------- formatting


def _num(v) -> float:
    return math.nan if v is None else float(v)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def _slug(*parts: str) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-") for p in parts)


def _arch_name(key: str) -> str:
    """``resnet18_3d_28`` -> ``ResNet-18+3D (28)``."""
    m = re.fullmatch(r"resnet(\d+)(_3d)?_(\d+)", key)
    return f"ResNet-{m[1]}{'+3D' if m[2] else ''} ({m[3]})" if m else key


def _is_supervised(method: str) -> bool:
    return str(method).startswith("supervised")


def _unique(values) -> list:
    return list(dict.fromkeys(values))


def _group(rows: list[dict], keys: tuple[str, ...]) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    return groups


def _pseed(r: dict) -> int:
    return int(r.get("pretrain_seed") or 0)


def _finite(values) -> list[float]:
    return [v for v in (_num(x) for x in values) if not math.isnan(v)]


def summarize(rows: list[dict], metric: str) -> dict:
    """One cell of ``metric`` over result rows of one setting (see the module doc).

    Returns:
        ``{"mean", "spread", "kind", "P", "E", "text", "per_pretrain", "probe_sd"}``: ``kind``
        ``"pretrain"`` (P >= 2: ``spread`` is the sd over the per-pretraining means) or ``"eval"``
        (one pretraining: ``spread`` is the 95 % t half-width over eval seeds, ``nan`` for one);
        ``per_pretrain`` maps each pretraining seed to its mean over eval seeds; ``probe_sd`` is the
        sd over eval seeds within a pretraining, averaged over pretrainings (``nan`` if no
        pretraining has two finite values).
    """
    by: dict[int, list[float]] = {}
    for r in rows:
        by.setdefault(_pseed(r), []).append(_num(r.get(metric)))
    finite = {ps: _finite(v) for ps, v in by.items()}
    per = {ps: float(np.mean(v)) for ps, v in finite.items() if v}
    sds = [float(np.std(v, ddof=1)) for v in finite.values() if len(v) > 1]
    probe_sd = float(np.mean(sds)) if sds else math.nan
    counts = sorted({len(v) for v in finite.values() if v})
    e = (str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}") if counts else "0"
    out = {"per_pretrain": per, "probe_sd": probe_sd, "P": len(per), "E": e}
    if len(per) >= 2:
        vals = list(per.values())
        mean, sd = float(np.mean(vals)), float(np.std(vals, ddof=1))
        return {**out, "mean": mean, "spread": sd, "kind": "pretrain", "text": f"{mean:.3f} ± {sd:.3f} [{len(per)}×{e}]"}
    vals = [v for vs in finite.values() for v in vs]
    mean, half = mean_ci(vals)
    return {**out, "mean": mean, "spread": half, "kind": "eval", "text": ci_cell(vals)}


def _sd_text(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.3f}"


def auto_baseline(records: list[dict]) -> str | None:
    """The first randomly initialised entry without pretraining (``ssl_method`` none, ``init``
    random), the natural reference for "does pretraining help"; ``None`` if there is none."""
    for r in records:
        if r.get("ssl_method") == "none" and r.get("init") == "random":
            return str(r["method"])
    return None


def _welch(a: list[float], b: list[float]) -> tuple[float, float, float]:
    """Difference of means ``mean(a) - mean(b)``, the half-width of its 95 % Welch interval and
    Welch's two-sided t-test p-value (``scipy.stats.ttest_ind(equal_var=False)``)."""
    from scipy.stats import t, ttest_ind

    a_, b_ = np.asarray(a, float), np.asarray(b, float)
    va, vb = a_.var(ddof=1) / len(a_), b_.var(ddof=1) / len(b_)
    diff = float(a_.mean() - b_.mean())
    if va + vb == 0:
        return diff, 0.0, math.nan
    df = (va + vb) ** 2 / (va ** 2 / (len(a_) - 1) + vb ** 2 / (len(b_) - 1))
    return diff, float(t.ppf(0.975, df) * math.sqrt(va + vb)), float(ttest_ind(a_, b_, equal_var=False).pvalue)


def _paired_rows(rows: list[dict], baseline: str) -> list[list[str]]:
    """Per fraction and method: the AUROC difference to ``baseline``.

    Both with several pretraining seeds: difference of the means of the per-pretraining means, its
    95 % Welch interval, pretraining pairs won (of P_method x P_baseline) and Welch's t-test
    p-value: covers the pretraining. Otherwise: paired by eval seed (one eval seed = one labeled
    subset and one probe / fine-tune seed, the same for every method; with several pretraining
    seeds on one side, its mean over them per eval seed), t interval, wins and the paired t-test
    p-value (``scipy.stats.ttest_rel``): covers only the labeled subset and the probe.
    """
    from scipy.stats import ttest_rel

    out = []
    for fraction in sorted({r["fraction"] for r in rows}):
        at = [r for r in rows if r["fraction"] == fraction]
        base_rows = [r for r in at if r["method"] == baseline]
        if not base_rows:
            continue
        base = summarize(base_rows, "auroc")
        for method in _unique(r["method"] for r in at if r["method"] != baseline):
            mine = [r for r in at if r["method"] == method]
            summ = summarize(mine, "auroc")
            if summ["P"] >= 2 and base["P"] >= 2:
                a, b = list(summ["per_pretrain"].values()), list(base["per_pretrain"].values())
                diff, half, p = _welch(a, b)
                wins = sum(x > y for x in a for y in b)
                out.append([_pct(fraction), str(method), f"{diff:+.3f} ± {half:.3f} [{len(a)} vs {len(b)}]",
                            f"{wins}/{len(a) * len(b)} pairs", "n/a" if math.isnan(p) else f"{p:.3g}",
                            "pretraining + probe (Welch, per-pretraining means)"])
                continue

            def by_seed(rs):
                d: dict[int, list[float]] = {}
                for r in rs:
                    d.setdefault(r["seed"], []).append(_num(r.get("auroc")))
                return {s: float(np.mean(v)) for s, v in d.items() if not any(math.isnan(x) for x in v)}

            ma, mb = by_seed(mine), by_seed(base_rows)
            pairs = [(ma[s], mb[s]) for s in ma if s in mb]
            if not pairs:
                continue
            a_, b_ = np.asarray(pairs).T
            d = a_ - b_
            p = ttest_rel(a_, b_).pvalue if len(d) > 1 and np.ptp(d) > 0 else math.nan
            out.append([_pct(fraction), str(method), ci_cell(d.tolist(), signed=True), f"{int((d > 0).sum())}/{len(d)}",
                        "n/a" if math.isnan(p) else f"{p:.3g}", "probe only (paired by eval seed)"])
    return out


# ---------------------------------------------------------------- figures


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return write_atomic_bytes(path, buf.getvalue())


def _fraction_figure(rows: list[dict], title: str, published: dict[str, dict[str, float]], path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(10, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = _unique(r["method"] for r in rows)
    kinds = set()
    for ax, metric in zip(axes, ("auroc", "acc")):
        for i, method in enumerate(methods):
            by_fraction = _group([r for r in rows if r["method"] == method], ("fraction",))
            fractions = sorted(f for (f,) in by_fraction)
            stats = [summarize(by_fraction[(f,)], metric) for f in fractions]
            kinds |= {s["kind"] for s in stats}
            shift = 10 ** (0.025 * (i - (len(methods) - 1) / 2))  # spread error bars of one x apart
            ax.errorbar([f * 100 * shift for f in fractions], [s["mean"] for s in stats],
                        yerr=[0 if math.isnan(s["spread"]) else s["spread"] for s in stats], marker="o", capsize=3,
                        label=method)
        for j, (arch, nums) in enumerate(published.items()):
            key = "auc" if metric == "auroc" else "acc"
            ax.axhline(nums[key], color="0.35", linestyle=("--", ":", "-.")[j % 3], linewidth=1,
                       label=f"reference, not a probe: MedMNIST v2 {_arch_name(arch)} supervised end to end, 100 %")
        ax.set_xscale("log")
        ax.set_xticks([1, 10, 100], ["1%", "10%", "100%"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0.6, 160)
        ax.set_xlabel("label fraction")
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7)
    bars = {"pretrain": "sd over pretraining seeds", "eval": "95% CI over eval seeds (one pretraining)"}
    fig.suptitle(f"{title} (error bars: {'; '.join(bars[k] for k in sorted(kinds))})", fontsize=10)
    return _save(fig, path)


def _ood_figure(rows: list[dict], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    scores = _unique(r["score"] for r in rows)
    fig = Figure(figsize=(4 * len(scores), 4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(scores)))
    colours = {m: f"C{i}" for i, m in enumerate(_unique(r["method"] for r in rows))}
    for ax, score in zip(axes, scores):
        for method, colour in colours.items():
            runs = [r for r in rows if r["score"] == score and r["method"] == method and r.get("roc")]
            mean_auroc = summarize(runs, "auroc")["mean"] if runs else math.nan
            flag = " INVERTED" if mean_auroc < 0.5 else ""
            for k, r in enumerate(runs):  # one curve per seed, labelled once
                ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], color=colour, alpha=0.8, linewidth=1.2,
                        label=f"{method} (AUROC {mean_auroc:.3f}{flag})" if k == 0 else None)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
        ax.axhline(0.95, color="0.6", linestyle=":", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="FPR (OOD accepted)", ylabel="TPR (in-distribution kept)",
               title=score)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------- report


def _published_cell(rows: list[dict], published: dict[str, dict[str, float]]) -> str:
    archs = _unique(r["arch"] for r in rows if r.get("arch") in published) or list(published)
    return "; ".join(f"{_arch_name(a)}: {published[a]['auc']:.3f} / {published[a]['acc']:.3f}" for a in archs)


def _inverted(r: dict) -> bool:
    auroc = _num(r.get("auroc"))
    return bool(r.get("inverted")) or (not math.isnan(auroc) and auroc < 0.5)


def _relation(r: dict) -> str:
    from medssl.medmnist.ood import ood_relation

    return r.get("relation") or ood_relation(r["train"], r["test"])


def _ood_section(ood: list[dict], out_dir: Path) -> list[str]:
    lines = ["## Out-of-distribution detection", "",
             "In-distribution test samples are positives; FPR95 is the fraction of OOD samples accepted at the "
             "threshold that keeps 95 % of the in-distribution samples (lower is better). One detector per "
             "pretraining seed (each cell over them as in the tables above). **Near** OOD: the two datasets share "
             "an imaging modality; **far**: they do not (medssl.medmnist.ood.MODALITY). A detector with AUROC "
             "< 0.5 is **inverted**: it ranks the OOD set as more in-distribution than the in-distribution test "
             "set; that is a finding about the detector, marked here and left out of the averages below.", ""]
    groups = _group(ood, ("train", "test", "method", "score"))
    table = []
    for (tr, te, m, sc), grp in groups.items():
        inv = sum(_inverted(r) for r in grp)
        mark = "" if not inv else f"**inverted** ({inv}/{len(grp)})"
        table.append([f"{tr} → {te}", _relation(grp[0]), str(m), str(sc),
                      *(summarize(grp, k)["text"] for k in OOD_COLUMNS[6:]), mark])
    lines += markdown_table(["train → OOD", "near/far", "method", "score", *(METRIC_NAMES[k] for k in OOD_COLUMNS[6:]),
                             "flag"], table)
    lines.append("")
    # near / far averages without the inverted detectors
    summary = []
    for (m, sc), grp in _group(ood, ("method", "score")).items():
        cells = []
        excluded = []
        for rel in ("near", "far"):
            pairs = _group([r for r in grp if _relation(r) == rel], ("train", "test"))
            values = []
            for (tr, te), rs in pairs.items():
                kept = [r for r in rs if not _inverted(r)]
                excluded += [f"{tr} → {te}" + (f" (seed {_pseed(r)})" if len(rs) > 1 else "")
                             for r in rs if _inverted(r)]
                if kept:
                    values.append(float(np.mean(_finite(r.get("auroc") for r in kept))))
            cells.append(f"{np.mean(values):.3f} ({len(values)} pair{'s' if len(values) != 1 else ''})"
                         if values else "n/a")
        summary.append([str(m), str(sc), *cells, "; ".join(excluded) or "none"])
    lines += ["Mean AUROC over OOD pairs (each pair: its mean over pretraining seeds), near and far apart, "
              "inverted detectors left out:", ""]
    lines += markdown_table(["method", "score", "near-OOD AUROC", "far-OOD AUROC", "left out (inverted)"], summary)
    lines.append("")
    for train, test in _unique((r["train"], r["test"]) for r in ood):
        rows = [r for r in ood if r["train"] == train and r["test"] == test]
        png = out_dir / f"{_slug('ood', train, 'vs', test)}.png"
        _ood_figure(rows, f"OOD ({_relation(rows[0])}): {train} (in) vs {test} (out)", png)
        lines += [f"### {train} → {test}", "", f"![OOD {train} vs {test}]({png.name})", ""]
    return lines


def _pretraining_section(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    lines = ["## Pretraining runs", "",
             "What each pretraining actually ran (from its log): epochs and optimiser steps run against the epochs "
             "configured, training time, the last epoch's mean loss, the learning rate and method keywords after "
             "the code's defaults, the augmentation, and the medssl code that ran it.", ""]
    table = []
    for r in rows:
        kw = r.get("method_kwargs") or {}
        shown = ", ".join(f"{k}={kw[k]}" for k in ("temperature", "predictor_last_bn", "proj_layers", "hidden_dim",
                                                   "proj_dim") if k in kw)
        time_s = r.get("time_s")
        table.append([str(r["entry"]), str(r["pretrain_seed"]), str(r["datasets"]), str(r.get("status", "")),
                      f"{r.get('epochs_run') if r.get('epochs_run') is not None else '-'} / {r['epochs']}",
                      str(r.get("steps") if r.get("steps") is not None else "-"),
                      "-" if time_s is None else f"{time_s / 60:.1f} min",
                      "-" if r.get("final_loss") is None else f"{r['final_loss']:.4f}",
                      "-" if r.get("lr") is None else f"{r['lr']:.3g}", shown or "-", str(r.get("augment") or "-"),
                      str(r.get("code") or "-")])
    lines += markdown_table(["entry", "seed", "data", "status", "epochs run / set", "steps", "train time", "last loss",
                             "lr", "method settings", "augmentation", "code"], table)
    return lines + [""]


def render_report(results: dict, out_dir: str | Path, published: dict | None = None,
                  baseline: str | None = "auto") -> Path:
    """Write ``report.md`` and its PNG figures into ``out_dir``.

    For every dataset x protocol: a figure of AUROC and ACC against the label fraction (log x
    axis, one line per method with error bars: sd over pretraining seeds, or the 95 % CI over
    eval seeds of one pretraining; published MedMNIST v2 numbers as labelled reference lines) and a
    table of ACC, balanced ACC and AUROC per fraction and method (:func:`summarize`), with the
    probe-only AUROC sd beside it. Under each protocol's table, when a baseline entry is present:
    the AUROC difference of every other entry against it. For every (train dataset -> OOD dataset)
    pair: a figure of ROC curves, one panel per score; one table of all OOD results (inverted ones
    marked), and the near- / far-OOD averages without the inverted ones. The pretraining runs
    (epochs run, time, resolved settings, code version), when ``results`` lists them.

    Args:
        results: the structure in the module doc.
        out_dir: folder for ``report.md`` and the PNGs (created if needed).
        published: published supervised numbers, ``{dataset: {arch: {"auc", "acc"}}}``; ``None``
            uses :data:`PUBLISHED_MEDMNIST_V2`, ``{}`` leaves them out.
        baseline: the entry (method name) the paired tables compare against; ``"auto"``:
            :func:`auto_baseline`; ``None``: no paired tables.

    Returns:
        The path of ``report.md``.
    """
    out_dir = Path(out_dir)
    published = PUBLISHED_MEDMNIST_V2 if published is None else published
    records, ood = results.get("records", []), results.get("ood", [])
    if baseline == "auto":
        baseline = auto_baseline(records)
    lines = ["# MedMNIST evaluation report", ""]
    for key, value in (results.get("meta") or {}).items():
        lines.append(f"- {key}: {value}")
    lines += ["", "Which variance a cell covers: `mean ± sd [P×E]` is the mean and standard deviation over P "
              "pretraining seeds, each the mean over its E eval seeds (covers the pretraining and the probe); "
              "`mean ± h (n=E)` is the mean and the 95 % Student-t half-width over E eval seeds that share ONE "
              "pretraining (covers only the labeled subset and the probe, not the pretraining; n=1: no interval). "
              "'AUROC probe sd' is the standard deviation over eval seeds within one pretraining (averaged over "
              "pretrainings). Eval seed s draws the same labeled subset for every method. Fractions are label "
              "fractions of the training split.", ""]
    lines += _pretraining_section(results.get("pretraining") or [])
    for dataset in _unique(r["dataset"] for r in records):
        pub = published.get(dataset, {})
        lines += [f"## {dataset}", ""]
        if pub:
            lines += ["Published MedMNIST v2 supervised baselines (trained end to end on 100 % of the labels, test "
                      "split); in the plots a reference line, not a probe result:", ""]
            lines += markdown_table(["model", "AUC", "ACC"],
                                    [[_arch_name(a), f"{v['auc']:.3f}", f"{v['acc']:.3f}"] for a, v in pub.items()])
            lines.append("")
        rows_ds = [r for r in records if r["dataset"] == dataset]
        for protocol in _unique(r["protocol"] for r in rows_ds):
            rows = [r for r in rows_ds if r["protocol"] == protocol]
            png = _fraction_figure(rows, f"{dataset} / {protocol}", pub, out_dir / f"{_slug(dataset, protocol)}.png")
            lines += [f"### {dataset} / {protocol}", "", f"![{dataset} {protocol}]({png.name})", ""]
            header = (["fraction", "method", "ACC", "balanced ACC", "AUROC", "AUROC probe sd"]
                      + (["published AUC / ACC"] if pub else []))
            table = []
            groups = _group(rows, ("fraction", "method"))
            for fraction in sorted({f for f, _ in groups}):
                for method in _unique(m for f, m in groups if f == fraction):
                    grp = groups[(fraction, method)]
                    cells = [summarize(grp, k) for k in RECORD_COLUMNS[6:]]
                    row = [_pct(fraction), str(method), *(c["text"] for c in cells), _sd_text(cells[-1]["probe_sd"])]
                    if pub:
                        row.append(_published_cell(grp, pub) if _is_supervised(method) and fraction == 1.0 else "")
                    table.append(row)
            lines += markdown_table(header, table) + [""]
            paired = _paired_rows(rows, baseline) if baseline in {r["method"] for r in rows} else []
            if paired:
                lines += [f"Test AUROC minus {baseline}'s: mean difference ± 95 % CI, wins, p-value, and the variance "
                          "the comparison covers (Welch's t-test on per-pretraining means when both have several "
                          "pretraining seeds; else paired by eval seed, same labeled subset: probe-only).", ""]
                lines += markdown_table(["fraction", "method", f"Δ AUROC vs {baseline}", "wins", "p", "covers"],
                                        paired) + [""]
    if ood:
        lines += _ood_section(ood, out_dir)
    return write_atomic_text(out_dir / "report.md", "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    """``python -m medssl.medmnist.report RESULTS_CSV --out DIR [--meta KEY=VALUE ...]``: re-render a
    report with the current code from a stored ``results.csv`` (e.g. to state which variance each
    interval covers in a report made by an older version); ``--meta`` lines go at the top."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m medssl.medmnist.report", description=main.__doc__)
    ap.add_argument("results_csv")
    ap.add_argument("--out", required=True, help="folder for report.md and the PNGs")
    ap.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE", help="a line at the top (repeatable)")
    ap.add_argument("--baseline", default="auto", help="entry the paired tables compare against")
    args = ap.parse_args(argv)
    try:
        results = read_results_csv(args.results_csv)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    meta = {}
    for item in args.meta:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"error: --meta {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        meta[key.strip()] = value.strip()
    results["meta"] = meta
    print(render_report(results, args.out, baseline=args.baseline))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
