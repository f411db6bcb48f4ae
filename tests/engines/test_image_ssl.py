"""The image-SSL pretraining loop on tiny random images: checkpoints, logs, exact resume, backbone
loading, and a method the loop has never seen.

Everything runs with one torch thread (bit-exact resume needs a fixed thread count) on 16-28 px
random uint8 images with batch 16, so the whole file takes well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from medssl.core.weights import adapt_input_channels
from medssl.engines import image_ssl as sp
from medssl.engines import image_ssl_checkpoint as ckpt_io
from medssl.engines.image_ssl import build_pretrain_model, pretrain_ssl
from medssl.engines.image_ssl_checkpoint import init_backbone_weights, load_backbone
from medssl.errors import DataError
from medssl.nets.backbones import build_backbone, default_arch_kwargs

SMALL = {  # shrunk heads: the loop, not the heads, is under test
    "simclr": dict(hidden_dim=32, proj_dim=16),
    "byol": dict(hidden_dim=32, proj_dim=16),
    "dino": dict(out_dim=64, hidden_dim=32, bottleneck_dim=16),
    "supervised": {},
}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def images(n: int = 32, side: int = 16, channels: int = 1, dims: int = 2, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, channels, *(side,) * dims), dtype=torch.uint8, generator=g)


def run(method: str, out, imgs=None, **kw):
    imgs = images() if imgs is None else imgs
    if method == "supervised":
        kw.setdefault("labels", torch.arange(len(imgs)) % 3)
    kw.setdefault("method_kwargs", SMALL[method])
    base = dict(epochs=2, batch_size=16, warmup_epochs=1, progress=False, log_every=1)
    return pretrain_ssl(method, imgs, out, **{**base, **kw})


def log_records(out) -> list[dict]:
    return [json.loads(line) for line in (out / ckpt_io.LOG_NAME).read_text().splitlines()]


@pytest.mark.parametrize("method", ["simclr", "byol", "dino", "supervised"])
def test_pretrain_writes_checkpoint_log_and_loadable_backbone(method, tmp_path):
    path = run(method, tmp_path)
    assert path == tmp_path / "pretrain.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["global_step"] == 4  # 32 images // 16 x 2 epochs
    assert ckpt["meta"] == {
        "method": method,
        "arch": "resnet18",
        "arch_kwargs": {"small_input": True},
        "spatial_dims": 2,
        "in_channels": 1,
        "out_dim": 512,
        "epochs": 2,
        "seed": 0,
    }
    assert set(ckpt) >= {"model", "optimizer", "scheduler", "rng", "backbone", "config"}
    recs = log_records(tmp_path)
    steps = [r for r in recs if r["kind"] == "step"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["epoch"] for r in recs if r["kind"] == "epoch"] == [1, 2]
    assert all(math.isfinite(r["loss"]) and r["images_per_s"] > 0 for r in recs)
    assert steps[0]["lr"] < steps[1]["lr"] and steps[1]["lr"] > steps[3]["lr"]  # warm-up then cosine

    backbone = load_backbone(path)
    assert backbone.out_dim == 512 and not backbone.init_report.skipped
    stored = {k[len("backbone."):]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
    assert stored.keys() == backbone.state_dict().keys()
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in stored.items())


@pytest.mark.parametrize("method", ["byol", "dino"])  # EMA targets; DINO also its centre, multi-crop, clipping
def test_resume_gives_the_uninterrupted_weights(method, tmp_path, monkeypatch):
    imgs = images(side=28)
    straight = torch.load(run(method, tmp_path / "straight", imgs), weights_only=True)

    real_save = ckpt_io.save_checkpoint

    class Killed(Exception):
        pass

    def save_then_die(path, state):
        real_save(path, state)
        raise Killed  # as if the process died right after epoch 1's checkpoint

    monkeypatch.setattr(ckpt_io, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(method, tmp_path / "resumed", imgs)
    monkeypatch.setattr(ckpt_io, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "resumed" / "pretrain.pt", weights_only=True)["epoch"] == 1
    resumed = torch.load(run(method, tmp_path / "resumed", imgs), weights_only=True)

    assert resumed["epoch"] == 2 and resumed["global_step"] == straight["global_step"]
    for key in ("backbone", "model"):
        assert straight[key].keys() == resumed[key].keys()
        diff = [k for k in straight[key] if not torch.equal(straight[key][k], resumed[key][k])]
        assert not diff, f"{key} differs after resume: {diff[:5]}"
    steps = [r["step"] for r in log_records(tmp_path / "resumed") if r["kind"] == "step"]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4]  # no line written twice


def test_resume_of_a_finished_run_and_of_other_settings(tmp_path):
    path = run("simclr", tmp_path, epochs=1)
    mtime = path.stat().st_mtime_ns
    assert run("simclr", tmp_path, epochs=1) == path and path.stat().st_mtime_ns == mtime  # nothing to do
    with pytest.raises(DataError, match="other settings"):
        run("simclr", tmp_path, epochs=1, batch_size=8)
    run("simclr", tmp_path, epochs=1, batch_size=8, resume=False)  # starts over
    assert torch.load(path, weights_only=True)["config"]["batch_size"] == 8


def test_vit_3d_round_trip(tmp_path):
    vols = images(n=16, side=8, dims=3)
    with pytest.warns(RuntimeWarning, match="bf16 training of a 3D network on CPU"):  # precision: bf16 default
        path = run("simclr", tmp_path, vols, arch="vit_small", spatial_dims=3, epochs=1, batch_size=8)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["arch_kwargs"] == {"image_size": 8, "patch_size": 4}
    assert ckpt["config"]["grad_clip"] == 3.0  # "auto" on a ViT
    backbone = load_backbone(path)
    x = torch.rand(2, 1, 8, 8, 8)
    assert backbone.eval()(x).shape == (2, backbone.out_dim)


def test_bad_inputs():
    with pytest.raises(ValueError, match="uint8"):
        pretrain_ssl("simclr", images().float(), "unused")
    with pytest.raises(ValueError, match="spatial axes"):
        pretrain_ssl("simclr", images(), "unused", spatial_dims=3)
    with pytest.raises(ValueError, match="batch_size"):
        pretrain_ssl("simclr", images(n=8), "unused", batch_size=16)
    with pytest.raises(ValueError, match="labels"):
        pretrain_ssl("supervised", images(), "unused", batch_size=16)
    with pytest.raises(ValueError, match="unknown method"):
        pretrain_ssl("simclr2", images(), "unused")


def test_foreign_weights_with_conv1_channel_adaptation(tmp_path):
    torch.manual_seed(1)
    rgb = build_backbone("resnet18", 2, 3, small_input=False).eval()
    with torch.no_grad():  # non-trivial BN statistics, so that buffers are checked too
        for m in rgb.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    sd = {f"module.{k}": v for k, v in rgb.state_dict().items()}  # a DDP-style file with an extra head
    sd["module.fc.weight"] = torch.zeros(10, 512)
    torch.save(sd, tmp_path / "imagenet.pth")

    gray = load_backbone(tmp_path / "imagenet.pth", "resnet18", 2, 1, {"small_input": False}).eval()
    report = gray.init_report
    assert report.adapted == ["conv1.weight"] and report.strip == "module." and not report.skipped
    assert len(report.loaded) == len(rgb.state_dict()) - 1
    assert torch.equal(gray.conv1.weight, rgb.conv1.weight.sum(1, keepdim=True))
    assert "1 with input channels adapted" in str(report)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)

    # the other way: 1 -> 3 channels repeats / 3; a kernel-size mismatch is skipped, not adapted
    assert torch.allclose(adapt_input_channels(gray.conv1.weight, 3).sum(1, keepdim=True), gray.conv1.weight)
    small = build_backbone("resnet18", 2, 1, small_input=True)
    rep = init_backbone_weights(small, tmp_path / "imagenet.pth")
    assert rep.skipped == ["conv1.weight"] and not rep.adapted

    with pytest.raises(DataError, match="give arch"):
        load_backbone(tmp_path / "imagenet.pth")


@pytest.mark.parametrize("freeze, frozen", [(2, True), (0, False)])
def test_dino_last_layer_frozen_through_the_loop(tmp_path, freeze, frozen):
    """While frozen the student's last layer never moves, so the EMA teacher's equals it (to rounding);
    unfrozen it trains and the teacher lags behind. The backbone trains in both cases."""
    kw = {**SMALL["dino"], "freeze_last_layer": freeze}
    model = torch.load(run("dino", tmp_path, method_kwargs=kw), weights_only=True)["model"]
    key = "head.last_layer.parametrizations.weight.original1"
    gap = (model[key] - model["teacher_" + key]).abs().max().item()
    assert (gap < 1e-6) is frozen  # frozen: EMA rounding only (~1e-8); trained: ~1e-4 after 4 small steps
    assert not torch.equal(model["backbone.conv1.weight"], model["teacher_backbone.conv1.weight"])


def test_dino_on_a_resnet_gets_batchnorm_in_its_head():
    def bn_layers(model):
        return sum(isinstance(m, torch.nn.BatchNorm1d) for m in model.head.modules())

    assert bn_layers(build_pretrain_model("dino", "resnet18", 2, 1, {"small_input": True},
                                             method_kwargs=SMALL["dino"])) == 2
    off = {**SMALL["dino"], "use_bn_in_head": False}
    assert bn_layers(build_pretrain_model("dino", "resnet18", 2, 1, {"small_input": True}, method_kwargs=off)) == 0
    vit = build_pretrain_model("dino", "vit_small", 2, 1, default_arch_kwargs("vit_small", 28),
                                  method_kwargs=SMALL["dino"])
    assert bn_layers(vit) == 0  # DINO's ViT default


def test_a_new_method_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    """A method the engine has never seen, registered only here, runs 2 real steps of the loop: the
    loop reads its views, base lr, clipping and constructor defaults from the class."""
    import torch.nn.functional as F
    from torch import nn

    from medssl.methods.image_ssl import SSL_METHODS
    from medssl.methods.image_ssl.base import SSLMethod

    seen = {"views": [], "kwargs": None}

    class ThreeViews(SSLMethod):
        aug_preset = "light"
        base_lr = 0.01
        grad_clip = 1.0

        @classmethod
        def default_kwargs(cls, arch, num_classes=None):
            return {"dim": 4 if arch.startswith("resnet") else 2}

        def __init__(self, backbone, dim=8):
            super().__init__(backbone)
            seen["kwargs"] = dim
            self.head = nn.Linear(self.feature_dim, dim)

        def augmented_views(self, augment, x, generator=None):
            return [augment(x, v % 2, generator) for v in range(3)]

        def training_loss(self, views, labels=None):
            seen["views"].append(len(views))
            z = [F.normalize(self.head(self.backbone(v)), dim=1) for v in views]
            loss = sum(((a - b) ** 2).sum(1).mean() for a, b in zip(z, z[1:]))
            return loss, {"loss": loss.detach()}

    monkeypatch.setitem(SSL_METHODS, "threeviews", ThreeViews)
    torch.manual_seed(0)
    initial = build_backbone("resnet18", 2, 1, small_input=True).state_dict()
    path = pretrain_ssl("threeviews", images(), tmp_path, epochs=1, batch_size=16, warmup_epochs=0, progress=False,
                        log_every=1)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["meta"]["method"] == "threeviews" and ckpt["global_step"] == 2
    assert ckpt["config"]["lr"] == pytest.approx(0.01 * 16 / 256) and ckpt["config"]["grad_clip"] == 1.0
    assert seen == {"views": [3, 3], "kwargs": 4}
    assert any(not torch.equal(initial[k], v) for k, v in ckpt["backbone"].items() if v.is_floating_point())
    assert [r["step"] for r in log_records(tmp_path) if r["kind"] == "step"] == [1, 2]
    assert load_backbone(path).out_dim == 512


def test_the_loop_never_names_a_method():
    """GUIDE item 14: no method name or class appears in the engine's code (docstrings aside)."""
    import ast
    import inspect

    from medssl.methods.image_ssl import SSL_METHODS

    words = set(SSL_METHODS) | {c.__name__ for c in SSL_METHODS.values()}
    for module in (sp, ckpt_io):
        tree = ast.parse(inspect.getsource(module))
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        found = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                found |= {w for w in words if w in node.value.lower().split() or w == node.value}
            elif isinstance(node, ast.Name) and node.id in words:
                found.add(node.id)
            elif isinstance(node, ast.Attribute) and node.attr in words:
                found.add(node.attr)
        assert not found, f"{module.__name__} names {found}"


