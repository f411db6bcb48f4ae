"""The review queue: which cases, in which order, and how far the review has come.

Pure functions over :class:`medssl.inference.review_manifest.ReviewCase` objects (no Qt, no
files), so ordering and filtering are checked by hand-written expectations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

from medssl.inference.review_manifest import STATUSES, ReviewCase


class Order(str, Enum):
    """Queue orders. ``confidence`` (the default) puts the least confident case first."""

    confidence = "confidence"
    uncertainty = "uncertainty"  # highest mean uncertainty first
    name = "name"
    status = "status"  # pending first, then edited, accepted, rejected; least confident first within


#: the order of statuses in :attr:`Order.status`: what still needs a look comes first
STATUS_RANK = {"pending": 0, "edited": 1, "accepted": 2, "rejected": 3}


def _num(value: float | None, missing: float) -> float:
    return missing if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def sort_key(order: Order | str):
    """The sort key of ``order`` (ties broken by name, so the queue is deterministic)."""
    order = Order(order)
    if order is Order.confidence:
        return lambda c: (_num(c.confidence, math.inf), c.name)
    if order is Order.uncertainty:
        return lambda c: (-_num(c.mean_uncertainty, -math.inf), c.name)
    if order is Order.name:
        return lambda c: (c.name,)
    return lambda c: (STATUS_RANK[c.status], _num(c.confidence, math.inf), c.name)


def ordered(cases: Sequence[ReviewCase], order: Order | str = Order.confidence,
            status: str | None = None) -> list[ReviewCase]:
    """``cases`` sorted by ``order``, keeping only those of ``status`` (None: all).

    Raises:
        ValueError: an unknown order or status.
    """
    if status is not None and status not in STATUSES:
        raise ValueError(f"status filter {status!r} is not one of {STATUSES}")
    return [c for c in sorted(cases, key=sort_key(order)) if status is None or c.status == status]


def step(cases: Sequence[ReviewCase], current: str | None, delta: int, order: Order | str = Order.confidence,
         status: str | None = None) -> str | None:
    """The case ``delta`` places (+1 next, -1 previous) after ``current`` in the filtered queue.

    ``current`` need not pass the filter (a case just accepted leaves a "pending" queue): its
    place in the unfiltered order decides where "next" is. Returns None past either end; with no
    ``current``, the first (or last, for ``delta < 0``) case of the queue.
    """
    full = ordered(cases, order)
    keep = [c.name for c in full if status is None or c.status == status]
    if not keep:
        return None
    if current is None:
        return keep[0] if delta >= 0 else keep[-1]
    names = [c.name for c in full]
    if current not in names:
        raise ValueError(f"no case {current!r} in the queue")
    pos = {n: i for i, n in enumerate(names)}
    here = pos[current]
    after = [n for n in keep if pos[n] > here]
    before = [n for n in keep if pos[n] < here]
    if delta > 0:
        return after[delta - 1] if len(after) >= delta else None
    if delta < 0:
        return before[delta] if len(before) >= -delta else None
    return current


def progress(cases: Sequence[ReviewCase]) -> tuple[int, int]:
    """``(k, n)``: k of the n cases have a decision (accepted, rejected or edited)."""
    return sum(c.status != "pending" for c in cases), len(cases)


def progress_text(cases: Sequence[ReviewCase]) -> str:
    k, n = progress(cases)
    return f"{k} of {n} reviewed"


def table_rows(cases: Sequence[ReviewCase]) -> list[list]:
    """The queue table's rows: case, status, confidence, mean uncertainty, foreground mL."""
    def fmt(v, digits):
        return "" if v is None else f"{float(v):.{digits}f}"

    return [[c.name, c.status, fmt(c.confidence, 3), fmt(c.mean_uncertainty, 3), fmt(c.foreground_ml, 1)]
            for c in cases]


TABLE_HEADERS = ["case", "status", "confidence", "mean uncertainty", "foreground mL"]
