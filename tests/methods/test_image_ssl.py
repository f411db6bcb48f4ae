"""Every registered image-SSL method runs real optimiser steps with a tiny stand-in backbone.

The backbone contract (``backbone(x) -> (B, backbone.out_dim)``) is played by a Flatten + Linear;
head sizes are shrunk so the whole file stays light on CPU. Also: the heads of
``medssl.nets.heads`` that the methods compose.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from medssl.methods.image_ssl import SSL_METHODS, build_ssl_method, cosine_momentum
from medssl.nets.heads import DINOHead, MLPHead

NAMES = ["simclr", "mocov3", "byol", "simsiam", "dino", "barlow", "vicreg", "nnclr", "supervised"]
TINY = {
    "simclr": dict(hidden_dim=16, proj_dim=8),
    "mocov3": dict(hidden_dim=16, proj_dim=8),
    "byol": dict(hidden_dim=16, proj_dim=8),
    "simsiam": dict(proj_dim=16, pred_hidden_dim=4),
    "dino": dict(out_dim=16, hidden_dim=16, bottleneck_dim=8),
    "barlow": dict(proj_dim=16),
    "vicreg": dict(proj_dim=16),
    "nnclr": dict(hidden_dim=16, proj_dim=8, pred_hidden_dim=16, queue_size=32),
    "supervised": dict(num_classes=3),
}
MOMENTUM = {"mocov3", "byol", "dino"}


def tiny_backbone() -> nn.Module:
    net = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 32))
    net.out_dim = 32
    return net


def pooled_backbone() -> nn.Module:
    """Accepts any input size (for DINO's smaller local crops)."""
    net = nn.Sequential(nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(49, 32))
    net.out_dim = 32
    return net


def make(name: str, backbone: nn.Module | None = None, **kwargs):
    torch.manual_seed(0)
    return build_ssl_method(name, backbone or tiny_backbone(), **{**TINY[name], **kwargs})


def batch(n_views: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    views = [torch.rand(8, 1, 28, 28, generator=g) for _ in range(n_views)]
    return views, torch.randint(0, 3, (8, 1), generator=g)


def views_for(name: str, seed: int = 0):
    return batch(4 if name == "dino" else 1 if name == "supervised" else 2, seed)


def momentum_params(method) -> dict[str, torch.Tensor]:
    return {
        f"{target}.{k}": p.detach().clone()
        for _, target in method.momentum_pairs
        for k, p in getattr(method, target).named_parameters()
    }


# ---------------------------------------------------------------- registry
def test_registry_lists_all_nine_methods():
    assert sorted(SSL_METHODS) == sorted(NAMES)


def test_unknown_name_raises_key_error_listing_names():
    with pytest.raises(KeyError) as info:
        build_ssl_method("swav", tiny_backbone())
    assert "swav" in str(info.value) and all(n in str(info.value) for n in NAMES)


def test_backbone_without_out_dim_is_rejected():
    with pytest.raises(ValueError, match="out_dim"):
        build_ssl_method("simclr", nn.Flatten())


@pytest.mark.parametrize("name", NAMES)
def test_default_sizes_build_and_declare_a_preset(name):
    kwargs = {"num_classes": 2} if name == "supervised" else {}
    method = build_ssl_method(name, tiny_backbone(), **kwargs)
    assert isinstance(method.aug_preset, str) and method.aug_preset
    assert method(torch.rand(2, 1, 28, 28)).shape == (2, 32)  # forward = backbone features


def test_every_preset_exists_in_the_augmentation_presets():
    from medssl.transforms.image_ssl_augment import PRESETS as presets

    assert {m.aug_preset for m in SSL_METHODS.values()} <= set(presets)


def test_declared_needs_of_the_loop():
    """What the pretraining loop reads from the classes (it never looks at their names)."""
    m = SSL_METHODS
    assert {n: m[n].default_lr("resnet18", 256) for n in NAMES} == {
        n: (5e-4 if n == "dino" else 1e-3) for n in NAMES}
    assert m["simclr"].default_lr("resnet18", 64) == pytest.approx(2.5e-4)
    assert m["mocov3"].default_lr("vit_small", 256) == 1.5e-4 and m["mocov3"].default_lr("resnet50", 256) == 1e-3
    assert m["dino"].default_grad_clip("resnet18") == m["dino"].default_grad_clip("vit_small") == 3.0
    assert m["simclr"].default_grad_clip("resnet18") is None and m["simclr"].default_grad_clip("vit_small") == 3.0
    assert m["dino"].default_kwargs("resnet50") == {"use_bn_in_head": True} and m["dino"].default_kwargs("vit_small") == {}
    assert m["supervised"].default_kwargs("resnet18", 4) == {"num_classes": 4}
    assert m["simclr"].default_kwargs("resnet18", 4) == {}
    assert m["dino"].augment_defaults(28, {}) == {"local_size": 12}
    assert m["dino"].augment_defaults(28, {"patch_size": 4}) == {"local_size": 12}
    assert m["dino"].augment_defaults(64, {"patch_size": 8}) == {"local_size": 24}
    assert [n for n in NAMES if m[n].uses_labels] == ["supervised"]
    assert m["supervised"].label_settings(torch.tensor([0, 2, 1]), None) == (3, {})
    assert m["supervised"].label_settings(torch.zeros(3, 5), None) == (5, {"multi_label": True})
    assert m["supervised"].label_settings(torch.tensor([0, 1]), 4) == (4, {})


@pytest.mark.parametrize("name", NAMES)
def test_augmented_views_are_what_training_loss_takes(name):
    from medssl.transforms.image_ssl_augment import SSLAugment

    method = make(name, pooled_backbone())
    augment = SSLAugment(method.aug_preset, n_local=2 if name == "dino" else None)
    x = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    views = method.augmented_views(augment, x, torch.Generator().manual_seed(0))
    assert len(views) == {"dino": 4, "supervised": 1}.get(name, 2)
    loss, _ = method.training_loss(views, torch.randint(0, 3, (8,)))
    assert math.isfinite(loss.item())


# ---------------------------------------------------------------- real steps
@pytest.mark.parametrize("name", NAMES)
def test_three_optimiser_steps(name):
    method = make(name)
    method.train()
    # all parameters, as a careless loop would pass them: momentum copies must still not move
    if name in {"simclr", "dino", "vicreg", "supervised"}:
        opt = torch.optim.Adam(method.parameters(), lr=1e-3)
    else:
        opt = torch.optim.SGD(method.parameters(), lr=1e-2, momentum=0.9)
    before = momentum_params(method)
    views, labels = views_for(name)
    losses = []
    for step in range(3):
        opt.zero_grad()
        loss, logs = method.training_loss(views, labels)
        assert loss.ndim == 0 and math.isfinite(loss.item())
        assert "loss" in logs and not logs["loss"].requires_grad
        loss.backward()
        grad = method.backbone[-1].weight.grad
        assert grad is not None and grad.abs().sum() > 0, "no gradient reached the backbone"
        for _, target in method.momentum_pairs:
            assert all(p.grad is None for p in getattr(method, target).parameters())
        opt.step()
        losses.append(loss.item())
    # momentum encoders did not move through gradients / the optimiser ...
    for k, p in before.items():
        assert torch.equal(p, dict(momentum_params(method))[k]), k
    # ... only through momentum_update
    method.momentum_update(progress=0.0)
    after = momentum_params(method)
    if name in MOMENTUM:
        assert any(not torch.equal(before[k], after[k]) for k in before)
    else:
        assert not before and not after
    if name in {"simclr", "barlow", "vicreg", "supervised"}:  # a fixed objective on a fixed batch
        assert losses[-1] < losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_one_step_under_bfloat16_autocast(name):
    method = make(name)
    views, labels = views_for(name)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, _ = method.training_loss(views, labels)
    loss.backward()
    assert math.isfinite(loss.item())
    method.momentum_update(0.5)


@pytest.mark.parametrize("name", sorted(MOMENTUM))
def test_momentum_update_is_ema_with_cosine_schedule(name):
    method = make(name)
    with torch.no_grad():
        for p in method.backbone.parameters():
            p.add_(1.0)
    online, target = method.momentum_pairs[0]
    w_o = getattr(method, online)[-1].weight.detach().clone()
    w_t = getattr(method, target)[-1].weight.detach().clone()
    method.momentum_update(progress=1.0)  # m = 1: nothing moves
    assert torch.equal(getattr(method, target)[-1].weight, w_t)
    method.momentum_update(progress=0.5)
    m = cosine_momentum(method.base_momentum, 0.5)
    assert torch.allclose(getattr(method, target)[-1].weight, m * w_t + (1 - m) * w_o)


def test_cosine_momentum_schedule():
    assert cosine_momentum(0.99, 0.0) == pytest.approx(0.99)
    assert cosine_momentum(0.99, 0.5) == pytest.approx(0.995)
    assert cosine_momentum(0.99, 1.0) == pytest.approx(1.0)
    assert cosine_momentum(0.99, 7.0) == pytest.approx(1.0)  # clipped


# ---------------------------------------------------------------- method specifics
def test_dino_teacher_sees_only_global_crops_of_multi_crop():
    method = make("dino", pooled_backbone())
    seen: dict[str, list[tuple[int, ...]]] = {"student": [], "teacher": []}
    method.backbone.register_forward_hook(lambda m, i, o: seen["student"].append(tuple(i[0].shape)))
    method.teacher_backbone.register_forward_hook(lambda m, i, o: seen["teacher"].append(tuple(i[0].shape)))
    g = torch.Generator().manual_seed(1)
    views = [torch.rand(8, 1, 28, 28, generator=g) for _ in range(2)] + [
        torch.rand(8, 1, 14, 14, generator=g) for _ in range(3)
    ]
    center = method.criterion.center.clone()
    loss, _ = method.training_loss(views)
    loss.backward()
    assert seen["teacher"] == [(16, 1, 28, 28)]  # the two global crops, batched together
    assert seen["student"] == [(16, 1, 28, 28), (24, 1, 14, 14)]
    assert not torch.equal(center, method.criterion.center)
    assert math.isfinite(loss.item())


def test_dino_needs_two_views():
    with pytest.raises(ValueError, match="at least 2"):
        make("dino").training_loss(batch(1)[0])


def test_nnclr_fills_support_in_training_only():
    method = make("nnclr")
    views, _ = batch()
    method.train()
    method.training_loss(views)
    assert int(method.support.filled) == 8
    method.eval()
    method.training_loss(views)
    assert int(method.support.filled) == 8


def test_two_view_methods_reject_other_view_counts():
    with pytest.raises(ValueError, match="exactly 2 views"):
        make("simclr").training_loss(batch(3)[0])


def test_supervised_multi_label_and_label_checks():
    torch.manual_seed(0)
    method = build_ssl_method("supervised", tiny_backbone(), num_classes=4, multi_label=True)
    views, _ = batch(2)
    labels = torch.randint(0, 2, (8, 4))
    loss, logs = method.training_loss(views, labels)
    logits = method.logits(views[0]), method.logits(views[1])
    expected = sum(nn.functional.binary_cross_entropy_with_logits(x, labels.float()) for x in logits) / 2
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert 0.0 <= logs["acc"].item() <= 1.0
    with pytest.raises(ValueError, match="labels"):
        method.training_loss(views)
    with pytest.raises(ValueError, match=r"\(8, 4\)"):
        method.training_loss(views, torch.randint(0, 2, (8, 3)))
    single = make("supervised")
    with pytest.raises(ValueError, match=r"\(8,\)"):
        single.training_loss(views, torch.randint(0, 3, (8, 2)))


@pytest.mark.parametrize("name", ["dino", "nnclr", "mocov3"])
def test_state_dict_round_trip(name):
    a, b = make(name), build_ssl_method(name, tiny_backbone(), **TINY[name])
    a.training_loss(views_for(name)[0])  # moves the DINO centre / fills the NNCLR queue
    b.load_state_dict(a.state_dict())
    for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k


# ---------------------------------------------------------------- heads
def test_mlp_head_layout_and_shape_check():
    head = MLPHead(32, 16, 8, num_layers=3, last_bn=True)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert head.mlp[-1].affine is False and head.mlp[-2].bias is None
    assert head(torch.randn(4, 32)).shape == (4, 8)
    assert [type(m).__name__ for m in MLPHead(32, 16, 8, bn=False).mlp] == ["Linear", "ReLU", "Linear"]
    with pytest.raises(ValueError, match=r"\(B, 32\)"):
        head(torch.randn(4, 31))


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_dino_head_weight_normalised_last_layer(norm_last_layer):
    head = DINOHead(32, out_dim=16, hidden_dim=16, bottleneck_dim=8, norm_last_layer=norm_last_layer)
    gain = head.last_layer.parametrizations.weight.original0
    assert gain.requires_grad is (not norm_last_layer)
    assert torch.allclose(head.last_layer.weight.norm(dim=1), torch.ones(16), atol=1e-5)  # unit prototypes
    out = head(torch.randn(4, 32))
    assert out.shape == (4, 16) and out.abs().max() <= 1 + 1e-5  # cosines to unit prototypes


def test_dino_teacher_temperature_warmup_matches_main_dino():
    """main_dino.py: np.concatenate((np.linspace(warmup, T, W), np.ones(E - W) * T))."""
    method = make("dino", teacher_temp=0.07, warmup_teacher_temp=0.04, warmup_teacher_temp_epochs=30)
    want = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(70) * 0.07))
    got = []
    for epoch in range(100):
        method.schedule(epoch)
        got.append(method.criterion.teacher_temp)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    plain = make("dino")  # DINO's defaults: no warm-up, the loss starts at teacher_temp
    assert plain.criterion.teacher_temp == 0.04 and plain.teacher_temp_at(0) == plain.teacher_temp_at(50) == 0.04
    assert make("dino", warmup_teacher_temp=0.02, warmup_teacher_temp_epochs=1).teacher_temp_at(0) == 0.02
    with pytest.raises(ValueError, match="freeze_last_layer"):
        make("dino", freeze_last_layer=-1)


