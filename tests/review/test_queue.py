"""Queue order, filtering, stepping and progress (pure; hand-checked expectations)."""

from __future__ import annotations

import pytest

from medssl.inference.review_manifest import ReviewCase

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

from napari_medssl.queue import Order, ordered, progress, progress_text, step, table_rows  # noqa: E402


def _cases():
    def c(name, conf, mu, status="pending"):
        return ReviewCase(name=name, image="i", label="l", confidence=conf, mean_uncertainty=mu, status=status,
                          foreground_ml=12.345)

    return [c("b", 0.9, 0.05, "accepted"), c("d", 0.2, 0.40), c("a", 0.5, 0.30, "rejected"), c("c", 0.5, 0.10),
            c("e", 0.7, None, "edited")]


def names(cases):
    return [c.name for c in cases]


def test_orders():
    cases = _cases()
    assert names(ordered(cases)) == ["d", "a", "c", "e", "b"]  # least confident first; a/c tie broken by name
    assert names(ordered(cases, Order.uncertainty)) == ["d", "a", "c", "b", "e"]  # most uncertain first, None last
    assert names(ordered(cases, "name")) == ["a", "b", "c", "d", "e"]
    assert names(ordered(cases, "status")) == ["d", "c", "e", "b", "a"]  # pending, edited, accepted, rejected
    with pytest.raises(ValueError):
        ordered(cases, "size")


def test_filter_and_step():
    cases = _cases()
    assert names(ordered(cases, status="pending")) == ["d", "c"]
    with pytest.raises(ValueError, match="status filter 'done'"):
        ordered(cases, status="done")
    assert step(cases, None, +1) == "d" and step(cases, None, -1) == "b"
    assert step(cases, "d", +1) == "a" and step(cases, "d", +2) == "c" and step(cases, "b", +1) is None
    assert step(cases, "a", -1) == "d" and step(cases, "d", -1) is None
    # a case that left the pending queue (just accepted) still knows where "next" is
    assert step(cases, "a", +1, status="pending") == "c"
    assert step(cases, "e", -1, status="pending") == "c"
    assert step(cases, "c", +1, status="pending") is None
    assert step(cases, None, +1, status="edited") == "e"
    with pytest.raises(ValueError, match="no case 'zz'"):
        step(cases, "zz", +1)


def test_progress_and_rows():
    cases = _cases()
    assert progress(cases) == (3, 5) and progress_text(cases) == "3 of 5 reviewed"
    assert table_rows(cases[:1]) == [["b", "accepted", "0.900", "0.050", "12.3"]]
    assert table_rows(cases[4:])[0][3] == ""  # no mean uncertainty
