"""Report of a contrastive-pretraining recipe set: Dice by initialisation and number of labels.

Reads the fine-tuning runs ``<root>/ft-<init>-n<N>-s<seed>`` (and the pretraining stages'
``metrics.json``) and writes a markdown report: a summary table (rows: initialisation; columns:
labeled volumes), per-class Dice and HD95 per N, paired comparisons that mirror the paper's
claims, one detailed :func:`~medssl.eval.compare.compare_runs` table per N (paired differences to
random init, seed by seed, where the seed also chose which volumes are labeled) and a PNG plot.

Two presets name the recipe sets:

* ``phantoms``: ``make contrastive-recipes`` (configs/contrastive/, the generated phantoms);
* ``hippocampus``: ``make hippo-contrastive`` (configs/hippocampus/contrastive_*.yaml, MSD
  Hippocampus; the paper recipe G^D + L^R and its one-factor arms).

Every strategy is pretrained once; the seeds of an arm share that pretraining, so the spread over
seeds covers fine-tuning (labeled volumes, initialisation of the layers not transferred, slice or
patch order), not pretraining (GUIDE item 15). The report says so.

    python -m medssl.eval.contrastive_report runs/hippo_contrastive --preset hippocampus --labeled 1 2 5 \\
        --out reports/hippocampus_contrastive.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from medssl.errors import DataError
from medssl.eval.claims import verdict
from medssl.eval.tables import markdown_table, sd_cell


@dataclass(frozen=True)
class Preset:
    """What a recipe set calls its runs and how the report describes them."""

    title: str
    #: init label (``ft-<label>-n<N>-s<seed>``) -> what it means, in the row order of the report
    inits: dict[str, str]
    #: pretraining run folders, in the order they ran
    stages: tuple[str, ...]
    pool: str
    test: str
    #: (a, b, claim): paired comparisons of init a against init b, with the paper's claim
    claims: tuple[tuple[str, str, str], ...] = field(default_factory=tuple)


PRESETS = {
    "phantoms": Preset(
        title="Contrastive pretraining (Chaitanya et al. 2020) on the phantoms",
        inits={
            "random": "random init",
            "global2d": "global G^D (2D)",
            "local2d": "global G^D + local L^D (2D)",
            "global3d": "global G^D (3D)",
            "local3d": "global G^D + local L^D (3D)",
        },
        stages=("global_2d", "local_2d", "global_3d", "local_3d"),
        pool="Pretraining on the 40 training volumes without labels",
        test="Test Dice (mean over liver, kidney, spleen; 8 test volumes) of the checkpoint selected on the 4 "
             "validation volumes",
    ),
    "hippocampus": Preset(
        title="Global / local contrastive pretraining (Chaitanya et al., NeurIPS 2020) on MSD Hippocampus",
        inits={
            "random": "random init",
            "global_gr": "G^R",
            "global_gd": "G^D",
            "local_lr": "G^D + L^R (paper recipe)",
            "local_ld": "G^D + L^D",
        },
        stages=("global_gd", "global_gr", "local_lr", "local_ld"),
        pool="Pretraining, once per strategy, on the 145 training volumes (imagesTr/) without labels, 2D slices",
        test="Test Dice (mean over Anterior, Posterior; 42 test volumes, scored per volume in 3D from the stacked "
             "2D slice predictions) of the checkpoint selected on the 21 validation volumes",
        claims=(
            ("local_lr", "random", "pretraining (G^D + L^R) beats random init with few labels"),
            ("global_gd", "global_gr", "domain-specific positives (G^D) beat SimCLR-like G^R"),
            ("local_lr", "global_gd", "the local loss adds to the global one (G^D + L^R > G^D)"),
            ("local_lr", "local_ld", "L^R beats L^D (the local loss the official pipeline recommends)"),
        ),
    ),
}
#: the phantom preset's labels (kept for callers of earlier versions)
INITS = PRESETS["phantoms"].inits


def _runs(root: Path, init: str, n: int) -> list[Path]:
    return sorted(p for p in root.glob(f"ft-{init}-n{n}-s*") if (p / "metrics.json").is_file())


def _seed(run: Path) -> int:
    return int(run.name.rsplit("-s", 1)[1])


def _test(run: Path) -> dict:
    """Test block of the checkpoint selected on validation (:func:`medssl.eval.compare.final_metrics`)."""
    from medssl.eval.compare import final_metrics

    return final_metrics(run)


def _dice(run: Path) -> float:
    return float(_test(run)["dice_mean"])


def collect(root: Path, labeled: list[int], preset: str = "phantoms") -> dict[str, dict[int, list[float]]]:
    """Dice means per init and N (one value per seed), for the inits that have runs."""
    table = {}
    for init in PRESETS[preset].inits:
        row = {n: [_dice(r) for r in _runs(root, init, n)] for n in labeled}
        if any(row.values()):
            table[init] = row
    if not table:
        raise DataError("no finished fine-tuning runs (ft-<init>-n<N>-s<seed>/metrics.json)", root)
    return table


def plot(table: dict, labeled: list[int], path: Path, preset: str = "phantoms") -> None:
    """Test Dice against N per initialisation (:func:`medssl.eval.plots.dice_vs_labeled`)."""
    from medssl.eval.plots import dice_vs_labeled

    names = PRESETS[preset].inits
    dice_vs_labeled({names[init]: {n: row[n] for n in labeled} for init, row in table.items()}, path)


def _stage_lines(root: Path, p: Preset) -> tuple[list[str], float]:
    stages, wall = [], 0.0
    for st in p.stages:
        m = root / st / "metrics.json"
        if m.is_file():
            d = json.loads(m.read_text())
            wall += float(d.get("wall_time_s") or 0.0)
            loss = d.get("final_loss")
            loss_txt = "n/a" if loss is None else f"{loss:.4f}"
            stages.append(f"`{st}`: {d['step']} steps, final loss {loss_txt}, {d.get('wall_time_s', 0):.0f} s")
    return stages, wall


def _per_class(root: Path, p: Preset, table: dict, n: int) -> list[str]:
    """Rows: inits; columns: Dice and HD95 of every class, mean ± sd over seeds."""
    runs = {init: [_test(r) for r in _runs(root, init, n)] for init in table}
    first = next((ms[0] for ms in runs.values() if ms), None)
    if first is None:
        return []
    classes = list(first["dice"])
    header = ["initialisation", "seeds", *[f"Dice {c}" for c in classes], *[f"HD95 {c} (mm)" for c in classes],
              "HD95 mean (mm)"]
    rows = []
    for init, ms in runs.items():
        if not ms:
            continue
        rows.append([p.inits[init], str(len(ms)), *[sd_cell([m["dice"].get(c) for m in ms]) for c in classes],
                     *[sd_cell([(m.get("hd95_mm") or {}).get(c) for m in ms]) for c in classes],
                     sd_cell([m.get("hd95_mean_mm") for m in ms])])
    return markdown_table(header, rows)


def _claims(root: Path, p: Preset, labeled: list[int], num_seeds: int) -> list[str]:
    """Paired (same N, same seed: same labeled volumes) Dice differences for the paper's claims, and
    a verdict per claim and N (:func:`medssl.eval.claims.verdict`)."""
    rows, verdicts = [], []
    for a, b, claim in p.claims:
        cells, wins, total = [], 0, 0
        for n in labeled:
            da = {_seed(r): _dice(r) for r in _runs(root, a, n)}
            db = {_seed(r): _dice(r) for r in _runs(root, b, n)}
            diffs = [da[s] - db[s] for s in sorted(da) if s in db]
            wins += sum(d > 0 for d in diffs)
            total += len(diffs)
            cells.append(sd_cell(diffs, signed=True, empty="—"))
            if diffs:
                verdicts.append(verdict(diffs, f"N = {n}: {claim}"))
        if total:
            rows.append([f"{p.inits[a]} − {p.inits[b]}", claim, *cells, f"{wins} of {total}"])
    if not rows:
        return []
    header = ["comparison", "paper's claim", *[f"Δ Dice N = {n}" for n in labeled], "pairs where a > b"]
    return ["## The paper's claims, paired by seed", "",
            "Δ = Dice of the first initialisation minus the second, on the same labeled volumes (same N and seed); "
            f"mean ± sd over seeds. With {num_seeds} seeds sharing one pretraining per strategy, a difference smaller "
            "than its spread is not evidence either way.", "", *markdown_table(header, rows), "",
            "## Does the paper's claim hold here?", "",
            "**reproduced**: better in every paired seed; *reproduced on average*: mean above the seed spread; "
            "otherwise **not reproduced**. The spread covers fine-tuning, not pretraining (one pretraining per "
            "strategy).", "", *[f"- {v}" for v in verdicts], ""]


def _gap(root: Path, p: Preset, table: dict, labeled: list[int], full_n: int) -> list[str]:
    """The paper's "closing the gap" claim: the share of the distance from random init (N labeled)
    to random init trained on all ``full_n`` labeled volumes with the same budget that each
    initialisation covers, (mean_init - mean_random) / (mean_full - mean_random), per N."""
    full_runs = _runs(root, "random", full_n)
    full = [_dice(r) for r in full_runs]
    if not full or "random" not in table:
        return []
    ref = statistics.mean(full)
    rows = []
    for init, row in table.items():
        if init == "random":
            continue
        cells = []
        for n in labeled:
            base = statistics.mean(table["random"][n]) if table["random"].get(n) else None
            if base is None or not row.get(n) or ref <= base:
                cells.append("—")
                continue
            cells.append(f"{(statistics.mean(row[n]) - base) / (ref - base) * 100:+.0f} %")
        rows.append([p.inits[init], *cells])
    seeds = ", ".join(str(_seed(r)) for r in full_runs)
    return ["## The gap to full supervision", "",
            f"Full supervision: random init fine-tuned on all {full_n} labeled volumes of the pool with the same "
            f"budget, test Dice {sd_cell(full)} (seed {seeds}). Share of the gap between random init with N labeled "
            "volumes and full supervision that each pretraining closes (the paper: pretraining closes much of it "
            "with 2 volumes; 100 % = as good as full supervision):", "",
            *markdown_table(["initialisation", *[f"N = {n}" for n in labeled]], rows), ""]


def build_report(root: Path, labeled: list[int], png_name: str | None = None, preset: str = "phantoms",
                 full_n: int | None = None) -> str:
    from medssl.eval.compare import compare_runs

    root = Path(root)
    p = PRESETS[preset]
    table = collect(root, labeled, preset)
    lines = [f"# {p.title}", ""]
    stages, pre_wall = _stage_lines(root, p)
    if stages:
        lines += [f"{p.pool}: " + "; ".join(stages) + ".", ""]
    seeds = sorted({_seed(r) for init in table for n in labeled for r in _runs(root, init, n)})
    ft_runs = [r for init in table for n in labeled for r in _runs(root, init, n)]
    ft_runs += _runs(root, "random", full_n) if full_n else []
    ft_wall = sum(float(json.loads((r / "metrics.json").read_text()).get("wall_time_s") or 0.0) for r in ft_runs)
    lines += [f"{p.test}, mean ± sd over seeds; each seed fine-tunes on its own random choice of labeled volumes "
              "(data.labeled_seed = seed) with the same budget. **Every strategy was pretrained once: the seeds of "
              "an initialisation share one pretraining**, so the spread covers fine-tuning (which volumes are "
              "labeled, the initialisation of the layers not transferred, slice order), not pretraining.", ""]
    lines.append("| initialisation | " + " | ".join(f"N = {n}" for n in labeled) + " |")
    lines.append("|---|" + "---|" * len(labeled))
    for init, row in table.items():
        lines.append(f"| {p.inits[init]} | " + " | ".join(sd_cell(row[n], empty="—") for n in labeled) + " |")
    lines.append("")
    if png_name:
        lines += [f"![Dice vs labeled volumes]({png_name})", ""]
    if p.claims:
        lines += _claims(root, p, labeled, len(seeds))
        if full_n:
            lines += _gap(root, p, table, labeled, full_n)
        lines += [f"Compute used: {pre_wall / 60:.0f} min of pretraining and {ft_wall / 60:.0f} min of fine-tuning "
                  f"(sums of the runs' wall times; seeds {', '.join(map(str, seeds))}).", ""]
    for n in labeled:
        runs = [r for init in table for r in _runs(root, init, n)]
        if not runs:
            continue
        lines += [f"## N = {n} labeled volume{'s' if n > 1 else ''}", ""]
        if p.claims:  # the per-class table (the phantom preset keeps its earlier layout)
            lines += [*_per_class(root, p, table, n), ""]
        detail, _ = compare_runs(runs, baseline=f"ft-random-n{n}" if table.get("random", {}).get(n) else None)
        lines += [detail]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from medssl.core.atomic import write_atomic_text

    ap = argparse.ArgumentParser(description="Markdown report of a contrastive recipe set.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--labeled", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="phantoms",
                    help="which recipe set the runs are (names of the inits and stages)")
    ap.add_argument("--full", type=int, default=None, metavar="N",
                    help="the runs ft-random-n<N>-s* trained on all N labeled volumes: the full-supervision reference")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    plot(collect(args.root, args.labeled, args.preset), args.labeled, png, args.preset)
    text = build_report(args.root, args.labeled, png_name=png.name, preset=args.preset, full_n=args.full)
    write_atomic_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
