"""UMCT losses against hand-written references (numbers worked out by hand or with plain loops)."""

from __future__ import annotations

import math

import pytest
import torch

from medssl.losses.umct import (
    CoTrainingLoss,
    SupervisedMultiViewLoss,
    inverse_uncertainty_weights,
    mc_statistics,
    sample_confidence,
    sigmoid_rampup,
    uncertainty_weighted_fusion,
)

LN2 = math.log(2.0)


def _t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# --------------------------------------------------------------------------- mc_statistics


def test_mc_statistics_two_classes_two_passes_by_hand():
    # probs (K=2, B=1, C=2, 2 voxels). Voxel 0: passes (0.8, 0.2) and (0.4, 0.6);
    # voxel 1: (1, 0) twice.
    probs = _t([[[[0.8, 1.0], [0.2, 0.0]]], [[[0.4, 1.0], [0.6, 0.0]]]])
    mean, entropy = mc_statistics(probs, kind="entropy")
    assert mean.shape == (1, 2, 2) and entropy.shape == (1, 1, 2)
    torch.testing.assert_close(mean, _t([[[0.6, 1.0], [0.4, 0.0]]]))
    # H(0.6, 0.4) = -(0.6 ln 0.6 + 0.4 ln 0.4) = 0.673012; a certain voxel has H = 0.
    h0 = -(0.6 * math.log(0.6) + 0.4 * math.log(0.4))
    assert h0 == pytest.approx(0.6730117, abs=1e-6)
    torch.testing.assert_close(entropy, _t([[[h0, 0.0]]]))

    _, variance = mc_statistics(probs, kind="variance")
    # class 0: values 0.8, 0.4 around 0.6 -> ((0.2)^2 + (0.2)^2) / 2 = 0.04; class 1 the same.
    torch.testing.assert_close(variance, _t([[[0.04, 0.0]]]))


def test_mc_statistics_variance_is_mean_over_classes():
    # C=3, one voxel: passes (0.5, 0.3, 0.2) and (0.1, 0.5, 0.4): variances 0.04, 0.01, 0.01.
    probs = _t([[[[0.5], [0.3], [0.2]]], [[[0.1], [0.5], [0.4]]]])
    _, variance = mc_statistics(probs, kind="variance")
    torch.testing.assert_close(variance, _t([[[(0.04 + 0.01 + 0.01) / 3]]]))


def test_mc_statistics_errors():
    with pytest.raises(ValueError, match=r"\(K, B, C, \*spatial\)"):
        mc_statistics(torch.rand(2, 1, 2))
    with pytest.raises(ValueError, match="kind must be"):
        mc_statistics(torch.rand(2, 1, 2, 3), kind="mutual_information")


# --------------------------------------------------------------------------- fusion

# N=3 views, B=1, C=2, 2 voxels, shape (N, B, C, V).
# Voxel 0: p1=(0.9, 0.1), p2=(0.6, 0.4), p3=(0.2, 0.8); u = (0.0, 0.5, 0.25) -> the floor 1e-3
#          turns view 1's weight into 1000; weights (1000, 2, 4).
# Voxel 1: p1=(0.3, 0.7), p2=(0.5, 0.5), p3=(1.0, 0.0); u = 0.1 everywhere -> equal weights.
PROBS = _t(
    [
        [[[0.9, 0.3], [0.1, 0.7]]],
        [[[0.6, 0.5], [0.4, 0.5]]],
        [[[0.2, 1.0], [0.8, 0.0]]],
    ]
)
UNC = _t([[[[0.0, 0.1]]], [[[0.5, 0.1]]], [[[0.25, 0.1]]]])


def test_fusion_inverse_uncertainty_by_hand():
    fused = uncertainty_weighted_fusion(PROBS, UNC, floor=1e-3)
    assert fused.shape == PROBS.shape
    expected = _t(
        [
            # view 1 from views 2, 3 (weights 2, 4) | voxel 1: mean of p2, p3
            [[[(2 * 0.6 + 4 * 0.2) / 6, 0.75], [(2 * 0.4 + 4 * 0.8) / 6, 0.25]]],
            # view 2 from views 1, 3 (weights 1000, 4) | mean of p1, p3
            [[[(1000 * 0.9 + 4 * 0.2) / 1004, 0.65], [(1000 * 0.1 + 4 * 0.8) / 1004, 0.35]]],
            # view 3 from views 1, 2 (weights 1000, 2) | mean of p1, p2
            [[[(1000 * 0.9 + 2 * 0.6) / 1002, 0.4], [(1000 * 0.1 + 2 * 0.4) / 1002, 0.6]]],
        ]
    )
    torch.testing.assert_close(fused, expected)
    assert expected[1, 0, 0, 0].item() == pytest.approx(0.8972112, abs=1e-6)
    torch.testing.assert_close(fused.sum(dim=2), torch.ones(3, 1, 2, dtype=torch.float64))


