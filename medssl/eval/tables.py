"""Result tables: markdown tables, summary cells over seeds, CSV files from dict rows.

One way to write each of them, so the MedMNIST report, the segmentation comparison and the
contrastive report print the same cells:

* :func:`ci_cell`: ``mean ± h (n=k)``, ``h`` the half-width of the Student-t interval of the mean
  (:func:`mean_ci`): the cell of a table whose rows are repeats (seeds) of one setting;
* :func:`sd_cell`: ``mean ± s``, ``s`` the sample standard deviation: the spread of the repeats;
* :func:`markdown_table`: header + separator + rows, as lines;
* :func:`csv_text` / :func:`write_csv`: dict rows with named leading columns, the other keys
  sorted after them, lists and dicts as JSON; written atomically.

Say which variance a cell covers (GUIDE item 15): repeats that share one pretraining vary only in
what the seed changes downstream (the labeled subset, the probe's initialisation).
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["ci_cell", "csv_text", "markdown_table", "mean_ci", "sd_cell", "write_csv"]


def _finite(values: Iterable[float | None]) -> list[float]:
    """The numbers of ``values`` without ``None`` and ``nan`` (an undefined metric)."""
    return [float(v) for v in values if v is not None and not math.isnan(float(v))]


def _fmt(value: float, signed: bool, digits: int) -> str:
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def mean_ci(values: Iterable[float | None], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval of the mean over repeats.

    ``half_width = t_{(1 + confidence) / 2, n - 1} * s / sqrt(n)`` with ``s`` the sample standard
    deviation (``ddof=1``). ``None`` and ``nan`` values (e.g. an undefined AUROC) are dropped first.

    Args:
        values: one number per repeat (seed).
        confidence: coverage of the interval.

    Returns:
        ``(mean, half_width)``; ``half_width`` is ``nan`` for fewer than two values, and both are
        ``nan`` for none.
    """
    import numpy as np
    from scipy.stats import t

    vals = np.asarray(_finite(values), dtype=np.float64)
    if len(vals) == 0:
        return math.nan, math.nan
    if len(vals) == 1:
        return float(vals[0]), math.nan
    half = t.ppf(0.5 + confidence / 2, len(vals) - 1) * vals.std(ddof=1) / math.sqrt(len(vals))
    return float(vals.mean()), float(half)


def ci_cell(
    values: Iterable[float | None], signed: bool = False, empty: str = "n/a", confidence: float = 0.95, digits: int = 3
) -> str:
    """``mean ± half-width (n=k)`` of the t interval (:func:`mean_ci`); ``mean (n=1)`` for one value.

    Args:
        values: one number per repeat; ``None`` / ``nan`` are left out (and not counted in ``n``).
        signed: show the mean's sign (``+0.050``), for differences.
        empty: the cell when no value is left.
        confidence: coverage of the interval.
        digits: decimals.
    """
    vals = _finite(values)
    if not vals:
        return empty
    mean, half = mean_ci(vals, confidence)
    m = _fmt(mean, signed, digits)
    return f"{m} (n=1)" if len(vals) == 1 else f"{m} ± {half:.{digits}f} (n={len(vals)})"


def sd_cell(values: Iterable[float | None], signed: bool = False, empty: str = "n/a", digits: int = 3) -> str:
    """``mean ± sample standard deviation`` over repeats; the value alone for one.

    Args:
        values: one number per repeat; ``None`` / ``nan`` are left out.
        signed: show the mean's sign, for differences.
        empty: the cell when no value is left.
        digits: decimals.
    """
    vals = _finite(values)
    if not vals:
        return empty
    m = _fmt(statistics.mean(vals), signed, digits)
    return m if len(vals) == 1 else f"{m} ± {statistics.stdev(vals):.{digits}f}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """The lines of a markdown table: ``| h1 | h2 |``, ``|---|---|``, then one line per row."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


def csv_text(rows: Sequence[dict], first: Sequence[str] = (), skip: Sequence[str] = ()) -> str:
    """CSV of dict rows: the ``first`` columns in their order, then every other key sorted.

    Args:
        rows: one dict per line; a missing key is an empty cell.
        first: leading columns (always present, even when no row has them).
        skip: keys never written (e.g. a ROC curve's points).

    Returns:
        The text, ``\\n`` line ends; list and dict values as JSON.
    """
    first = list(first)
    extra = sorted({k for r in rows for k in r if k not in first and k not in skip})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=first + extra, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v
                         for k, v in row.items() if k not in skip})
    return buf.getvalue()


def write_csv(path: str | Path, rows: Sequence[dict], first: Sequence[str] = (), skip: Sequence[str] = ()) -> Path:
    """Write :func:`csv_text` of ``rows`` to ``path`` atomically; returns the path."""
    from medssl.core.atomic import write_atomic_text

    return write_atomic_text(path, csv_text(rows, first, skip))
