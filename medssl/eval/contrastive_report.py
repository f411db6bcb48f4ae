"""Report of the contrastive-pretraining recipe set: Dice by initialisation and number of labels.

Reads the fine-tuning runs ``<root>/ft-<init>-n<N>-s<seed>`` written by ``make
contrastive-recipes`` (and the pretraining stages' ``metrics.json``), and writes a markdown
report with a summary table (rows: initialisation; columns: labeled volumes), one detailed
:func:`~medssl.eval.compare.compare_runs` table per N (paired differences to random init, seed by
seed, where the seed also chose which volumes are labeled) and a PNG plot beside it.

    python -m medssl.eval.contrastive_report runs/contrastive --labeled 1 2 4 --out reports/contrastive_phantoms.md
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from medssl.errors import DataError
from medssl.eval.tables import sd_cell

#: recipe label -> what it means (rows of the summary, in this order)
INITS = {
    "random": "random init",
    "global2d": "global G^D (2D)",
    "local2d": "global G^D + local L^D (2D)",
    "global3d": "global G^D (3D)",
    "local3d": "global G^D + local L^D (3D)",
}


def _runs(root: Path, init: str, n: int) -> list[Path]:
    return sorted(p for p in root.glob(f"ft-{init}-n{n}-s*") if (p / "metrics.json").is_file())


def _dice(run: Path) -> float:
    """Test Dice of the checkpoint selected on validation (:func:`medssl.eval.compare.final_metrics`)."""
    from medssl.eval.compare import final_metrics

    return float(final_metrics(run)["dice_mean"])


def collect(root: Path, labeled: list[int]) -> dict[str, dict[int, list[float]]]:
    """Dice means per init and N (one value per seed), for the inits that have runs."""
    table = {}
    for init in INITS:
        row = {n: [_dice(r) for r in _runs(root, init, n)] for n in labeled}
        if any(row.values()):
            table[init] = row
    if not table:
        raise DataError("no finished fine-tuning runs (ft-<init>-n<N>-s<seed>/metrics.json)", root)
    return table


def plot(table: dict, labeled: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for init, row in table.items():
        ns = [n for n in labeled if row[n]]
        means = [statistics.mean(row[n]) for n in ns]
        sds = [statistics.stdev(row[n]) if len(row[n]) > 1 else 0.0 for n in ns]
        ax.errorbar(ns, means, yerr=sds, marker="o", capsize=3, label=INITS[init])
    ax.set_xlabel("labeled training volumes")
    ax.set_ylabel("test Dice (mean over organs)")
    ax.set_xticks(labeled)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def build_report(root: Path, labeled: list[int], png_name: str | None = None) -> str:
    from medssl.eval.compare import compare_runs

    root = Path(root)
    table = collect(root, labeled)
    lines = ["# Contrastive pretraining (Chaitanya et al. 2020) on the phantoms", ""]
    stages = []
    for st in ("global_2d", "local_2d", "global_3d", "local_3d"):
        m = root / st / "metrics.json"
        if m.is_file():
            d = json.loads(m.read_text())
            stages.append(f"`{st}`: {d['step']} steps, final loss {d['final_loss']:.3f}, {d['wall_time_s']:.0f} s")
    if stages:
        lines += ["Pretraining on the 40 training volumes without labels: " + "; ".join(stages) + ".", ""]
    lines += ["Test Dice (mean over liver, kidney, spleen; 8 test volumes) of the checkpoint selected on the 4 "
              "validation volumes, mean ± sd over seeds; each seed fine-tunes on its own random choice of labeled "
              "volumes with the same budget (the spread covers initialisation, patch order and which volumes are "
              "labeled).", ""]
    lines.append("| initialisation | " + " | ".join(f"N = {n}" for n in labeled) + " |")
    lines.append("|---|" + "---|" * len(labeled))
    for init, row in table.items():
        lines.append(f"| {INITS[init]} | " + " | ".join(sd_cell(row[n], empty="—") for n in labeled) + " |")
    lines.append("")
    if png_name:
        lines += [f"![Dice vs labeled volumes]({png_name})", ""]
    for n in labeled:
        runs = [r for init in table for r in _runs(root, init, n)]
        if not runs:
            continue
        detail, _ = compare_runs(runs, baseline=f"ft-random-n{n}" if table.get("random", {}).get(n) else None)
        lines += [f"## N = {n} labeled volume{'s' if n > 1 else ''}", "", detail]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from medssl.core.atomic import write_atomic_text

    ap = argparse.ArgumentParser(description="Markdown report of the contrastive recipe set.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--labeled", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    png = args.out.with_suffix(".png")
    plot(collect(args.root, args.labeled), args.labeled, png)
    text = build_report(args.root, args.labeled, png_name=png.name)
    write_atomic_text(args.out, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
