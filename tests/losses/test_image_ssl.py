"""SSL losses against hand-written references (explicit loops over the papers' formulas)."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.losses.image_ssl import (
    BarlowTwinsLoss,
    DINOLoss,
    InfoNCELoss,
    NegativeCosineLoss,
    NNCLRLoss,
    NNMemoryBank,
    NTXentLoss,
    VICRegLoss,
)


def _cos(u: torch.Tensor, v: torch.Tensor) -> float:
    return float(u @ v) / (float(u.norm()) * float(v.norm()))


def _ntxent_manual(a: torch.Tensor, b: torch.Tensor, t: float) -> float:
    """SimCLR Algorithm 1 with loops: z[k], z[k + N] are the two views of sample k."""
    z = torch.cat([a, b]).double()
    n2 = z.shape[0]
    n = n2 // 2

    def ell(i: int, j: int) -> float:
        num = math.exp(_cos(z[i], z[j]) / t)
        den = sum(math.exp(_cos(z[i], z[k]) / t) for k in range(n2) if k != i)
        return -math.log(num / den)

    return sum(ell(k, k + n) + ell(k + n, k) for k in range(n)) / (2 * n)


def _ce_manual(logits: list[list[float]]) -> float:
    """Mean over rows of -log softmax(row)[row index]."""
    total = 0.0
    for i, row in enumerate(logits):
        total += -math.log(math.exp(row[i]) / sum(math.exp(x) for x in row))
    return total / len(logits)


# ---------------------------------------------------------------- NT-Xent
@pytest.mark.parametrize("t", [0.1, 0.5, 2.0])
def test_ntxent_matches_loops_on_two_pairs(t):
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    assert NTXentLoss(t)(a, b).item() == pytest.approx(_ntxent_manual(a, b, t), rel=1e-5)


def test_ntxent_is_symmetric_and_has_known_value_for_collinear_embeddings():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    loss = NTXentLoss(0.5)
    assert loss(a, b).item() == pytest.approx(loss(b, a).item(), abs=1e-6)
    # all 2N embeddings point the same way: every similarity is 1, so L = log(2N - 1)
    same = torch.rand(4, 1) + 0.5
    same = torch.cat([same, 2 * same], dim=1)
    assert loss(same, 3 * same).item() == pytest.approx(math.log(2 * 4 - 1), rel=1e-5)


# ---------------------------------------------------------------- InfoNCE (MoCo v3)
def test_infonce_matches_manual_cross_entropy_times_2t():
    g = torch.Generator().manual_seed(2)
    q, k = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = 0.2
    logits = [[_cos(q[i], k[j]) / t for j in range(3)] for i in range(3)]
    assert InfoNCELoss(t)(q, k).item() == pytest.approx(2 * t * _ce_manual(logits), rel=1e-5)


def test_infonce_does_not_backpropagate_into_keys():
    q, k = torch.randn(3, 4, requires_grad=True), torch.randn(3, 4, requires_grad=True)
    InfoNCELoss()(q, k).backward()
    assert q.grad is not None and k.grad is None


# ---------------------------------------------------------------- negative cosine
def test_negative_cosine_known_values():
    p = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]])
    z = torch.tensor([[0.0, 3.0], [2.0, 0.0], [-1.0, 0.0]])  # cos = 0, 1, -1
    assert NegativeCosineLoss("byol")(p, z).item() == pytest.approx((2 + 0 + 4) / 3)
    assert NegativeCosineLoss("simsiam")(p, z).item() == pytest.approx((0 - 1 + 1) / 3)


def test_negative_cosine_detaches_target_and_checks_mode():
    p, z = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    NegativeCosineLoss("simsiam")(p, z).backward()
    assert p.grad is not None and z.grad is None
    with pytest.raises(ValueError, match="mode"):
        NegativeCosineLoss("moco")


# ---------------------------------------------------------------- DINO
def _softmax(row: list[float], t: float) -> list[float]:
    e = [math.exp(x / t) for x in row]
    return [x / sum(e) for x in e]


def _dino_manual(student, teacher, center, tt, ts):
    total, terms = 0.0, 0
    for i, t_out in enumerate(teacher):
        for v, s_out in enumerate(student):
            if v == i:
                continue
            per_sample = []
            for b in range(t_out.shape[0]):
                pt = _softmax([float(t_out[b, k] - center[k]) for k in range(t_out.shape[1])], tt)
                ps = _softmax([float(x) for x in s_out[b]], ts)
                per_sample.append(-sum(pt[k] * math.log(ps[k]) for k in range(len(pt))))
            total += sum(per_sample) / len(per_sample)
            terms += 1
    return total / terms


def test_dino_loss_and_center_update_match_manual():
    g = torch.Generator().manual_seed(3)
    student = [torch.randn(2, 4, generator=g) for _ in range(3)]  # 2 global + 1 local crop
    teacher = [torch.randn(2, 4, generator=g) for _ in range(2)]
    loss = DINOLoss(4, teacher_temp=0.04, student_temp=0.1, center_momentum=0.9)

    expected = _dino_manual(student, teacher, [0.0] * 4, 0.04, 0.1)
    assert loss(student, teacher).item() == pytest.approx(expected, rel=1e-4)
    # c <- 0.9 * 0 + 0.1 * mean of the 4 teacher rows (raw logits)
    rows = torch.cat(teacher)
    center = [0.1 * sum(float(rows[r, k]) for r in range(4)) / 4 for k in range(4)]
    assert loss.center[0].tolist() == pytest.approx(center, abs=1e-6)
    # the second call uses the updated centre, then moves it again
    expected2 = _dino_manual(student, teacher, center, 0.04, 0.1)
    assert loss(student, teacher).item() == pytest.approx(expected2, rel=1e-4)
    center2 = [0.9 * c + 0.1 * sum(float(rows[r, k]) for r in range(4)) / 4 for k, c in enumerate(center)]
    assert loss.center[0].tolist() == pytest.approx(center2, abs=1e-6)


def test_dino_loss_gradient_reaches_student_only():
    student = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    teacher = [torch.randn(2, 4, requires_grad=True) for _ in range(2)]
    DINOLoss(4)(student, teacher).backward()
    assert all(s.grad is not None for s in student) and all(t.grad is None for t in teacher)


# ---------------------------------------------------------------- Barlow Twins
def _barlow_manual(a: torch.Tensor, b: torch.Tensor, lambd: float) -> float:
    """Eq. (2) of the paper on mean-centred columns, then Eq. (1)."""
    a, b = (a - a.mean(0)).double(), (b - b.mean(0)).double()
    n, d = a.shape
    loss = 0.0
    for i in range(d):
        for j in range(d):
            num = sum(float(a[k, i] * b[k, j]) for k in range(n))
            den = math.sqrt(sum(float(a[k, i]) ** 2 for k in range(n))) * math.sqrt(
                sum(float(b[k, j]) ** 2 for k in range(n))
            )
            c = num / den
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return loss


def test_barlow_twins_matches_loops():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    assert BarlowTwinsLoss(0.1)(a, b).item() == pytest.approx(_barlow_manual(a, b, 0.1), rel=1e-4)


def test_barlow_twins_is_zero_for_identical_decorrelated_embeddings():
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # C = identity
    assert BarlowTwinsLoss()(z, z.clone()).item() == pytest.approx(0.0, abs=1e-4)


# ---------------------------------------------------------------- VICReg
def _vicreg_manual(a, b, sim, var, cov, eps=1e-4):
    n, d = a.shape
    inv = sum(float(a[i, j] - b[i, j]) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def v(z):
        hinge = 0.0
        for j in range(d):
            m = sum(float(z[i, j]) for i in range(n)) / n
            std = math.sqrt(sum((float(z[i, j]) - m) ** 2 for i in range(n)) / (n - 1) + eps)
            hinge += max(0.0, 1.0 - std)
        return hinge / d

    def c(z):
        means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        total = 0.0
        for p in range(d):
            for q in range(d):
                if p != q:
                    dev = [(float(z[i, p]) - means[p]) * (float(z[i, q]) - means[q]) for i in range(n)]
                    cpq = sum(dev) / (n - 1)
                    total += cpq**2
        return total / d

    return sim * inv + var * (v(a) + v(b)) / 2 + cov * (c(a) + c(b))


def test_vicreg_matches_loops():
    g = torch.Generator().manual_seed(5)
    a, b = 0.5 * torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)  # some std < 1: hinge active
    expected = _vicreg_manual(a, b, 25.0, 25.0, 1.0)
    assert VICRegLoss()(a, b).item() == pytest.approx(expected, rel=1e-5)
    expected = _vicreg_manual(a, b, 1.0, 2.0, 3.0)
    assert VICRegLoss(1.0, 2.0, 3.0)(a, b).item() == pytest.approx(expected, rel=1e-5)


def test_vicreg_is_zero_for_identical_wide_decorrelated_embeddings():
    z = 2 * torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # std > 1, cov = 0
    assert VICRegLoss()(z, z.clone()).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("loss", [BarlowTwinsLoss(), VICRegLoss()], ids=lambda m: type(m).__name__)
def test_batch_statistics_losses_stay_float32_under_autocast(loss):
    g = torch.Generator().manual_seed(7)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = loss(a, b)
    assert out.dtype == torch.float32 and out.item() == pytest.approx(loss(a, b).item(), rel=1e-6)


# ---------------------------------------------------------------- NNCLR
def test_memory_bank_nearest_neighbour_from_known_queue():
    bank = NNMemoryBank(size=3, dim=3)
    q = torch.tensor([[0.9, 0.1, 0.0], [0.0, 0.2, 1.0]])
    assert torch.allclose(bank.nearest(q), torch.nn.functional.normalize(q, dim=1))  # empty: itself
    bank.update(torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
    bank.update(torch.tensor([[0.0, 0.0, 5.0]]))
    assert int(bank.filled) == 3
    assert bank.nearest(q).tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]
    # FIFO: the next entry overwrites the oldest one, e1
    bank.update(torch.tensor([[0.0, -1.0, 0.0]]))
    assert int(bank.filled) == 3 and int(bank.ptr) == 1
    assert bank.bank.tolist() == [[0.0, -1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    assert bank.nearest(torch.tensor([[0.9, -0.5, 0.1]])).tolist() == [[0.0, -1.0, 0.0]]


def test_memory_bank_only_searches_filled_slots():
    bank = NNMemoryBank(size=4, dim=2)
    bank.update(torch.tensor([[-1.0, 0.0]]))
    # empty (zero) slots would tie with cos 0 > -1; they must not be returned
    assert bank.nearest(torch.tensor([[1.0, 0.0]])).tolist() == [[-1.0, 0.0]]


def test_nnclr_loss_matches_manual_cross_entropy():
    g = torch.Generator().manual_seed(6)
    nn_a, p_b = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    t = 0.1
    logits = [[_cos(nn_a[i], p_b[j]) / t for j in range(3)] for i in range(3)]
    assert NNCLRLoss(t)(nn_a, p_b).item() == pytest.approx(_ce_manual(logits), rel=1e-5)


# ---------------------------------------------------------------- shape checks
PAIR_LOSSES = [NTXentLoss(), InfoNCELoss(), NegativeCosineLoss(), BarlowTwinsLoss(), VICRegLoss(), NNCLRLoss()]


@pytest.mark.parametrize("loss", PAIR_LOSSES, ids=lambda m: type(m).__name__)
def test_pair_losses_reject_bad_shapes(loss):
    with pytest.raises(ValueError, match="same shape"):
        loss(torch.randn(4, 3), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"\(B, D\)"):
        loss(torch.randn(4, 3, 2), torch.randn(4, 3, 2))


@pytest.mark.parametrize("loss", [BarlowTwinsLoss(), VICRegLoss()], ids=lambda m: type(m).__name__)
def test_batch_statistics_losses_need_two_samples(loss):
    with pytest.raises(ValueError, match="at least 2"):
        loss(torch.randn(1, 3), torch.randn(1, 3))


def test_dino_loss_rejects_bad_shapes():
    loss = DINOLoss(4)
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        loss([torch.randn(2, 5)] * 2, [torch.randn(2, 5)])
    with pytest.raises(ValueError, match="same|shape"):
        loss([torch.randn(2, 4), torch.randn(3, 4)], [torch.randn(2, 4)])
    with pytest.raises(ValueError, match="two student"):
        loss([torch.randn(2, 4)], [torch.randn(2, 4)])


def test_memory_bank_rejects_bad_shapes():
    bank = NNMemoryBank(4, 3)
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        bank.update(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"\(B, 3\)"):
        bank.nearest(torch.randn(3))
