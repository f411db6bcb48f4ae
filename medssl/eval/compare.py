"""Comparison tables over runs: mean and spread of each recipe's metrics across seeds.

Runs are grouped by the recipe ``name`` in their ``config.yaml``; each group's test metrics (the
``test`` block of ``metrics.json``: the checkpoint selected on the val split, evaluated once on
the test split) are summarised as mean ± sample standard deviation over its runs.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from medssl.errors import DataError
from medssl.eval.tables import markdown_table, sd_cell


def final_metrics(run: Path) -> dict:
    """A finished segmentation run's test block (``metrics.json["test"]``), plus the validation
    Dice its checkpoint was selected with (``val_dice_mean``).

    Raises:
        DataError: not a finished run, a run without a test split, or a run written before
            validation and test were separated (its figures were selected on the test split).
    """
    path = Path(run) / "metrics.json"
    if not path.is_file():
        raise DataError("not a finished medssl run (needs metrics.json)", run)
    metrics = json.loads(path.read_text())
    if "test" not in metrics:
        raise DataError("metrics.json predates the val/test separation (its checkpoint was selected on the test "
                        "split): rerun it", run)
    if metrics["test"] is None:
        raise DataError("the run had no test split (imagesTs/ + labelsTs/): nothing to compare", run)
    return {**metrics["test"], "val_dice_mean": (metrics.get("best") or {}).get("val_dice_mean")}


def _load_run(run: Path) -> tuple[str, dict, int]:
    import yaml

    cfg_path = run / "config.yaml"
    if not cfg_path.is_file():
        raise DataError("not a finished medssl run (needs config.yaml and metrics.json)", run)
    cfg = yaml.safe_load(cfg_path.read_text())
    return cfg.get("name", run.name), final_metrics(run), cfg.get("trainer", {}).get("seed", 0)


def compare_runs(runs: list[Path], baseline: str | None = None) -> tuple[str, dict]:
    """Markdown table (and the raw numbers) comparing recipes over seeds.

    Args:
        runs: run folders.
        baseline: recipe name to report differences against (default: the first group).
    """
    groups: dict[str, list[tuple[dict, int]]] = {}
    for run in runs:
        name, metrics, seed = _load_run(Path(run))
        groups.setdefault(name, []).append((metrics, seed))
    if not groups:
        raise DataError("no runs given to compare")
    classes = list(next(iter(groups.values()))[0][0]["dice"])
    header = ["recipe", "seeds", "Dice mean", *[f"Dice {c}" for c in classes], "HD95 mean (mm)",
              "Δ Dice vs baseline", "paired Δ per seed", "val Dice (selection)"]
    baseline = baseline or next(iter(groups))
    if baseline in groups:  # baseline row first
        groups = {baseline: groups[baseline], **{k: v for k, v in groups.items() if k != baseline}}
    summary = {}
    for name, items in groups.items():
        summary[name] = {
            "seeds": sorted(s for _, s in items),
            "dice_mean": [m["dice_mean"] for m, _ in items],
            **{f"dice_{c}": [m["dice"].get(c) for m, _ in items] for c in classes},
            "hd95_mean": [m.get("hd95_mean_mm") for m, _ in items],
            "val_dice_mean": [m.get("val_dice_mean") for m, _ in items],
        }
    if baseline not in summary:
        raise DataError(f"baseline recipe {baseline!r} is not among the runs ({', '.join(summary)})")
    base_mean = statistics.mean(summary[baseline]["dice_mean"])
    base_by_seed = dict(zip(summary[baseline]["seeds"], [m["dice_mean"] for m, _ in sorted(groups[baseline], key=lambda t: t[1])]))
    rows = []
    for name, s in summary.items():
        delta = statistics.mean(s["dice_mean"]) - base_mean
        paired = [m["dice_mean"] - base_by_seed[seed] for m, seed in sorted(groups[name], key=lambda t: t[1]) if seed in base_by_seed]
        paired_txt = "—" if name == baseline or not paired else " ".join(f"{d:+.3f}" for d in paired)
        row = [name, ",".join(map(str, s["seeds"])), sd_cell(s["dice_mean"]), *[sd_cell(s[f"dice_{c}"]) for c in classes],
               sd_cell(s["hd95_mean"]), "—" if name == baseline else f"{delta:+.3f}", paired_txt,
               sd_cell(s["val_dice_mean"])]
        rows.append(row)
    lines = markdown_table(header, rows)
    note = ("\nMean ± sample standard deviation over seeds (the seed sets initialisation and patch order; the "
            "labeled cases are the same in every run unless the recipe draws them per seed). Dice and HD95 on the "
            "labeled test split, read once per run with the checkpoint selected on the val split (last column: the "
            "validation Dice it was selected with). Paired Δ: difference to the baseline run with the same seed.\n")
    return "\n".join(lines) + "\n" + note, summary