def test_fusion_equal_weights_is_plain_average():
    unc = torch.full_like(UNC, 0.1)
    weighted = uncertainty_weighted_fusion(PROBS, unc)
    average = uncertainty_weighted_fusion(PROBS, UNC, weighting="average")
    torch.testing.assert_close(weighted, average)


def test_fusion_average_mode_by_hand():
    fused = uncertainty_weighted_fusion(PROBS, UNC, weighting="average")
    expected = _t(
        [
            [[[(0.6 + 0.2) / 2, 0.75], [(0.4 + 0.8) / 2, 0.25]]],
            [[[(0.9 + 0.2) / 2, 0.65], [(0.1 + 0.8) / 2, 0.35]]],
            [[[(0.9 + 0.6) / 2, 0.4], [(0.1 + 0.4) / 2, 0.6]]],
        ]
    )
    torch.testing.assert_close(fused, expected)


def test_fusion_sample_level_by_hand():
    # Uncertainty averaged over the 2 voxels first: view 1 (0 + 0.1)/2 = 0.05 -> w 20,
    # view 2 (0.5 + 0.1)/2 = 0.3 -> w 10/3, view 3 (0.25 + 0.1)/2 = 0.175 -> w 1/0.175.
    w1, w2, w3 = 20.0, 10.0 / 3.0, 1.0 / 0.175
    weights = inverse_uncertainty_weights(UNC, level="sample")
    assert weights.shape == (3, 1, 1, 1)
    torch.testing.assert_close(weights.flatten(), _t([w1, w2, w3]))
    fused = uncertainty_weighted_fusion(PROBS, UNC, level="sample")
    # view 1, voxel 0, class 0 from views 2 and 3; view 3, voxel 1, class 1 from views 1 and 2
    assert fused[0, 0, 0, 0].item() == pytest.approx((w2 * 0.6 + w3 * 0.2) / (w2 + w3))
    assert fused[2, 0, 1, 1].item() == pytest.approx((w1 * 0.7 + w2 * 0.5) / (w1 + w2))


def test_fusion_ignores_own_view():
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(4, 2, 3, 5, 4, generator=gen), dim=2)
    unc = torch.rand(4, 2, 1, 5, 4, generator=gen)
    fused = uncertainty_weighted_fusion(probs, unc)
    for i in range(4):
        probs_p, unc_p = probs.clone(), unc.clone()
        probs_p[i] = torch.softmax(torch.randn(2, 3, 5, 4, generator=gen), dim=1)
        unc_p[i] = torch.rand(2, 1, 5, 4, generator=gen)
        fused_p = uncertainty_weighted_fusion(probs_p, unc_p)
        torch.testing.assert_close(fused_p[i], fused[i])
        others = [j for j in range(4) if j != i]
        assert not torch.allclose(fused_p[others], fused[others])


def test_fusion_errors():
    with pytest.raises(ValueError, match="fusion needs at least 2 views"):
        uncertainty_weighted_fusion(PROBS[:1], UNC[:1])
    shape_msg = r"view_uncertainty must have shape \(N, B, 1, \*spatial\)"
    with pytest.raises(ValueError, match=shape_msg):
        uncertainty_weighted_fusion(PROBS, UNC[:2])
    with pytest.raises(ValueError, match=r"view_uncertainty must have shape"):
        uncertainty_weighted_fusion(PROBS, PROBS)  # C channels instead of 1
    with pytest.raises(ValueError, match=r"view_probs must have shape \(N, B, C, \*spatial\)"):
        uncertainty_weighted_fusion(PROBS[..., 0], UNC[..., 0])
    with pytest.raises(ValueError, match="weighting must be"):
        uncertainty_weighted_fusion(PROBS, UNC, weighting="max")
    with pytest.raises(ValueError, match="floor must be > 0"):
        uncertainty_weighted_fusion(PROBS, UNC, floor=0.0)
    with pytest.raises(ValueError, match="level must be"):
        uncertainty_weighted_fusion(PROBS, UNC, level="volume")


# --------------------------------------------------------------------------- confidence


def test_sample_confidence_certain_uniform_and_intermediate():
    # (N=3, B=1, C=2, 2 voxels): one-hot everywhere, uniform everywhere, and one voxel
    # (0.9, 0.1) plus one uniform voxel.
    fused = _t(
        [
            [[[1.0, 0.0], [0.0, 1.0]]],
            [[[0.5, 0.5], [0.5, 0.5]]],
            [[[0.9, 0.5], [0.1, 0.5]]],
        ]
    )
    conf = sample_confidence(fused)
    assert conf.shape == (3, 1)
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))  # 0.325083
    intermediate = 1.0 - ((h + LN2) / 2) / LN2  # 0.265502
    assert intermediate == pytest.approx(0.2655022, abs=1e-6)
    torch.testing.assert_close(conf, _t([[1.0], [0.0], [intermediate]]))


