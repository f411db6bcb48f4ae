"""Projection heads: layer layout and initial weights against hand-written ``nn.Sequential`` references."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.nets.heads import DINOHead, MLPHead


def _same_init(module: nn.Module, reference: nn.Module) -> bool:
    """Same parameter and buffer names, shapes and values."""
    a, b = module.state_dict(), reference.state_dict()
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(
    ("kwargs", "reference"),
    [
        # SimCLR/BYOL projector: Linear(no bias)-BN-ReLU, Linear
        ({}, lambda: [nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(True), nn.Linear(16, 8)]),
        # SimSiam / MoCo v3: last BatchNorm without affine, last Linear without bias
        (
            {"num_layers": 3, "last_bn": True},
            lambda: [
                nn.Linear(32, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(True),
                nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(True),
                nn.Linear(16, 8, bias=False), nn.BatchNorm1d(8, affine=False),
            ],
        ),
        ({"num_layers": 1}, lambda: [nn.Linear(32, 8)]),
        ({"bn": False}, lambda: [nn.Linear(32, 16), nn.ReLU(True), nn.Linear(16, 8)]),
    ],
)
def test_mlp_head_layout_and_init(kwargs, reference):
    torch.manual_seed(0)
    head = MLPHead(32, 16, 8, **kwargs)
    torch.manual_seed(0)
    ref = nn.Sequential(*reference())
    assert [repr(m) for m in head.mlp] == [repr(m) for m in ref]
    assert _same_init(head.mlp, ref)
    assert head(torch.randn(4, 32)).shape == (4, 8)


@pytest.mark.parametrize(("num_layers", "bn"), [(3, False), (1, False), (2, True)])
def test_dino_head_mlp_layout_and_init(num_layers, bn):
    torch.manual_seed(1)
    head = DINOHead(32, out_dim=16, hidden_dim=12, bottleneck_dim=8, num_layers=num_layers, bn=bn)
    torch.manual_seed(1)
    layers: list[nn.Module] = []
    for i in range(num_layers - 1):  # DINO keeps the Linear biases in front of BatchNorm
        layers += [nn.Linear(32 if i == 0 else 12, 12)] + ([nn.BatchNorm1d(12)] if bn else []) + [nn.GELU()]
    layers.append(nn.Linear(32 if num_layers == 1 else 12, 8))
    ref = nn.Sequential(*layers)
    for m in ref:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
    assert [repr(m) for m in head.mlp] == [repr(m) for m in ref]
    assert _same_init(head.mlp, ref)
    assert head.eval()(torch.randn(3, 32)).shape == (3, 16)


@pytest.mark.parametrize("head", [lambda n: MLPHead(8, 8, 8, num_layers=n), lambda n: DINOHead(8, num_layers=n)])
def test_at_least_one_layer(head):
    with pytest.raises(ValueError, match="num_layers"):
        head(0)


def test_feature_shape_is_checked():
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        MLPHead(32, 16, 8)(torch.randn(4, 31))
