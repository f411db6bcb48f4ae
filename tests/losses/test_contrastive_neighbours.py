"""The official local-loss settings: neighbouring negatives, the official region grid, the per-region
projection. References are written as loops in the form of the official code (models.py,
decoder_pretrain_net, local_loss_exp_no=0 / 1), not with the masks the implementation uses."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.losses.contrastive import (
    LocalContrastiveLoss,
    local_region_starts,
    neighbour_contrastive_loss,
    neighbour_region_starts,
)


def _region(f: torch.Tensor, start, r: int) -> torch.Tensor:
    x, y = (int(v) for v in start)
    return f[:, x : x + r, y : y + r].reshape(-1)


def _cos(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    return float(torch.dot(a / a.norm(), b / b.norm())) / t


def _official_lr(f1, f2, w, t, starts, negs, r) -> float:
    """L^R as the official loop: for every image pair (f_a1_i, f_a2_i) and region k, the numerator is
    region k of both copies, the denominator adds region k's 5 negatives of *both* copies; both
    directions; ``local_loss / no_of_local_regions / bs`` with ``bs = 2 * batch``."""
    total = 0.0
    n, k_regions = f1.shape[0], starts.shape[0]
    proj = (lambda v: w @ v) if w is not None else (lambda v: v)
    for i in range(n):
        for k in range(k_regions):
            a1, a2 = proj(_region(f1[i], starts[k], r)), proj(_region(f2[i], starts[k], r))
            num = _cos(a1, a2, t)
            den1 = den2 = 0.0
            for nb in negs[k]:
                d1, d2 = proj(_region(f1[i], nb, r)), proj(_region(f2[i], nb, r))
                den1 += math.exp(_cos(a1, d1, t)) + math.exp(_cos(a1, d2, t))
                den2 += math.exp(_cos(a2, d2, t)) + math.exp(_cos(a2, d1, t))
            total += -math.log(math.exp(num) / (math.exp(num) + den1))
            total += -math.log(math.exp(num) / (math.exp(num) + den2))
    return total / k_regions / (2 * n)


def test_official_grid_and_neighbours_hand_written():
    """A 24 x 24 map, 3x3 regions, official grid: m = 24 - 4 = 20, q = 5, h = 10, t = 15."""
    starts = local_region_starts((24, 24), 13, 3, grid="official")
    want = [(0, 0), (0, 10), (0, 20), (10, 0), (10, 10), (10, 20), (20, 0), (20, 10), (20, 20),
            (5, 5), (5, 15), (15, 5), (15, 15)]
    assert [tuple(s) for s in starts.tolist()] == want
    nb = neighbour_region_starts((24, 24), 13, 3, grid="official")
    assert nb.shape == (13, 5, 2)
    # models.py, local_reg_size=1: neg_sample_indexes[0] = [[0,h],[q,q],[q,h],[h,0],[h,q]]
    assert [tuple(p) for p in nb[0].tolist()] == [(0, 10), (5, 5), (5, 10), (10, 0), (10, 5)]
    # neg_sample_indexes[4] (the centre) = [[q,q],[q,t],[t,q],[t,t],[h,0]]
    assert [tuple(p) for p in nb[4].tolist()] == [(5, 5), (5, 15), (15, 5), (15, 15), (10, 0)]
    # neg_sample_indexes[12] = [[h,h],[h,m],[m,h],[m,m],[t,q]]
    assert [tuple(p) for p in nb[12].tolist()] == [(10, 10), (10, 20), (20, 10), (20, 20), (15, 5)]
    # a region is never its own negative
    assert not any(tuple(p) == tuple(starts[k].tolist()) for k in range(13) for p in nb[k].tolist())


def test_grids_and_tables_differ_as_in_the_official_code():
    # "fit" (medssl): last start L - 3 = 21; official: L - 4 = 20; single pixels: L - 1 for both
    assert local_region_starts((24, 24), 9, 3, grid="fit").max() == 21
    assert local_region_starts((24, 24), 9, 3, grid="official").max() == 20
    assert local_region_starts((24, 24), 9, 1, grid="official").max() == 23
    # the 1x1 table (local_reg_size=0) differs from the 3x3 one for region 0: [[0,h],[h,0],[h,h],[q,q],[q,t]]
    nb1 = neighbour_region_starts((24, 24), 13, 1, grid="official")  # m = 23: q 5, h 11, t 17
    assert [tuple(p) for p in nb1[0].tolist()] == [(0, 11), (11, 0), (11, 11), (5, 5), (5, 17)]
    # 9 regions: one table, neg_sample_indexes[0] = [[0,h],[h,0],[h,h],[0,m],[m,0]]
    nb9 = neighbour_region_starts((24, 24), 9, 3, grid="official")
    assert [tuple(p) for p in nb9[0].tolist()] == [(0, 10), (10, 0), (10, 10), (0, 20), (20, 0)]
    with pytest.raises(ValueError, match="2D"):
        neighbour_region_starts((8, 8, 8), 13, 3)


@pytest.mark.parametrize("project", [False, True])
def test_lr_neighbours_matches_the_official_loop(project):
    torch.manual_seed(0)
    n, c, side, t, r = 3, 4, 16, 0.1, 3
    f = torch.randn(2, n, c, side, side)
    w = torch.randn(8, c * r * r) if project else None
    loss = LocalContrastiveLoss(t, "LR", 13, r, negatives="neighbours", grid="official")
    got = loss(f, projection=(lambda v: v @ w.T) if project else None)
    starts = local_region_starts((side, side), 13, r, grid="official")
    negs = neighbour_region_starts((side, side), 13, r, grid="official")
    want = _official_lr(f[0], f[1], w, t, starts, negs, r)
    assert got.item() == pytest.approx(want, rel=1e-5)


def test_ld_neighbours_reference():
    """L^D: positives are region k of the other copy and of every same-partition image; each pair's
    negatives are region k's neighbours in the anchor's and in the positive's image."""
    torch.manual_seed(1)
    v, n, c, side, t, r = 2, 4, 3, 12, 0.5, 1
    f = torch.randn(v, n, c, side, side)
    part = torch.tensor([0, 1, 0, 1])
    got = LocalContrastiveLoss(t, "LD", 9, r, negatives="neighbours", grid="official")(f, part)
    starts = local_region_starts((side, side), 9, r, grid="official")
    negs = neighbour_region_starts((side, side), 9, r, grid="official")
    terms = []
    imgs = [(a, i) for a in range(v) for i in range(n)]
    for (va, ia) in imgs:
        for k in range(9):
            a = _region(f[va, ia], starts[k], r)
            for (vp, ip) in imgs:
                if (vp, ip) == (va, ia) or part[ip] != part[ia]:
                    continue
                p = _region(f[vp, ip], starts[k], r)
                den = sum(math.exp(_cos(a, _region(f[vv, ii], nb, r), t)) for nb in negs[k]
                          for (vv, ii) in ((va, ia), (vp, ip)))
                s = _cos(a, p, t)
                terms.append(-math.log(math.exp(s) / (math.exp(s) + den)))
    assert got.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_neighbour_loss_is_stable_and_differentiable():
    f = torch.randn(2, 2, 4, 16, 16, requires_grad=True)
    loss = LocalContrastiveLoss(0.01, "LR", 13, 3, negatives="neighbours", grid="official")(f)
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_neighbour_loss_checks():
    a, nb = torch.randn(4, 13, 8), torch.randn(4, 13, 5, 8)
    with pytest.raises(ValueError, match="positive mask"):
        neighbour_contrastive_loss(a, nb, torch.zeros(3, 3, dtype=torch.bool), 0.1)
    with pytest.raises(ValueError, match="no positive"):
        neighbour_contrastive_loss(a, nb, torch.zeros(52, 52, dtype=torch.bool), 0.1)
    cross = torch.zeros(52, 52, dtype=torch.bool)
    cross[0, 1] = True  # region 0 of image 0 with region 1 of image 0
    with pytest.raises(ValueError, match="same region"):
        neighbour_contrastive_loss(a, nb, cross, 0.1)
    with pytest.raises(ValueError, match="2D"):
        LocalContrastiveLoss(0.1, "LR", 35, 3, negatives="neighbours")
    with pytest.raises(ValueError, match="negatives"):
        LocalContrastiveLoss(0.1, "LR", 13, 3, negatives="some")
