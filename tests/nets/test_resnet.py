"""ResNet backbone factory: pooled-feature shapes in 2D/3D, parameter counts, stems, registry."""

from __future__ import annotations

import pytest
import torch

from medssl.nets import build_network
from medssl.nets.resnet import build_resnet


def _n_params(net) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("depth", "spatial_dims", "shape", "out_dim"),
    [
        (18, 2, (2, 1, 28, 28), 512),
        (50, 2, (2, 3, 28, 28), 2048),
        (18, 3, (2, 1, 12, 12, 12), 512),
        (50, 3, (1, 1, 28, 28, 28), 2048),
    ],
)
def test_pooled_feature_shapes(depth, spatial_dims, shape, out_dim):
    net = build_resnet(depth, spatial_dims, in_channels=shape[1]).eval()
    with torch.no_grad():
        y = net(torch.randn(*shape))
    assert net.out_dim == out_dim
    assert y.shape == (shape[0], out_dim)
    assert torch.isfinite(y).all()


def test_parameter_counts_match_monai_resnet18():
    # 2D ResNet-18 without fc is about 11.2M (torchvision: 11.18M), 3D about 33.2M
    assert _n_params(build_resnet(18, 2)) == pytest.approx(11.2e6, rel=0.01)
    assert _n_params(build_resnet(18, 3)) == pytest.approx(33.2e6, rel=0.01)
    assert _n_params(build_resnet(50, 2)) == pytest.approx(23.5e6, rel=0.01)


def test_small_input_stem_and_standard_stem():
    small, standard = build_resnet(18, 2, small_input=True), build_resnet(18, 2, small_input=False)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.no_max_pool
    assert standard.conv1.kernel_size == (7, 7) and standard.conv1.stride == (2, 2) and not standard.no_max_pool
    with torch.no_grad():
        assert standard.eval()(torch.randn(1, 1, 64, 64)).shape == (1, 512)


def test_channels_last_input_gives_the_same_features():
    net = build_resnet(18, 2).eval()
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        ref = net(x)
        y = net.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert torch.allclose(y, ref, atol=1e-4)


def test_bad_arguments_and_registry():
    with pytest.raises(ValueError, match="depth"):
        build_resnet(34)
    with pytest.raises(ValueError, match="spatial_dims"):
        build_resnet(18, spatial_dims=1)
    net = build_network("resnet", depth=18, spatial_dims=2, in_channels=3)
    assert net.out_dim == 512 and net.conv1.in_channels == 3
