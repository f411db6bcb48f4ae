"""Cross-dataset transfer of a MedMNIST run: the step, its matrix, its CSV and its report section.

After everything else, for every entry that pretrains per dataset, its backbone pretrained on
``A`` is linear-probed on every other dataset ``B`` of the same spatial dims; the report shows an
AUROC matrix (rows: pretrained on, columns: evaluated on; the diagonal is the in-domain linear
probe). Cells are mean ± 95 % t interval over the seeds, which share one pretraining: the interval
covers the labeled subset and the probe's seed, not the pretraining's.
"""

from __future__ import annotations

import io
import re
import time
from pathlib import Path

import numpy as np

from medssl.core.atomic import write_atomic_bytes
from medssl.eval.tables import markdown_table, write_csv
from medssl.medmnist.metrics import classification_metrics

TRANSFER_COLUMNS = ["pretrain", "dataset", "method", "pretrain_seed", "protocol", "fraction", "seed", "acc",
                    "balanced_acc", "auroc"]


def transfer_step(run) -> None:
    """Every missing transfer result of ``run`` (a :class:`~medssl.medmnist.run.MedMNISTRun`)."""
    from tqdm.auto import tqdm

    todo = [key for key in run.book.plan["transfer"] if not run.done("transfer", key)]
    for a, b, name, ps, fr, seed in tqdm(todo, desc="transfer", leave=False, disable=not run.bars):
        e = next(p for p in run.cfg.pretrain if p.name == name)
        bb = run.backbone(e, b, ps, pretrain_flag=a)
        t0 = time.perf_counter()
        probs, extra = run.probe(bb, b, "linear", fr, seed)
        test = run.data(b, "test")
        run.add("transfer", {"pretrain": a, "dataset": b, "method": name, "pretrain_seed": ps, "protocol": "linear",
                             "fraction": fr, "seed": seed,
                             **classification_metrics(test.labels.numpy(), probs, test.task),
                             **extra, "time_s": round(time.perf_counter() - t0, 3)})


def write_transfer_csv(rows: list[dict], path: Path) -> Path:
    """``transfer.csv``: one line per transfer result."""
    return write_csv(path, rows, TRANSFER_COLUMNS)


def _cell(rows: list[dict], metric: str) -> tuple[str, float]:
    from medssl.medmnist.report import summarize

    summary = summarize(rows, metric)
    return summary["text"], summary["mean"]


def transfer_matrix(results: dict, method: str, fraction: float, metric: str = "auroc") -> tuple[list[str], list[list]]:
    """``(datasets, cells)`` of the transfer matrix of one entry: ``cells[i][j]`` = ``(text, mean)`` of
    ``metric`` pretrained on ``datasets[i]``, evaluated on ``datasets[j]`` (the diagonal from the in-domain
    linear records); ``None`` where there is no result."""
    rows = [r for r in results.get("transfer", []) if r["method"] == method and r["fraction"] == fraction]
    flags = list(dict.fromkeys([r["pretrain"] for r in rows] + [r["dataset"] for r in rows]))
    cells = []
    for a in flags:
        line = []
        for b in flags:
            if a == b:
                grp = [r for r in results.get("records", []) if r["dataset"] == a and r["method"] == method
                       and r["protocol"] == "linear" and r["fraction"] == fraction]
            else:
                grp = [r for r in rows if r["pretrain"] == a and r["dataset"] == b]
            line.append(_cell(grp, metric) if grp else None)
        cells.append(line)
    return flags, cells


def _figure(flags: list[str], cells: list[list], title: str, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.6 * len(flags) + 2, 1.3 * len(flags) + 1.5), layout="constrained")
    ax = fig.subplots()
    grid = np.array([[c[1] if c else np.nan for c in line] for line in cells], dtype=float)
    im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
    for i in range(len(flags)):
        for j in range(len(flags)):
            if not np.isnan(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=9,
                        color="k" if grid[i, j] > 0.8 else "w")  # readable on viridis
    ax.set_xticks(range(len(flags)), flags, rotation=30, ha="right")
    ax.set_yticks(range(len(flags)), flags)
    ax.set(xlabel="evaluated on", ylabel="pretrained on", title=f"transfer AUROC: {title}")
    fig.colorbar(im, ax=ax, shrink=0.8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return write_atomic_bytes(path, buf.getvalue())


def transfer_section(results: dict, out: Path) -> list[str]:
    """The report's transfer section (markdown lines) and its PNG matrices in ``out``."""
    rows = results.get("transfer", [])
    if not rows:
        return []
    lines = ["## Cross-dataset transfer (linear probe)", "",
             "Rows: the dataset the backbone was pretrained on; columns: the dataset it is linear-probed on "
             "(test AUROC; cells as in the tables above: mean ± sd over pretraining seeds [P×E], or mean ± 95 % CI "
             "over eval seeds sharing one pretraining (n=E)). The diagonal is the in-domain linear probe.", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        for fraction in sorted({r["fraction"] for r in rows if r["method"] == method}):
            flags, cells = transfer_matrix(results, method, fraction)
            title = f"{method}, {fraction * 100:g}% labels"
            lines += [f"### {title}", ""]
            lines += markdown_table(["pretrained on \\ evaluated on", *flags],
                                    [[a, *(c[0] if c else "" for c in line)] for a, line in zip(flags, cells)])
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"transfer_{method}_{fraction * 100:g}pct")
            png = _figure(flags, cells, title, out / f"{slug}.png")
            lines += ["", f"![transfer {title}]({png.name})", ""]
    return lines