def test_sample_confidence_three_classes_uniform_is_zero():
    fused = torch.full((2, 3, 3, 4), 1.0 / 3.0, dtype=torch.float64)
    torch.testing.assert_close(sample_confidence(fused), torch.zeros(2, 3, dtype=torch.float64))


def test_sample_confidence_errors():
    with pytest.raises(ValueError, match=r"fused_probs must have shape \(N, B, C, \*spatial\)"):
        sample_confidence(torch.rand(2, 2, 2))
    with pytest.raises(ValueError, match="C >= 2"):
        sample_confidence(torch.ones(2, 2, 1, 3))


# --------------------------------------------------------------------------- ramp-up


def test_sigmoid_rampup_values():
    kw = dict(rampup_steps=100, max_weight=2.0, start_step=10)
    assert sigmoid_rampup(0, **kw) == 0.0
    assert sigmoid_rampup(9, **kw) == 0.0
    assert sigmoid_rampup(10, **kw) == pytest.approx(2.0 * math.exp(-5.0))
    assert sigmoid_rampup(60, **kw) == pytest.approx(2.0 * math.exp(-5.0 * 0.25))
    assert sigmoid_rampup(110, **kw) == pytest.approx(2.0)
    assert sigmoid_rampup(10_000, **kw) == pytest.approx(2.0)
    assert isinstance(sigmoid_rampup(60, **kw), float)


def test_sigmoid_rampup_zero_length_and_errors():
    assert sigmoid_rampup(0, rampup_steps=0) == 1.0
    assert sigmoid_rampup(5, rampup_steps=0, max_weight=3.0, start_step=5) == 3.0
    assert sigmoid_rampup(4, rampup_steps=0, max_weight=3.0, start_step=5) == 0.0
    with pytest.raises(ValueError, match="rampup_steps must be >= 0"):
        sigmoid_rampup(0, rampup_steps=-1)


# --------------------------------------------------------------------------- co-training loss


def _loop_loss(logits, pseudo, confidence, hard: bool, dice: bool = False) -> float:
    """Plain-Python reference: sum_{i,b} c_ib L_ib / (N B) over (N, B, C, V) nested lists."""
    n, b, c, v = logits.shape
    z, q, w = logits.tolist(), pseudo.tolist(), confidence.tolist()
    total = 0.0
    for i in range(n):
        for s in range(b):
            ce = 0.0
            p_all, t_all = [], []
            for x in range(v):
                scores = [z[i][s][k][x] for k in range(c)]
                denom = sum(math.exp(a) for a in scores)
                p = [math.exp(a) / denom for a in scores]
                t = [q[i][s][k][x] for k in range(c)]
                if hard:
                    best = max(range(c), key=lambda k: t[k])
                    t = [1.0 if k == best else 0.0 for k in range(c)]
                ce -= sum(t[k] * math.log(p[k]) for k in range(c))
                p_all.append(p)
                t_all.append(t)
            loss = ce / v
            if dice:  # MONAI's soft Dice, smooth_nr = smooth_dr = 1e-5, mean over classes
                d = 0.0
                for k in range(c):
                    inter = sum(p_all[x][k] * t_all[x][k] for x in range(v))
                    sums = sum(p_all[x][k] + t_all[x][k] for x in range(v))
                    d += 1.0 - (2.0 * inter + 1e-5) / (sums + 1e-5)
                loss += d / c
            total += w[i][s] * loss
    return total / (n * b)


def _tiny_inputs():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 2, 3, 4, generator=gen)  # N=2, B=2, C=3, 4 voxels
    pseudo = torch.softmax(2 * torch.randn(2, 2, 3, 4, generator=gen), dim=2)
    confidence = torch.tensor([[1.0, 0.5], [0.0, 0.25]])
    return logits, pseudo, confidence


@pytest.mark.parametrize("hard", [True, False])
def test_cotraining_ce_matches_loop_reference(hard):
    logits, pseudo, confidence = _tiny_inputs()
    loss = CoTrainingLoss("ce", hard=hard)(logits, pseudo, confidence)
    assert loss.ndim == 0
    assert loss.item() == pytest.approx(_loop_loss(logits, pseudo, confidence, hard), rel=1e-5)


