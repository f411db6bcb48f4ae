"""Report of the UMCT recipe set on a real multi-case dataset (``make hippo-umct``).

Reads the runs ``<root>/<arm>-n<N>-s<seed>`` (arm: one of :data:`ARMS`, N labeled volumes, the
seed that also drew them) and writes a markdown report:

* the paper recipe against one single-view network trained on the same labeled volumes, per N:
  test Dice and HD95 per class, mean ± sd over seeds, and the difference paired by seed (both runs
  of a seed share the labeled volumes, so the paired difference removes the draw's luck);
* the one-factor ablation at one N: each arm against the arm before it (it changes one setting);
* the budget actually spent (steps and wall time of every run);
* a verdict computed from the numbers: whether the paper's claim (co-training with uncertainty
  weighted fusion beats the supervised network) holds here, and whether the gain is more than a
  3-network ensemble gives.

Checkpoints were selected on the val split; the test split is read once per run
(:func:`medssl.eval.compare.final_metrics`).

    python -m medssl.eval.umct_report runs/hippo_umct --out reports/hippocampus_umct.md
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

from medssl.errors import DataError
from medssl.eval.claims import verdict as _verdict
from medssl.eval.tables import markdown_table, sd_cell

#: ablation arm -> (short label, the one factor it changes from the arm before it). Order matters.
ARMS = {
    "single_view": ("1 single view", "one network, labeled cases only"),
    "ensemble_supervised": ("2 3-view ensemble, supervised", "3 views instead of 1 (co-training off)"),
    "cotrain_average": ("3 + co-training, plain average", "co-training on unlabeled cases (average fusion)"),
    "cotrain_variance": ("4 + uncertainty fusion (paper)", "fusion weighted by 1 / MC-dropout variance"),
    "cotrain_entropy": ("5 entropy instead of variance", "uncertainty = predictive entropy"),
    "confidence": ("6 + confidence weight", "medssl's per-sample confidence weight on the co-training loss"),
}
PAPER, BASELINE = "cotrain_variance", "single_view"
_RUN = re.compile(r"^(?P<arm>[a-z_]+)-n(?P<n>\d+)-s(?P<seed>\d+)$")


def collect(root: Path) -> dict[tuple[str, int], dict[int, dict]]:
    """``{(arm, N): {seed: run record}}`` for every finished run under ``root``.

    A record holds the test block (Dice / HD95 per class), the validation Dice the checkpoint was
    selected with, the steps run and the wall time.
    """
    from medssl.eval.compare import final_metrics

    out: dict[tuple[str, int], dict[int, dict]] = {}
    for run in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        m = _RUN.match(run.name)
        if not m or m["arm"] not in ARMS or not (run / "metrics.json").is_file():
            continue
        raw = json.loads((run / "metrics.json").read_text())
        rec = {**final_metrics(run), "steps": raw.get("step"), "wall_time_s": raw.get("wall_time_s"),
               "n_train_cases": raw.get("n_train_cases")}
        out.setdefault((m["arm"], int(m["n"])), {})[int(m["seed"])] = rec
    if not out:
        raise DataError("no finished UMCT runs (<arm>-n<N>-s<seed>/metrics.json)", root)
    return out


def _classes(runs: dict) -> list[str]:
    first = next(iter(next(iter(runs.values())).values()))
    return list(first["dice"])


def _paired(a: dict[int, dict], b: dict[int, dict], key: str = "dice_mean") -> list[float]:
    """``a - b`` seed by seed, over the seeds both have."""
    return [a[s][key] - b[s][key] for s in sorted(a) if s in b]


def _row(label: str, recs: dict[int, dict], classes: list[str]) -> list[str]:
    vals = list(recs.values())
    return [label, ",".join(map(str, sorted(recs))), sd_cell([r["dice_mean"] for r in vals]),
            *[sd_cell([r["dice"].get(c) for r in vals]) for c in classes],
            *[sd_cell([(r.get("hd95_mm") or {}).get(c) for r in vals], digits=2) for c in classes],
            sd_cell([r.get("val_dice_mean") for r in vals])]


def _header(first: str, classes: list[str]) -> list[str]:
    return [first, "seeds", "Dice mean", *[f"Dice {c}" for c in classes], *[f"HD95 {c} (mm)" for c in classes],
            "val Dice (selection)"]


def _delta_cell(d: list[float]) -> str:
    if not d:
        return "—"
    wins = sum(x > 0 for x in d)
    return f"{sd_cell(d, signed=True)} ({wins}/{len(d)} seeds > 0: " + " ".join(f"{x:+.3f}" for x in d) + ")"


def build_report(root: Path, ablation_n: int = 4, png_name: str | None = None) -> str:
    """The markdown report of the runs under ``root``."""
    runs = collect(Path(root))
    classes = _classes(runs)
    ns = sorted({n for _, n in runs})
    lines = ["# UMCT (Xia et al., WACV 2020) on MSD Hippocampus", "",
             "Real T1 MRI with manual labels (MSD Task04, 208 cases imported with `medssl data import-msd`: "
             "145 training pool / 21 val / 42 test). Each run trains on N labeled volumes of the pool drawn "
             "with the run's seed; every other pool volume is unlabeled (used by the co-training arms only). "
             "Test Dice and HD95 per class of the checkpoint selected on the val split, the test split read "
             "once per run; cells are mean ± sample sd over seeds. The spread covers the draw of labeled "
             "volumes, initialisation and patch order; Δ is paired by seed (same labeled volumes).", ""]

    lines += ["## Paper recipe vs one single-view network", ""]
    rows, verdicts = [], []
    for n in ns:
        for arm in (BASELINE, PAPER):
            if (arm, n) in runs:
                rows.append(_row(f"N={n} {ARMS[arm][0]}", runs[(arm, n)], classes))
        if (BASELINE, n) in runs and (PAPER, n) in runs:
            gain = _paired(runs[(PAPER, n)], runs[(BASELINE, n)])
            rows.append([f"N={n} Δ paper − single", "", _delta_cell(gain)] + [""] * (2 * len(classes) + 1))
            verdicts.append(_verdict(gain, f"N = {n}: UMCT beats a single-view network"))
    lines += markdown_table(_header("N / recipe", classes), rows) + [""]
    if png_name:
        lines += [f"![Dice vs labeled volumes]({png_name})", ""]

    arms_here = [a for a in ARMS if (a, ablation_n) in runs]
    if len(arms_here) > 1:
        lines += [f"## One-factor ablation at N = {ablation_n}", "",
                  "Each arm changes one setting of the arm before it (configs/hippocampus/umct_arms/); "
                  "Δ: this arm minus the previous arm, paired by seed.", ""]
        rows = []
        prev = None
        for arm in arms_here:
            row = _row(ARMS[arm][0], runs[(arm, ablation_n)], classes)
            delta = _delta_cell(_paired(runs[(arm, ablation_n)], runs[(prev, ablation_n)])) if prev else "—"
            rows.append([*row[:3], delta, ARMS[arm][1], *row[3:]])
            prev = arm
        header = _header("arm", classes)
        lines += markdown_table([*header[:3], "Δ vs previous arm", "changes", *header[3:]], rows) + [""]
        if ("ensemble_supervised", ablation_n) in runs and (PAPER, ablation_n) in runs:
            verdicts.append(_verdict(_paired(runs[(PAPER, ablation_n)], runs[("ensemble_supervised", ablation_n)]),
                                     f"N = {ablation_n}: UMCT beats a 3-network supervised ensemble"))
        if ("cotrain_average", ablation_n) in runs and (PAPER, ablation_n) in runs:
            verdicts.append(_verdict(_paired(runs[(PAPER, ablation_n)], runs[("cotrain_average", ablation_n)]),
                                     f"N = {ablation_n}: uncertainty-weighted fusion beats the plain average"))

    lines += ["## Does the paper's claim hold here?", "", *[f"- {v}" for v in verdicts], ""]
    every = [r for recs in runs.values() for r in recs.values()]
    steps = sorted({r["steps"] for r in every if r["steps"] is not None})
    wall = [r["wall_time_s"] for r in every if r["wall_time_s"] is not None]
    lines += ["## Budget", "",
              f"{len(every)} runs, {', '.join(map(str, steps))} steps each, one torch thread per run on a 2-core CPU "
              f"shared with other jobs: {sum(wall) / 3600:.2f} h of run time in all (median {statistics.median(wall) / 60:.1f} "
              "min per run, validation and the final test included; with several runs per core the wall time "
              "overstates the compute)." if wall else "no timings recorded", ""]
    return "\n".join(lines) + "\n"


def plot(root: Path, path: Path) -> None:
    """Test Dice against N for the single-view baseline and the paper recipe (mean ± sd)."""
    from medssl.eval.plots import dice_vs_labeled

    runs = collect(Path(root))
    series = {ARMS[arm][0]: {n: [r["dice_mean"] for r in runs[(a, n)].values()] for a, n in runs if a == arm}
              for arm in (BASELINE, PAPER)}
    dice_vs_labeled(series, path, log2=True)


def main(argv: list[str] | None = None) -> int:
    from medssl.core.atomic import write_atomic_text

    ap = argparse.ArgumentParser(description="Markdown report of the UMCT recipe set on a real dataset.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--ablation-n", type=int, default=4)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    plot(args.root, png)
    text = build_report(args.root, args.ablation_n, png_name=png.name)
    write_atomic_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
