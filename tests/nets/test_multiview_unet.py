"""Multi-view asymmetric U-Net: shapes, exact independence of the views, 2D init, MC dropout."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from medssl.core.weights import init_from_checkpoint
from medssl.errors import DataError
from medssl.nets import build_network
from medssl.nets.multiview_unet import (
    MultiViewAsymUNet,
    enable_mc_dropout,
    init_inplane_from_2d,
    load_view_state_dict,
    view_state_dict,
)

SMALL = (4, 8, 16)


def _net(num_views=3, spatial_dims=3, seed=0, **kwargs) -> MultiViewAsymUNet:
    """A small net with every parameter random (norm scales included: zero-init would hide bugs)."""
    torch.manual_seed(seed)
    net = MultiViewAsymUNet(num_views=num_views, channels=SMALL, spatial_dims=spatial_dims, **kwargs)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.5)
    return net.eval()


def _x(*shape, seed=1):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 3, 6])
def test_output_shapes_3d_and_2d(n):
    net3 = build_network("multiview_asym_unet", num_views=n, in_channels=2, out_channels=3, channels=SMALL)
    assert net3(_x(2, 2 * n, 16, 16, 16)).shape == (2, n, 3, 16, 16, 16)
    assert net3(_x(1, 2 * n, 16, 8, 12)).shape == (1, n, 3, 16, 8, 12)  # non-cubic is fine for the net
    net2 = MultiViewAsymUNet(num_views=n, in_channels=2, out_channels=3, channels=SMALL, spatial_dims=2)
    assert net2(_x(2, 2 * n, 16, 16)).shape == (2, n, 3, 16, 16)


def test_gradient_of_one_view_never_reaches_another_views_input():
    net = _net(3).train()  # dropout on: still per element, hence per view
    x = _x(2, 3, 8, 8, 8).requires_grad_(True)
    out = net(x)
    for i in range(3):
        (grad,) = torch.autograd.grad(out[:, i].square().sum(), x, retain_graph=True)
        for j in range(3):
            if j == i:
                assert grad[:, j].abs().sum() > 0
            else:
                assert torch.count_nonzero(grad[:, j]) == 0


def test_changing_one_views_weights_leaves_the_others_unchanged():
    net = _net(3)
    x = _x(2, 3, 8, 8, 8)
    before = net(x)
    state = {k: torch.randn_like(v) for k, v in view_state_dict(net, 1).items()}
    load_view_state_dict(net, 1, state)
    after = net(x)
    assert torch.equal(after[:, 0], before[:, 0]) and torch.equal(after[:, 2], before[:, 2])
    assert not torch.allclose(after[:, 1], before[:, 1])


@pytest.mark.parametrize("residual", [True, False])
def test_grouped_net_equals_separate_single_view_nets(residual):
    net = _net(3, residual=residual)
    x = _x(2, 3, 8, 8, 8)
    out = net(x)
    for i in range(3):
        single = MultiViewAsymUNet(num_views=1, channels=SMALL, residual=residual).eval()
        single.load_state_dict(view_state_dict(net, i))
        torch.testing.assert_close(single(x[:, i : i + 1])[:, 0], out[:, i], atol=1e-5, rtol=1e-5)


def test_every_3d_kernel_is_asymmetric_or_pointwise():
    net = MultiViewAsymUNet(num_views=3, channels=SMALL)
    kernels = [m.kernel_size for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d))]
    assert set(kernels) == {(3, 3, 1), (1, 1, 3), (2, 2, 2), (1, 1, 1)}
    assert all(m.groups == 3 for m in net.modules() if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)))


def test_through_plane_convs_start_as_identity_per_view():
    net = MultiViewAsymUNet(num_views=3, channels=SMALL, residual=False)
    conv = net.encoder[1].conv_through
    x = _x(1, 3 * SMALL[1], 4, 4, 4)
    torch.testing.assert_close(conv(x), x)


def _check_inplane_copied(net3d, net2d):
    s2, n2 = net2d.state_dict(), net2d.num_views
    for v in range(net3d.num_views):
        s3 = view_state_dict(net3d, v)
        src = view_state_dict(net2d, v if n2 > 1 else 0)
        for name in s2:
            dst = s3[name]
            if dst.ndim == 5:
                for k in range(dst.shape[-1]):  # (..., 3, 3, 1) in-plane, (..., 2, 2, 2) up-convs
                    assert torch.equal(dst[..., k], src[name]), name
            else:
                assert torch.equal(dst, src[name]), name


def test_init_from_2d_copies_inplane_kernels_into_every_view():
    net2d = _net(1, spatial_dims=2, seed=3)
    net3d = MultiViewAsymUNet(num_views=3, channels=SMALL)
    loaded, skipped = init_inplane_from_2d(net3d, net2d.state_dict())
    assert sorted(loaded) == sorted(net2d.state_dict())
    assert skipped and all(".conv_through." in s or ".norm_through." in s for s in skipped)
    _check_inplane_copied(net3d, net2d)
    assert net3d.encoder[0].conv_in.weight.shape[-3:] == (3, 3, 1)

    net2d3 = _net(3, spatial_dims=2, seed=4)  # a 3-view 2D source is copied group by group
    init_inplane_from_2d(net3d, net2d3)
    _check_inplane_copied(net3d, net2d3)


def test_net_initialised_from_2d_reproduces_it_slice_by_slice():
    # residual blocks start with a silent through-plane branch; on a volume constant along the
    # through-plane axis, 3D norms/pools see the same statistics as 2D ones, so the match is exact
    net2d = _net(1, spatial_dims=2, seed=5)
    net3d = MultiViewAsymUNet(num_views=1, channels=SMALL).eval()
    init_inplane_from_2d(net3d, net2d)
    x2 = _x(2, 1, 16, 16)
    out3 = net3d(x2.unsqueeze(-1).expand(-1, -1, -1, -1, 8))
    out2 = net2d(x2)
    for k in range(8):
        torch.testing.assert_close(out3[..., k], out2, atol=1e-5, rtol=1e-5)


def test_init_from_2d_checkpoint_file(tmp_path):
    net2d = _net(1, spatial_dims=2, seed=6)
    ckpt = tmp_path / "pretrain2d.ckpt"  # Lightning layout: weights under "state_dict", prefixed "net."
    torch.save({"epoch": 3, "state_dict": {f"net.{k}": v for k, v in net2d.state_dict().items()}}, ckpt)
    net3d = MultiViewAsymUNet(num_views=3, channels=SMALL)
    loaded, _, _ = init_from_checkpoint(net3d, ckpt)  # nets load no files: core.weights reads it
    assert len(loaded) == len(net2d.state_dict())
    _check_inplane_copied(net3d, net2d)

    plain = tmp_path / "plain.pt"
    torch.save(net2d.state_dict(), plain)
    assert init_from_checkpoint(MultiViewAsymUNet(num_views=3, channels=SMALL), str(plain))[0] == loaded


def test_init_from_bad_sources_raises_data_error(tmp_path):
    net3d = MultiViewAsymUNet(num_views=3, channels=SMALL)
    bad = tmp_path / "broken.ckpt"
    bad.write_bytes(b"this is not a checkpoint")
    with pytest.raises(DataError, match="broken.ckpt"):
        init_from_checkpoint(net3d, bad)
    with pytest.raises(DataError, match="not found"):
        init_from_checkpoint(net3d, tmp_path / "missing.ckpt")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(DataError, match="other.pt.*no parameter matches"):
        init_from_checkpoint(net3d, other)
    with pytest.raises(TypeError, match="state dict or a module"):  # networks load no files
        init_inplane_from_2d(net3d, str(other))
    wide = MultiViewAsymUNet(num_views=1, channels=(8, 16, 32), spatial_dims=2)  # other widths
    with pytest.raises(DataError, match="no parameter matches"):
        init_inplane_from_2d(net3d, wide.state_dict())


def test_mc_dropout_only_in_dropout_layers():
    net = MultiViewAsymUNet(num_views=3, channels=SMALL, dropout=0.5).eval()
    x = _x(1, 3, 8, 8, 8)
    assert torch.equal(net(x), net(x))  # plain eval: deterministic
    enable_mc_dropout(net)
    assert not torch.equal(net(x), net(x))
    for m in net.modules():
        assert m.training == isinstance(m, nn.Dropout), type(m).__name__


def test_bad_inputs_raise():
    net = MultiViewAsymUNet(num_views=3, channels=SMALL)  # 2 poolings: sides must be multiples of 4
    with pytest.raises(ValueError, match="divisible by 4"):
        net(_x(1, 3, 16, 16, 10))
    with pytest.raises(ValueError, match=r"needs input \(B, 3"):
        net(_x(1, 1, 16, 16, 16))
    with pytest.raises(ValueError, match=r"view must be in \[0, 3\)"):
        view_state_dict(net, 3)


def test_batch_norm_variant_loads_into_its_3d_twin_without_the_step_counters():
    """norm='batch' (the official 2D U-Net of Chaitanya et al. uses batch norm): a 2D batch-norm
    network initialises its 3D twin; BatchNorm's scalar step counters are neither per view nor kernels."""
    net2d = MultiViewAsymUNet(1, 1, 3, (4, 8), dropout=0.0, spatial_dims=2, norm="batch")
    net2d(torch.randn(4, 1, 16, 16)).sum()  # running statistics move in train mode
    net3d = MultiViewAsymUNet(3, 1, 3, (4, 8), dropout=0.0, spatial_dims=3, norm="batch")
    loaded, skipped = init_inplane_from_2d(net3d, net2d)
    assert "encoder.0.norm_in.running_mean" in loaded and "encoder.0.norm_in.num_batches_tracked" in skipped
    assert torch.equal(net3d.state_dict()["encoder.1.norm_in.running_var"][:8], net2d.state_dict()["encoder.1.norm_in.running_var"])
    assert view_state_dict(net3d, 2)["encoder.0.norm_in.num_batches_tracked"].ndim == 0