@pytest.mark.parametrize("hard", [True, False])
def test_cotraining_dice_ce_matches_loop_reference(hard):
    logits, pseudo, confidence = _tiny_inputs()
    loss = CoTrainingLoss("dice_ce", hard=hard)(logits, pseudo, confidence)
    expected = _loop_loss(logits, pseudo, confidence, hard, dice=True)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_cotraining_gradient_reaches_logits_only():
    logits, pseudo, confidence = _tiny_inputs()
    logits.requires_grad_(True)
    pseudo.requires_grad_(True)
    confidence = torch.full((2, 2), 0.7, requires_grad=True)
    CoTrainingLoss("dice_ce", hard=False)(logits, pseudo, confidence).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    assert pseudo.grad is None
    assert confidence.grad is None


def test_cotraining_zero_confidence_gives_zero_loss():
    logits, pseudo, _ = _tiny_inputs()
    logits.requires_grad_(True)
    loss = CoTrainingLoss("ce")(logits, pseudo, torch.zeros(2, 2))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(logits.grad) == 0


def test_cotraining_bf16_logits_give_float32_loss():
    logits, pseudo, confidence = _tiny_inputs()
    loss = CoTrainingLoss("ce")(logits.bfloat16(), pseudo, confidence)
    assert loss.dtype == torch.float32


def test_cotraining_errors():
    logits, pseudo, confidence = _tiny_inputs()
    loss = CoTrainingLoss()
    with pytest.raises(ValueError, match="pseudo_probs must have the same shape as view_logits"):
        loss(logits, pseudo[:, :1], confidence)
    with pytest.raises(ValueError, match=r"confidence must have shape \(N, B\) = \(2, 2\)"):
        loss(logits, pseudo, confidence[0])
    with pytest.raises(ValueError, match=r"view_logits must have shape \(N, B, C, \*spatial\)"):
        loss(logits[..., 0], pseudo[..., 0], confidence)
    with pytest.raises(ValueError, match="loss_type must be"):
        CoTrainingLoss("mse")


# --------------------------------------------------------------------------- supervised


def test_supervised_multiview_is_mean_over_views():
    from monai.losses import DiceCELoss

    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 2, 2, 4, 4, generator=gen)  # N=3, B=2, C=2, 4x4
    label = torch.randint(0, 2, (2, 1, 4, 4), generator=gen)
    reference = DiceCELoss(to_onehot_y=True, softmax=True)
    expected = sum(reference(logits[i], label).item() for i in range(3)) / 3
    assert SupervisedMultiViewLoss()(logits, label).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_multiview_perfect_prediction_is_near_zero():
    label = torch.tensor([[[[0, 1], [1, 0]]]])  # (B=1, 1, 2, 2)
    one_hot = torch.cat([label == 0, label == 1], dim=1).float()  # (1, 2, 2, 2)
    logits = (40.0 * one_hot - 20.0).expand(2, -1, -1, -1, -1)  # two identical views
    assert SupervisedMultiViewLoss()(logits, label).item() < 1e-4


def test_supervised_multiview_errors():
    with pytest.raises(ValueError, match=r"label must have shape \(B, 1, \*spatial\)"):
        SupervisedMultiViewLoss()(torch.randn(2, 2, 3, 4, 4), torch.zeros(2, 4, 4))
    with pytest.raises(ValueError, match=r"view_logits must have shape \(N, B, C, \*spatial\)"):
        SupervisedMultiViewLoss()(torch.randn(2, 3, 4), torch.zeros(2, 1, 4))


def test_cotraining_sum_over_views_is_the_papers_reduction():
    """reduction='sum' (Eq. (3): summed over views, averaged over the batch) against the loop
    reference, which averages over views and batch: N times larger."""
    logits, pseudo, confidence = _tiny_inputs()
    n = logits.shape[0]
    loss = CoTrainingLoss("ce", reduction="sum")(logits, pseudo, confidence)
    assert loss.item() == pytest.approx(n * _loop_loss(logits, pseudo, confidence, True), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        CoTrainingLoss("ce", reduction="max")


def test_normalised_entropy_by_hand():
    from medssl.losses.umct import normalised_entropy

    p = torch.tensor([[0.5, 0.5], [1.0, 0.0]]).T.reshape(1, 2, 2)  # voxel 0 uniform, voxel 1 certain
    h = normalised_entropy(p)
    assert h.shape == (1, 1, 2)
    assert h[0, 0, 0].item() == pytest.approx(1.0) and h[0, 0, 1].item() == pytest.approx(0.0, abs=1e-6)
    q = torch.tensor([0.7, 0.2, 0.1]).reshape(1, 3, 1)
    ref = -sum(x * math.log(x) for x in (0.7, 0.2, 0.1)) / math.log(3)
    assert normalised_entropy(q).item() == pytest.approx(ref, rel=1e-6)
