from __future__ import annotations

import math

import pytest

from medssl.core.schedules import lr_factor


def test_warmup_then_cosine_by_hand():
    assert lr_factor(0, 110, 10) == pytest.approx(0.1)
    assert lr_factor(9, 110, 10) == pytest.approx(1.0)
    assert lr_factor(10, 110, 10) == pytest.approx(1.0)
    assert lr_factor(60, 110, 10) == pytest.approx(0.5)  # half-way through the cosine
    assert lr_factor(110, 110, 10) == pytest.approx(0.0, abs=1e-12)
    assert lr_factor(35, 110, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.25)))


def test_poly_and_constant():
    assert lr_factor(50, 100, 0, "poly") == pytest.approx(0.5**0.9)
    assert lr_factor(50, 100, 0, "constant") == 1.0
    with pytest.raises(ValueError):
        lr_factor(0, 10, 0, "step")
