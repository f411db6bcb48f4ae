"""Markdown + PNG report of a MedMNIST label-fraction / OOD evaluation, and its raw results files.

The ``results`` structure consumed here (and written by :func:`write_results`)::

    {
        "records": [  # one per (dataset, protocol, method, fraction, seed)
            {"dataset": "breastmnist", "protocol": "linear", "method": "simclr",
             "fraction": 0.01, "seed": 0, "acc": 0.81, "balanced_acc": 0.74, "auroc": 0.86,
             "arch": "resnet18_28",  # optional: matches a key of the published numbers
             ...},                    # any further keys are kept in results.json / .csv
        ],
        "ood": [  # optional, one per (train, test, method, score, seed)
            {"train": "breastmnist", "test": "pneumoniamnist", "method": "simclr",
             "score": "energy", "seed": 0, "auroc": 0.9, "aupr_in": 0.8, "aupr_out": 0.9,
             "fpr95": 0.4, "roc": {"fpr": [...], "tpr": [...]}},  # roc: see ood.roc_curve_points
        ],
        "meta": {...},  # optional, free-form (commit, backbone, ...), listed at the top
    }

``fraction`` is the label fraction in (0, 1] (shown as 1 %, 10 %, 100 %). Metrics are fractions
in [0, 1]; a missing or ``None`` metric (``results.json`` stores ``nan`` as ``null``) is left out
of its mean. Every table cell is ``mean ± h (n=k)``: the mean over the ``k`` seeds and the
half-width ``h`` of the 95 % Student-t interval (:func:`medssl.eval.tables.mean_ci`); with one
seed only ``mean (n=1)``.

Published baselines: a record is a *supervised* row when its method is ``"supervised"`` or starts
with ``"supervised"``. At fraction 100 % such rows get the MedMNIST v2 numbers of their dataset
(:data:`PUBLISHED_MEDMNIST_V2`, the ``arch`` entry if the record names one, else all entries)
in an extra column, and each dataset section lists the published numbers in a table of its own.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np

from medssl.core.atomic import write_atomic_bytes, write_atomic_text
from medssl.eval.tables import ci_cell, markdown_table, mean_ci, write_csv

__all__ = ["PUBLISHED_MEDMNIST_V2", "auto_baseline", "render_report", "write_results"]

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

RECORD_COLUMNS = ["dataset", "protocol", "method", "fraction", "seed", "acc", "balanced_acc", "auroc"]
OOD_COLUMNS = ["train", "test", "method", "score", "seed", "auroc", "aupr_in", "aupr_out", "fpr95"]
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


def auto_baseline(records: list[dict]) -> str | None:
    """The first randomly initialised entry without pretraining (``ssl_method`` none, ``init``
    random), the natural reference for "does pretraining help"; ``None`` if there is none."""
    for r in records:
        if r.get("ssl_method") == "none" and r.get("init") == "random":
            return str(r["method"])
    return None


def _paired_rows(rows: list[dict], baseline: str) -> list[list[str]]:
    """Per fraction and method: the AUROC difference to ``baseline`` paired by seed (one seed =
    one labeled subset and one probe / fine-tune seed, the same for every method), its 95 % t
    interval, wins and the two-sided paired t-test p-value (``scipy.stats.ttest_rel``)."""
    from scipy.stats import ttest_rel

    by = {(r["fraction"], r["method"], r["seed"]): _num(r.get("auroc")) for r in rows}
    out = []
    for fraction in sorted({f for f, _, _ in by}):
        for method in _unique(m for f, m, _ in by if f == fraction and m != baseline):
            pairs = [(by[(fraction, method, s)], by[(fraction, baseline, s)])
                     for f, m, s in by if f == fraction and m == method and (fraction, baseline, s) in by]
            pairs = [(a, b) for a, b in pairs if not (math.isnan(a) or math.isnan(b))]
            if not pairs:
                continue
            a, b = np.asarray(pairs).T
            diff = a - b
            p = ttest_rel(a, b).pvalue if len(diff) > 1 and np.ptp(diff) > 0 else math.nan
            out.append([_pct(fraction), str(method), ci_cell(diff.tolist(), signed=True),
                        f"{int((diff > 0).sum())}/{len(diff)}",
                        "n/a" if math.isnan(p) else f"{p:.3g}"])
    return out


# ---------------------------------------------------------------- figures


def _save(fig, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return write_atomic_bytes(path, buf.getvalue())


def _fraction_figure(rows: list[dict], title: str, published: dict[str, dict[str, float]], path: Path) -> Path:
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    fig = Figure(figsize=(10, 4), layout="constrained")
    axes = fig.subplots(1, 2)
    methods = _unique(r["method"] for r in rows)
    for ax, metric in zip(axes, ("auroc", "acc")):
        for i, method in enumerate(methods):
            by_fraction = _group([r for r in rows if r["method"] == method], ("fraction",))
            fractions = sorted(f for (f,) in by_fraction)
            stats = [mean_ci([_num(r.get(metric)) for r in by_fraction[(f,)]]) for f in fractions]
            shift = 10 ** (0.025 * (i - (len(methods) - 1) / 2))  # spread error bars of one x apart
            ax.errorbar([f * 100 * shift for f in fractions], [m for m, _ in stats],
                        yerr=[0 if math.isnan(h) else h for _, h in stats], marker="o", capsize=3, label=method)
        for j, (arch, nums) in enumerate(published.items()):
            key = "auc" if metric == "auroc" else "acc"
            ax.plot([100], [nums[key]], marker=("*", "P", "X")[j % 3], color="0.3", linestyle="none", markersize=10,
                    label=f"MedMNIST v2 {_arch_name(arch)}")
        ax.set_xscale("log")
        ax.set_xticks([1, 10, 100], ["1%", "10%", "100%"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(0.6, 160)
        ax.set_xlabel("label fraction")
        ax.set_ylabel(METRIC_NAMES[metric])
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{title} (mean ± 95% CI over seeds)")
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
            mean_auroc, _ = mean_ci([_num(r.get("auroc")) for r in runs])
            for k, r in enumerate(runs):  # one curve per seed, labelled once
                ax.plot(r["roc"]["fpr"], r["roc"]["tpr"], color=colour, alpha=0.8, linewidth=1.2,
                        label=f"{method} (AUROC {mean_auroc:.3f})" if k == 0 else None)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle="--", linewidth=0.8)
        ax.axhline(0.95, color="0.6", linestyle=":", linewidth=0.8)
        ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="FPR (OOD accepted)", ylabel="TPR (in-distribution kept)",
               title=score)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle(title)
    return _save(fig, path)


# ---------------------------------------------------------------- report


def _published_cell(rows: list[dict], published: dict[str, dict[str, float]]) -> str:
    archs = _unique(r["arch"] for r in rows if r.get("arch") in published) or list(published)
    return "; ".join(f"{_arch_name(a)}: {published[a]['auc']:.3f} / {published[a]['acc']:.3f}" for a in archs)


def render_report(results: dict, out_dir: str | Path, published: dict | None = None,
                  baseline: str | None = "auto") -> Path:
    """Write ``report.md`` and its PNG figures into ``out_dir``.

    For every dataset x protocol: a figure of AUROC and ACC against the label fraction (log x
    axis, one line per method with 95 % CI error bars; published MedMNIST v2 numbers as grey stars
    at 100 %) and a table of ACC, balanced ACC and AUROC per fraction and method. For every
    (train dataset -> OOD dataset) pair: a figure of ROC curves, one panel per score, and one
    table of all OOD results. Under each protocol's table, when a baseline entry is present: the
    per-seed paired AUROC difference of every other entry against it.

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
    lines += ["", "Cells are mean ± half-width of the 95 % Student-t confidence interval over seeds (n = number "
              "of seeds; n=1 has no interval). Fractions are label fractions of the training split.", ""]
    for dataset in _unique(r["dataset"] for r in records):
        pub = published.get(dataset, {})
        lines += [f"## {dataset}", ""]
        if pub:
            lines += ["Published MedMNIST v2 supervised baselines (100 % labels, test split):", ""]
            lines += markdown_table(["model", "AUC", "ACC"],
                                    [[_arch_name(a), f"{v['auc']:.3f}", f"{v['acc']:.3f}"] for a, v in pub.items()])
            lines.append("")
        rows_ds = [r for r in records if r["dataset"] == dataset]
        for protocol in _unique(r["protocol"] for r in rows_ds):
            rows = [r for r in rows_ds if r["protocol"] == protocol]
            png = _fraction_figure(rows, f"{dataset} / {protocol}", pub, out_dir / f"{_slug(dataset, protocol)}.png")
            lines += [f"### {dataset} / {protocol}", "", f"![{dataset} {protocol}]({png.name})", ""]
            header = ["fraction", "method", "ACC", "balanced ACC", "AUROC"] + (["published AUC / ACC"] if pub else [])
            table = []
            groups = _group(rows, ("fraction", "method"))
            for fraction in sorted({f for f, _ in groups}):
                for method in _unique(m for f, m in groups if f == fraction):
                    grp = groups[(fraction, method)]
                    row = [_pct(fraction), str(method), *(ci_cell([r.get(k) for r in grp]) for k in RECORD_COLUMNS[5:])]
                    if pub:
                        row.append(_published_cell(grp, pub) if _is_supervised(method) and fraction == 1.0 else "")
                    table.append(row)
            lines += markdown_table(header, table) + [""]
            paired = _paired_rows(rows, baseline) if baseline in {r["method"] for r in rows} else []
            if paired:
                lines += [f"Test AUROC minus {baseline}'s, paired by seed (same labeled subset): mean ± 95 % CI, "
                          "seeds won, paired t-test p-value.", ""]
                lines += markdown_table(["fraction", "method", f"Δ AUROC vs {baseline}", "wins", "p"], paired) + [""]
    if ood:
        lines += ["## Out-of-distribution detection", "",
                  "In-distribution test samples are positives; FPR95 is the fraction of OOD samples accepted "
                  "at the threshold that keeps 95 % of the in-distribution samples (lower is better).", ""]
        groups = _group(ood, ("train", "test", "method", "score"))
        lines += markdown_table(
            ["train → OOD", "method", "score", *(METRIC_NAMES[k] for k in OOD_COLUMNS[5:])],
            [[f"{tr} → {te}", str(m), str(s), *(ci_cell([r.get(k) for r in grp]) for k in OOD_COLUMNS[5:])]
             for (tr, te, m, s), grp in groups.items()])
        lines.append("")
        for train, test in _unique((r["train"], r["test"]) for r in ood):
            rows = [r for r in ood if r["train"] == train and r["test"] == test]
            png = out_dir / f"{_slug('ood', train, 'vs', test)}.png"
            _ood_figure(rows, f"OOD: {train} (in) vs {test} (out)", png)
            lines += [f"### {train} → {test}", "", f"![OOD {train} vs {test}]({png.name})", ""]
    return write_atomic_text(out_dir / "report.md", "\n".join(lines))
