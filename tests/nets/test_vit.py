"""Small ViT backbone: pooled shapes in 2D/3D, pooling modes, other input sizes, registry."""

from __future__ import annotations

import pytest
import torch

from medssl.nets import build_network
from medssl.nets.vit import build_vit


@pytest.mark.parametrize("spatial_dims", [2, 3])
@pytest.mark.parametrize("pool", ["cls", "mean"])
def test_pooled_shape(spatial_dims, pool):
    size = 28 if spatial_dims == 2 else 8
    net = build_vit(image_size=size, spatial_dims=spatial_dims, pool=pool, depth=2)
    y = net(torch.randn(2, 1, *([size] * spatial_dims)))
    assert net.out_dim == 192
    assert y.shape == (2, 192)
    assert torch.isfinite(y).all()


def test_default_is_a_small_vit_and_trains():
    net = build_vit(in_channels=3)
    assert 2e6 < sum(p.numel() for p in net.parameters()) < 3.5e6
    y = net(torch.randn(2, 3, 28, 28))
    y.square().mean().backward()
    assert net.patch_embed.weight.grad is not None and net.pos_embed.grad is not None


def test_smaller_crops_use_an_interpolated_position_embedding():
    net = build_vit(depth=1).eval()
    with torch.no_grad():
        assert net(torch.randn(2, 1, 12, 12)).shape == (2, 192)  # DINO local crop size
        x = torch.randn(2, 1, 28, 28)
        assert torch.equal(net._pos_embed((7, 7)), net.pos_embed)
        assert net(x).shape == (2, 192)
    with pytest.raises(ValueError, match="patch_size"):
        net(torch.randn(1, 1, 13, 13))


def test_bad_arguments_and_registry():
    with pytest.raises(ValueError, match="divide"):
        build_vit(image_size=28, patch_size=5)
    with pytest.raises(ValueError, match="pool"):
        build_vit(pool="max")
    net = build_network("vit", hidden_size=64, heads=2, depth=1)
    assert net.out_dim == 64 and net(torch.randn(1, 1, 28, 28)).shape == (1, 64)


def test_build_vit_is_the_backbone_class():
    """The registry factory is the class itself: same arguments, same initial weights for a seed."""
    from medssl.nets.vit import ViTBackbone

    torch.manual_seed(0)
    a = build_vit(image_size=8, spatial_dims=3, depth=1, pool="mean")
    torch.manual_seed(0)
    b = ViTBackbone(image_size=8, spatial_dims=3, depth=1, pool="mean")
    assert type(a) is ViTBackbone
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
