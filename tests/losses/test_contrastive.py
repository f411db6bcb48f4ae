"""Global/local contrastive losses (Chaitanya et al. 2020) against hand-written loop references."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from medssl.losses.contrastive import (
    GlobalContrastiveLoss,
    LocalContrastiveLoss,
    extract_regions,
    global_pair_masks,
    local_pair_masks,
    local_region_starts,
    masked_contrastive_loss,
)
from medssl.losses.image_ssl import NTXentLoss

# ------------------------------------------------------------------------------------ references


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    u, v = u.double(), v.double()
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def _reference_loss(vecs: dict, is_pos, is_neg, t: float) -> float:
    """Mean over ordered positive pairs (a, p) of -log(e^{s_ap/T} / (e^{s_ap/T} + sum_neg e^{s_an/T}))."""
    keys = list(vecs)
    total, count = 0.0, 0
    for a in keys:
        negs = [n for n in keys if n != a and is_neg(a, n)]
        neg_sum = sum(math.exp(_cos(vecs[a], vecs[n]) / t) for n in negs)
        for p in keys:
            if p == a or not is_pos(a, p):
                continue
            e = math.exp(_cos(vecs[a], vecs[p]) / t)
            total += -math.log(e / (e + neg_sum))
            count += 1
    return total / count


def _global_reference(z: torch.Tensor, part: list[int], strategy: str, t: float) -> float:
    """Anchors are tuples (v, i); the rules of the strategies written out literally."""
    v_, n_ = z.shape[:2]
    vecs = {(v, i): z[v, i] for v in range(v_) for i in range(n_)}

    def is_pos(a, b):
        (_, i), (_, j) = a, b
        if strategy in ("GR", "GD-"):
            return i == j
        return part[i] == part[j]

    def is_neg(a, b):
        (_, i), (_, j) = a, b
        if strategy == "GR":
            return j != i
        if strategy == "GD-":
            return j != i and part[j] != part[i]
        return part[j] != part[i]

    return _reference_loss(vecs, is_pos, is_neg, t)


def _local_reference(f: torch.Tensor, part: list[int] | None, strategy: str, t: float, k: int, r: int) -> float:
    """Anchors are tuples (v, i, k); regions cut by explicit slicing."""
    v_, n_ = f.shape[:2]
    spatial = f.shape[3:]
    starts = local_region_starts(spatial, k, r).tolist()
    vecs = {}
    for v in range(v_):
        for i in range(n_):
            for kk, s in enumerate(starts):
                sl = tuple(slice(a, a + r) for a in s)
                vecs[(v, i, kk)] = f[(v, i, slice(None)) + sl].reshape(-1)

    def same_group(i, j):
        return i == j if strategy == "LR" else part[i] == part[j]

    def is_pos(a, b):
        (_, i, ka), (_, j, kb) = a, b
        return ka == kb and same_group(i, j)

    def is_neg(a, b):
        (_, i, ka), (_, j, kb) = a, b
        return ka != kb and same_group(i, j)

    return _reference_loss(vecs, is_pos, is_neg, t)


# -------------------------------------------------------------------------------- global: values


@pytest.mark.parametrize("strategy", ["GR", "GD-", "GD"])
@pytest.mark.parametrize("t", [0.1, 0.5])
def test_global_matches_reference(strategy, t):
    g = torch.Generator().manual_seed(0)
    z = torch.randn(3, 6, 5, generator=g)
    part = [0, 1, 2, 0, 1, 0]
    got = GlobalContrastiveLoss(t, strategy)(z, torch.tensor(part))
    assert got.dtype == torch.float32 and got.ndim == 0
    assert got.item() == pytest.approx(_global_reference(z, part, strategy, t), abs=1e-5)


def test_global_strategies_differ():
    z = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(1))
    part = torch.tensor([0, 1, 0, 1])
    vals = [GlobalContrastiveLoss(0.1, s)(z, part).item() for s in ("GR", "GD-", "GD")]
    assert len({round(v, 6) for v in vals}) == 3


def test_global_hand_computed_gr():
    # V = 2 views, N = 2 images, 2-D vectors at angles (degrees), T = 1, index a = v * 2 + i:
    #   a0 = (v0, i0) at 0,  a1 = (v0, i1) at 90,  a2 = (v1, i0) at 60,  a3 = (v1, i1) at 180.
    # Positive pairs: (a0, a2), (a2, a0), (a1, a3), (a3, a1); the negatives are the other image.
    #   cos(a0,a2) = 1/2, cos(a0,a1) = 0, cos(a0,a3) = -1, cos(a2,a1) = sqrt(3)/2,
    #   cos(a2,a3) = -1/2, cos(a1,a3) = 0.
    #   l(a0,a2) = -log(e^{1/2} / (e^{1/2} + e^0 + e^{-1}))
    #   l(a2,a0) = -log(e^{1/2} / (e^{1/2} + e^{sqrt3/2} + e^{-1/2}))
    #   l(a1,a3) = -log(e^0 / (e^0 + e^0 + e^{sqrt3/2}))
    #   l(a3,a1) = -log(e^0 / (e^0 + e^{-1} + e^{-1/2}))
    def unit(deg):
        return [math.cos(math.radians(deg)), math.sin(math.radians(deg))]

    z = torch.tensor([[unit(0), unit(90)], [unit(60), unit(180)]])
    e = math.exp
    s3 = math.sqrt(3) / 2
    expected = (
        -math.log(e(0.5) / (e(0.5) + 1 + e(-1)))
        - math.log(e(0.5) / (e(0.5) + e(s3) + e(-0.5)))
        - math.log(1 / (2 + e(s3)))
        - math.log(1 / (1 + e(-1) + e(-0.5)))
    ) / 4
    got = GlobalContrastiveLoss(temperature=1.0, strategy="GR")(z)
    assert got.item() == pytest.approx(expected, abs=1e-6)
    # N = 2 with different partitions: GD- and GD reduce to GR.
    part = torch.tensor([0, 1])
    for s in ("GD-", "GD"):
        assert GlobalContrastiveLoss(1.0, s)(z, part).item() == pytest.approx(expected, abs=1e-6)


def test_global_hand_computed_t_half():
    # a0 = (1, 0), a1 = (-1, 0), a2 = (0, 1), a3 = (0, -1), T = 1/2: every positive has cos 0,
    # each anchor's two negatives have cos -1 and 0, so every term is -log(1 / (1 + e^{-2} + 1)).
    z = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, -1.0]]])
    got = GlobalContrastiveLoss(0.5, "GR")(z)
    assert got.item() == pytest.approx(math.log(2 + math.exp(-2)), abs=1e-6)


def test_no_negatives_gives_zero_without_nan():
    # Both images in the same partition: GD has no negatives at all, GD- neither -> -log(1) = 0.
    z = torch.randn(2, 2, 4, requires_grad=True)
    part = torch.tensor([0, 0])
    for s in ("GD", "GD-"):
        loss = GlobalContrastiveLoss(0.1, s)(z, part)
        assert loss.item() == 0.0
        loss.backward()
        assert torch.isfinite(z.grad).all()
        z.grad = None


def test_mixed_anchors_with_and_without_negatives():
    # GD- with all images in one partition: no anchor has a negative, every term is -log(1) = 0.
    z = torch.randn(2, 3, 4, generator=torch.Generator().manual_seed(3))
    part = [0, 0, 0]
    assert GlobalContrastiveLoss(0.2, "GD-")(z, torch.tensor(part)).item() == 0.0
    # LD where image 2 is alone in its partition (positives only its other view) next to a
    # two-image partition, against the loops.
    f = torch.randn(2, 3, 2, 5, 5, generator=torch.Generator().manual_seed(4))
    part = [0, 0, 1]
    got = LocalContrastiveLoss(0.3, "LD", num_regions=9)(f, torch.tensor(part))
    assert got.item() == pytest.approx(_local_reference(f, part, "LD", 0.3, 9, 3), abs=1e-5)


def test_gr_equals_simclr_ntxent():
    g = torch.Generator().manual_seed(5)
    z = torch.randn(2, 7, 16, generator=g)
    t = 0.2
    got = GlobalContrastiveLoss(t, "GR")(z)
    # NT-Xent with the positive in the denominator, computed directly: logits over the 2N rows,
    # self-similarity removed, the target of row k is its other view.
    n = z.shape[1]
    x = F.normalize(torch.cat([z[0], z[1]]).double(), dim=1)
    logits = x @ x.T / t
    logits.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n) + n, torch.arange(n)])
    manual = -logits.log_softmax(dim=1)[torch.arange(2 * n), targets].mean()
    assert got.item() == pytest.approx(manual.item(), abs=1e-5)
    assert got.item() == pytest.approx(NTXentLoss(t)(z[0], z[1]).item(), abs=1e-5)


def test_identical_positives_lower_the_loss():
    # Orthonormal images; identical views reach -log(e^{1/T} / (e^{1/T} + 2N - 2)), noisy views
    # are worse.
    n, t = 4, 0.5
    base = torch.eye(8)[:n]
    same = torch.stack([base, base])
    noisy = torch.stack([base, base + 0.7 * torch.randn(n, 8, generator=torch.Generator().manual_seed(6))])
    loss = GlobalContrastiveLoss(t, "GR")
    ident = loss(same).item()
    assert ident == pytest.approx(-math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * n - 2)), abs=1e-5)
    assert ident < loss(noisy).item()
    # Local: identical copies vs noisy copies.
    f0 = torch.randn(1, 3, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    f_same = f0.expand(2, -1, -1, -1, -1)
    f_noisy = torch.cat([f0, f0 + torch.randn(f0.shape, generator=torch.Generator().manual_seed(8))])
    lloss = LocalContrastiveLoss(0.1, "LR")
    assert lloss(f_same).item() < lloss(f_noisy).item()


def test_gradients_flow_and_are_finite():
    z = torch.randn(2, 4, 6, requires_grad=True)
    GlobalContrastiveLoss(0.05, "GD")(z, torch.tensor([0, 1, 0, 1])).backward()
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    f = torch.randn(2, 2, 3, 6, 6, requires_grad=True)
    LocalContrastiveLoss(0.05, "LD")(f, torch.tensor([0, 0])).backward()
    assert torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_small_temperature_is_stable():
    z = torch.randn(2, 5, 8, generator=torch.Generator().manual_seed(9))
    got = GlobalContrastiveLoss(1e-3, "GR")(z)  # logits up to 1000: exp would overflow in float32
    assert torch.isfinite(got)


def test_bf16_input():
    z = torch.randn(2, 4, 8, generator=torch.Generator().manual_seed(10)).bfloat16()
    part = torch.tensor([0, 1, 0, 1])
    got = GlobalContrastiveLoss(0.1, "GD")(z, part)
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(GlobalContrastiveLoss(0.1, "GD")(z.float(), part).item(), abs=1e-5)
    f = torch.randn(2, 2, 3, 6, 6, generator=torch.Generator().manual_seed(11)).bfloat16()
    lgot = LocalContrastiveLoss(0.1, "LD")(f, torch.tensor([0, 0]))
    assert lgot.dtype == torch.float32
    expected = LocalContrastiveLoss(0.1, "LD")(f.float(), torch.tensor([0, 0])).item()
    assert lgot.item() == pytest.approx(expected, abs=1e-5)


# --------------------------------------------------------------------------------- global: masks


def _pairs(mask: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in mask.nonzero().tolist()}


def test_global_masks_exact():
    # V = 2, N = 4, partitions [0, 1, 0, 1]; index a = v * 4 + i.
    part = torch.tensor([0, 1, 0, 1])
    pos, neg = global_pair_masks(2, part, "GR")
    assert pos.shape == neg.shape == (8, 8) and pos.dtype == torch.bool
    assert _pairs(pos) == {(a, (a + 4) % 8) for a in range(8)}
    assert {b for a, b in _pairs(neg) if a == 0} == {1, 2, 3, 5, 6, 7}
    assert {b for a, b in _pairs(neg) if a == 6} == {0, 1, 3, 4, 5, 7}

    pos, neg = global_pair_masks(2, part, "GD-")
    assert _pairs(pos) == {(a, (a + 4) % 8) for a in range(8)}
    # image 0 never has image 2 (same partition, other volume) as a negative
    assert {b for a, b in _pairs(neg) if a == 0} == {1, 3, 5, 7}
    assert {b for a, b in _pairs(neg) if a == 5} == {0, 2, 4, 6}
    assert not neg[0, 2] and not neg[0, 6] and not neg[4, 2]

    pos, neg = global_pair_masks(2, part, "GD")
    # image 2 (both views) is a positive of image 0
    assert {b for a, b in _pairs(pos) if a == 0} == {2, 4, 6}
    assert {b for a, b in _pairs(pos) if a == 7} == {1, 3, 5}
    assert {b for a, b in _pairs(neg) if a == 0} == {1, 3, 5, 7}
    assert {b for a, b in _pairs(neg) if a == 3} == {0, 2, 4, 6}


@pytest.mark.parametrize("strategy", ["GR", "GD-", "GD"])
def test_global_masks_general_properties(strategy):
    part = torch.tensor([2, 0, 1, 0, 2])
    v, n = 3, 5
    pos, neg = global_pair_masks(v, part, strategy)
    assert not pos.diagonal().any() and not neg.diagonal().any()
    assert not (pos & neg).any()
    assert torch.equal(pos, pos.T) and torch.equal(neg, neg.T)
    for a, b in itertools.product(range(v * n), repeat=2):
        i, j = a % n, b % n
        if strategy == "GD":
            exp_pos = a != b and int(part[i]) == int(part[j])
            exp_neg = int(part[i]) != int(part[j])
        else:
            exp_pos = a != b and i == j
            exp_neg = i != j and (strategy == "GR" or int(part[i]) != int(part[j]))
        assert bool(pos[a, b]) == exp_pos and bool(neg[a, b]) == exp_neg, (a, b)


def test_global_masks_gr_without_partition():
    pos, neg = global_pair_masks(2, None, "GR", num_images=3)
    assert pos.shape == (6, 6)
    assert _pairs(pos) == {(0, 3), (3, 0), (1, 4), (4, 1), (2, 5), (5, 2)}
    with pytest.raises(ValueError, match="num_images"):
        global_pair_masks(2, None, "GR")
    with pytest.raises(ValueError, match="partition"):
        global_pair_masks(2, None, "GD")


# ---------------------------------------------------------------------------------- local: regions


def test_region_starts_2d_exact():
    # L = 12, r = 3: m = 9, levels {0, 4, 9}, quarters {9 // 4, 27 // 4} = {2, 6}
    starts = local_region_starts((12, 12), 13, 3)
    assert starts.dtype == torch.long
    assert starts.tolist() == [
        [0, 0], [0, 4], [0, 9],
        [4, 0], [4, 4], [4, 9],
        [9, 0], [9, 4], [9, 9],
        [2, 2], [2, 6], [6, 2], [6, 6],
    ]  # fmt: skip
    assert local_region_starts((12, 12), 9, 3).tolist() == starts[:9].tolist()
    # non-square, region_size 1 (single pixels): m = (9, 5)
    assert local_region_starts((10, 6), 13, 1).tolist() == [
        [0, 0], [0, 2], [0, 5],
        [4, 0], [4, 2], [4, 5],
        [9, 0], [9, 2], [9, 5],
        [2, 1], [2, 3], [6, 1], [6, 3],
    ]  # fmt: skip


def test_region_starts_3d():
    starts = local_region_starts((8, 9, 10), 35, 3)
    assert starts.shape == (35, 3)
    assert starts[:27].tolist() == [list(p) for p in itertools.product((0, 2, 5), (0, 3, 6), (0, 3, 7))]
    assert starts[27:].tolist() == [list(p) for p in itertools.product((1, 3), (1, 4), (1, 5))]
    assert local_region_starts((8, 9, 10), 27, 3).shape == (27, 3)


def test_region_starts_errors():
    with pytest.raises(ValueError, match=r"\(9, 13\)"):
        local_region_starts((12, 12), 35)
    with pytest.raises(ValueError, match=r"\(27, 35\)"):
        local_region_starts((12, 12, 12), 13)
    with pytest.raises(ValueError, match="region_size"):
        local_region_starts((12, 2), 13, 3)
    with pytest.raises(ValueError, match="2D or 3D"):
        local_region_starts((12,), 13)
    with pytest.raises(ValueError, match="num_regions"):
        LocalContrastiveLoss(num_regions=10)


@pytest.mark.parametrize("spatial", [(7, 6), (5, 6, 4)])
def test_extract_regions_matches_slicing(spatial):
    d = len(spatial)
    r = 2
    f = torch.randn(3, 4, *spatial, generator=torch.Generator().manual_seed(12))
    starts = local_region_starts(spatial, 13 if d == 2 else 35, r)
    out = extract_regions(f, starts, r)
    assert out.shape == (3, starts.shape[0], 4 * r**d)
    for b in range(3):
        for k, s in enumerate(starts.tolist()):
            sl = tuple(slice(a, a + r) for a in s)
            assert torch.equal(out[b, k], f[(b, slice(None)) + sl].reshape(-1))


def test_extract_regions_errors():
    f = torch.randn(2, 3, 6, 6)
    with pytest.raises(ValueError, match=r"\(4, 3\)"):
        extract_regions(f, torch.zeros(4, 3, dtype=torch.long), 2)
    with pytest.raises(ValueError, match="out of range"):
        extract_regions(f, torch.tensor([[0, 5]]), 2)


# ----------------------------------------------------------------------------------- local: values


@pytest.mark.parametrize("strategy", ["LR", "LD"])
@pytest.mark.parametrize(
    "spatial,k,r", [((7, 7), 13, 3), ((6, 8), 9, 2), ((5, 5, 5), 35, 3), ((4, 5, 4), 27, 1)]
)
def test_local_matches_reference(strategy, spatial, k, r):
    g = torch.Generator().manual_seed(13)
    n = 2 if len(spatial) == 3 else 4
    part = [0, 1, 0, 1][:n] if n == 4 else [0, 0]
    f = torch.randn(2, n, 2, *spatial, generator=g)
    got = LocalContrastiveLoss(0.1, strategy, k, r)(f, torch.tensor(part))
    assert got.dtype == torch.float32
    assert got.item() == pytest.approx(_local_reference(f, part, strategy, 0.1, k, r), abs=1e-5)


def test_local_three_views_reference():
    f = torch.randn(3, 3, 2, 6, 6, generator=torch.Generator().manual_seed(14))
    part = [1, 0, 1]
    for s in ("LR", "LD"):
        got = LocalContrastiveLoss(0.5, s, 9, 2)(f, torch.tensor(part))
        assert got.item() == pytest.approx(_local_reference(f, part, s, 0.5, 9, 2), abs=1e-5)


def test_local_lr_ignores_partition_and_ld_differs():
    f = torch.randn(2, 4, 3, 6, 6, generator=torch.Generator().manual_seed(15))
    lr = LocalContrastiveLoss(0.1, "LR")
    assert lr(f).item() == pytest.approx(lr(f, torch.tensor([0, 1, 0, 1])).item(), abs=0)
    ld = LocalContrastiveLoss(0.1, "LD")(f, torch.tensor([0, 1, 0, 1])).item()
    assert abs(ld - lr(f).item()) > 1e-3


def test_local_masks_exact():
    # V = 2, N = 2, K = 2; index (v * 2 + i) * 2 + k:
    #   0=(0,0,0) 1=(0,0,1) 2=(0,1,0) 3=(0,1,1) 4=(1,0,0) 5=(1,0,1) 6=(1,1,0) 7=(1,1,1)
    pos, neg = local_pair_masks(2, 2, 2, None, "LR")
    assert pos.shape == (8, 8)
    assert {b for a, b in _pairs(pos) if a == 0} == {4}
    assert {b for a, b in _pairs(neg) if a == 0} == {1, 5}
    assert {b for a, b in _pairs(pos) if a == 7} == {3}
    assert {b for a, b in _pairs(neg) if a == 7} == {2, 6}
    # LD, both images in the same partition: corresponding regions of image 1 are positives
    pos, neg = local_pair_masks(2, 2, 2, torch.tensor([3, 3]), "LD")
    assert {b for a, b in _pairs(pos) if a == 0} == {2, 4, 6}
    assert {b for a, b in _pairs(neg) if a == 0} == {1, 3, 5, 7}
    # LD, different partitions: same as LR
    pos_d, neg_d = local_pair_masks(2, 2, 2, torch.tensor([0, 1]), "LD")
    pos_r, neg_r = local_pair_masks(2, 2, 2, None, "LR")
    assert torch.equal(pos_d, pos_r) and torch.equal(neg_d, neg_r)
    for p, q in ((pos, neg), (pos_r, neg_r)):
        assert not p.diagonal().any() and not q.diagonal().any() and not (p & q).any()


# ------------------------------------------------------------------------------------------ errors


def test_shape_errors_mention_shape():
    with pytest.raises(ValueError, match=r"\(4, 8\)"):
        GlobalContrastiveLoss(strategy="GR")(torch.randn(4, 8))
    with pytest.raises(ValueError, match=r"\(1, 4, 8\)"):
        GlobalContrastiveLoss(strategy="GR")(torch.randn(1, 4, 8))
    with pytest.raises(ValueError, match=r"\(3,\)"):
        GlobalContrastiveLoss(strategy="GD")(torch.randn(2, 4, 8), torch.tensor([0, 1, 0]))
    with pytest.raises(ValueError, match=r"\(4, 1\)"):
        GlobalContrastiveLoss(strategy="GD-")(torch.randn(2, 4, 8), torch.zeros(4, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="partition"):
        GlobalContrastiveLoss(strategy="GD")(torch.randn(2, 4, 8))
    with pytest.raises(ValueError, match="integer"):
        GlobalContrastiveLoss(strategy="GD")(torch.randn(2, 4, 8), torch.zeros(4))
    with pytest.raises(ValueError, match=r"\(2, 3, 4, 5\)"):
        LocalContrastiveLoss(strategy="LR")(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"\(1, 3, 4, 5, 5\)"):
        LocalContrastiveLoss(strategy="LR", num_regions=9)(torch.randn(1, 3, 4, 5, 5))
    with pytest.raises(ValueError, match="partition"):
        LocalContrastiveLoss(strategy="LD")(torch.randn(2, 3, 4, 5, 5))
    with pytest.raises(ValueError, match=r"\(2,\)"):
        LocalContrastiveLoss(strategy="LD")(torch.randn(2, 3, 4, 5, 5), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="region_size"):
        LocalContrastiveLoss(strategy="LR")(torch.randn(2, 3, 4, 2, 5))
    with pytest.raises(ValueError, match=r"\(3, 5\)"):
        masked_contrastive_loss(
            torch.randn(3, 5), torch.zeros(3, 5, dtype=torch.bool), torch.zeros(3, 3, dtype=torch.bool), 0.1
        )


def test_bad_arguments():
    with pytest.raises(ValueError, match="temperature"):
        GlobalContrastiveLoss(temperature=0.0)
    with pytest.raises(ValueError, match="temperature"):
        LocalContrastiveLoss(temperature=-1.0)
    with pytest.raises(ValueError, match="strategy"):
        GlobalContrastiveLoss(strategy="LD")
    with pytest.raises(ValueError, match="strategy"):
        LocalContrastiveLoss(strategy="GD")
    with pytest.raises(ValueError, match="strategy"):
        global_pair_masks(2, torch.tensor([0, 1]), "G")
    with pytest.raises(ValueError, match="strategy"):
        local_pair_masks(2, 2, 2, None, "L")


def test_no_positive_pair_raises():
    x = torch.randn(4, 3)
    neg = ~torch.eye(4, dtype=torch.bool)
    with pytest.raises(ValueError, match="no positive"):
        masked_contrastive_loss(x, torch.zeros(4, 4, dtype=torch.bool), neg, 0.1)