def test_describe_pretraining_covers_the_code_defaults(monkeypatch):
    """The description (what caches key their results on) changes with a method's declared default,
    a constructor default, the augmentation recipe or the engine's weight decay, and not otherwise."""
    from medssl.methods.image_ssl import MoCoV3, SimCLR
    from medssl.transforms import image_ssl_augment as aug

    def describe(method="mocov3", **kw):
        return sp.describe_pretraining(sp.resolve_settings(method, (32, 1, 16, 16), batch_size=16, **kw))

    base = describe()
    assert base == describe()  # deterministic
    assert base["method_kwargs"]["temperature"] == 1.0 and base["method_kwargs"]["predictor_last_bn"] is False
    assert base["augment"]["preset"] == "mocov3" and base["optimizer"]["lr"] == pytest.approx(1e-3 * 16 / 256)
    with monkeypatch.context() as m:  # a declared default (the ViT recipe on a ResNet)
        m.setattr(MoCoV3, "default_kwargs", classmethod(lambda cls, arch, num_classes=None: {"predictor_last_bn": True}))
        changed = describe()
        assert changed["model"] != base["model"] and changed["method_kwargs"]["predictor_last_bn"] is True
    simclr = describe("simclr")
    with monkeypatch.context() as m:  # a constructor default (projector output 128 -> 64): the structure moves
        m.setattr(SimCLR.__init__, "__defaults__", (512, 64, 0.5))
        assert describe("simclr")["model"] != simclr["model"]
    with monkeypatch.context() as m:  # the augmentation recipe
        m.setitem(aug.PRESETS, "mocov3", {"views": ({"flip_p": 0.5},) * 2})
        assert describe()["augment"] != base["augment"]
    with monkeypatch.context() as m:  # an engine default
        m.setattr(sp, "DEFAULT_WEIGHT_DECAY", 0.1)
        assert describe()["optimizer"]["weight_decay"] == 0.1
    # a shared augmentation for every method: the preset named, not the method's; DINO's local-crop
    # default belongs to its own multi-crop recipe and is not forced onto a two-view preset
    assert describe(augment_preset="simclr")["augment"]["preset"] == "simclr"
    shared = describe("dino", augment_preset="byol")["augment"]
    assert shared["preset"] == "byol" and shared["n_local"] == 0
    assert describe("dino")["augment"]["n_local"] == 8


def test_shared_augmentation_and_epoch_callback(tmp_path):
    seen = []
    path = run("byol", tmp_path, augment_preset="simclr", on_epoch=seen.append)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["config"]["augment_preset"] == "simclr" and len(ckpt["config"]["resolved"]) == 16
    assert [r["epoch"] for r in seen] == [1, 2] and all(r["epochs"] == 2 and r["kind"] == "epoch" for r in seen)