def test_dino_freezes_the_last_layer_for_the_first_epochs():
    method = make("dino", freeze_last_layer=1)
    v = method.head.last_layer.parametrizations.weight.original1
    g = method.head.last_layer.parametrizations.weight.original0
    assert v.requires_grad and not g.requires_grad  # norm_last_layer: the gain is always fixed
    method.schedule(0)
    assert not v.requires_grad and not g.requires_grad
    loss, _ = method.training_loss(views_for("dino")[0])
    loss.backward()
    assert v.grad is None and method.head.mlp[0].weight.grad is not None
    method.schedule(1)
    assert v.requires_grad and not g.requires_grad


def test_dino_use_bn_in_head():
    assert not any(isinstance(m, nn.BatchNorm1d) for m in make("dino").head.modules())
    head = make("dino", use_bn_in_head=True).head
    assert sum(isinstance(m, nn.BatchNorm1d) for m in head.modules()) == 2  # after each hidden Linear (3 layers)


def _layout(head: MLPHead) -> list[str]:
    return [type(m).__name__ for m in head.mlp]


def test_mocov3_heads_and_temperature_follow_the_official_recipe_per_backbone():
    """facebookresearch/moco-v3 (release): MoCo_ResNet = 2-layer projector ending in BN, 2-layer
    predictor WITHOUT the last BN, T = 1.0 (main_moco.py ``--moco-t`` default); MoCo_ViT = 3-layer
    projector, predictor ending in BN, T = 0.2 (CONFIG.md). Every Linear has no bias."""
    from medssl.engines.image_ssl import build_pretrain_model

    cls = SSL_METHODS["mocov3"]
    assert cls.default_kwargs("resnet50") == {"temperature": 1.0, "proj_layers": 2, "predictor_last_bn": False}
    assert cls.default_kwargs("vit_small") == {"temperature": 0.2, "proj_layers": 3, "predictor_last_bn": True}
    res = build_pretrain_model("mocov3", "resnet18", 2, 1)
    assert _layout(res.projector) == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert _layout(res.predictor) == ["Linear", "BatchNorm1d", "ReLU", "Linear"]  # no last BN on a ResNet
    assert res.criterion.temperature == 1.0
    assert all(m.bias is None for m in res.modules() if isinstance(m, nn.Linear))
    vit = build_pretrain_model("mocov3", "vit_small", 2, 1, arch_kwargs={"image_size": 28, "patch_size": 14})
    assert _layout(vit.projector) == ["Linear", "BatchNorm1d", "ReLU"] * 2 + ["Linear", "BatchNorm1d"]
    assert _layout(vit.predictor)[-1] == "BatchNorm1d" and vit.criterion.temperature == 0.2
    # explicit keywords win over the declared defaults; the constructor alone is the ResNet recipe
    assert build_pretrain_model("mocov3", "resnet18", 2, 1, method_kwargs={"temperature": 0.2}).criterion.temperature == 0.2
    plain = make("mocov3")
    assert plain.criterion.temperature == 1.0 and _layout(plain.predictor)[-1] == "Linear"
