"""The verdict line on a paper's claim from paired per-seed differences."""

from medssl.eval.claims import verdict


def test_verdict_branches():
    assert verdict([0.02, 0.01, 0.03], "A beats B") == "A beats B: **reproduced** (+0.020 Dice, better in every seed, n=3)"
    # mean 0.07475 above the sd 0.0505 (sqrt((3 * 0.02525^2 + 0.07575^2) / 3)) but one seed below 0
    assert verdict([0.10, 0.10, 0.10, -0.001], "A beats B") == \
        "A beats B: reproduced on average (+0.075 ± 0.051, n=4), not in every seed"
    assert verdict([0.03, -0.01, 0.0], "A beats B") == \
        "A beats B: **not reproduced** (+0.007 ± 0.021, n=3: within the seed spread)"
    assert verdict([-0.02, -0.01], "A beats B") == "A beats B: **not reproduced** (-0.015 ± 0.007, n=2)"
    assert verdict([0.5], "A beats B") == "A beats B: too few paired seeds to say (n=1)"
    assert verdict([0.01, 0.02], "x", unit="AUROC").endswith("(+0.015 AUROC, better in every seed, n=2)")
