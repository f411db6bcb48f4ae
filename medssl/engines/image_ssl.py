"""The image-level SSL pretraining loop (and the supervised baseline's) on in-memory images.

``pretrain_ssl("simclr", images, out)`` trains one of ``medssl.methods.image_ssl.SSL_METHODS`` on
a whole uint8 image tensor (one or several MedMNIST training splits) and writes
``out/pretrain.pt`` and ``out/pretrain_log.jsonl`` (:mod:`medssl.engines.image_ssl_checkpoint`,
which also reads a backbone back: :func:`~medssl.engines.image_ssl_checkpoint.load_backbone`).

This module is the loop only. What a method needs is declared on its class and read here, never
by its name (GUIDE item 14): the augmentation preset and the views it trains on
(``augmented_views``: two views, multi-crop, one view), its base learning rate, gradient clipping,
constructor defaults that depend on the architecture or the labels, whether it uses labels. A new
method is one file plus one registry line (tested with a method registered only in the test).

Why a plain PyTorch loop and not Lightning (as ``medssl.engines.train``): the data is ONE uint8
tensor in memory (BreastMNIST's 546 training images are 0.4 MB, even a 224 px split fits in RAM),
so there is no Dataset, no workers and no per-sample transform. A step indexes a batch from the
tensor (``images[perm[i:i + B]]``), moves those uint8 bytes to the device and augments the whole
batch there in a few vectorised calls (:class:`~medssl.transforms.image_ssl_augment.SSLAugment`). A
per-sample Dataset + DataLoader would add Python work per image, and Lightning's machinery
(loops, hooks, logger connectors) would add nothing this loop needs: per-epoch seeded
permutation, batched augmentation, bf16 autocast, channels-last, AdamW with warm-up + cosine per
step, the methods' EMA update after every step, an atomic checkpoint after every epoch, exact resume.

Lightning Fabric (evaluated, not adopted). Fabric (``lightning_fabric`` 2.6.6, shipped with
pytorch-lightning) would keep this loop and add multi-GPU / multi-node DDP. Measured here with the
step written through it (``fabric.setup``, ``fabric.autocast``, ``fabric.backward``), SimCLR on a
28 px ResNet-18, BreastMNIST batches of 64, bf16-mixed + channels-last, one thread, CPU time of 11
interleaved windows of 4 steps each (the 2 cores were shared with other jobs, so wall time swung
2x): Fabric / plain step-time ratio 0.996 (windows 0.95-1.03), and after 3 identical steps the
weights are bit-identical, so neither cost nor determinism stands in the way. It is not adopted
because what it would add is not correct for these methods without work inside them that a
wrapper cannot do: under DDP every rank would need its own shard of the epoch permutation, DINO's
centre an all-reduce, SimCLR / MoCo v3 / NNCLR their negatives (and NNCLR its queue) gathered
across ranks, the heads SyncBatchNorm, and only rank 0 may write ``pretrain.pt``; and the methods'
entry point is ``training_loss``, not ``forward``, which Fabric runs under its strategy only when
told (``mark_forward_method``). On one device it would be an extra layer with nothing to do.
When multi-GPU SSL is wanted, those collectives come first; Fabric can then replace the four lines
of :func:`train_step` without touching the checkpoint format.

Per-step work is in :func:`train_step` (views -> forward, backward, optimiser step) and the
method's ``augmented_views`` (uint8 batch -> views on the device), so that
``benchmarks/bench_ssl_pipeline.py`` times exactly the engine's step with real data and with a
pre-made batch (GUIDE section 2, item 13).

Every setting a run ends up with, the method's declared defaults included, is resolved in one
place (:func:`resolve_settings`) that both :func:`pretrain_ssl` and :func:`describe_pretraining`
use. :func:`describe_pretraining` turns them into plain data, with a digest of the model built on
the ``meta`` device (module structure and every scalar attribute: head layouts, loss temperature,
EMA momentum), without touching data or weights. Callers that cache results
(:mod:`medssl.medmnist.plan`) put it into their keys, so a changed code default never reuses a
result made under the old one.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import nn

from medssl.core.runtime import autocast, memory_format_for, warn_bf16_conv3d_on_cpu
from medssl.core.schedules import lr_factor
from medssl.engines import image_ssl_checkpoint as ckpt_io
from medssl.errors import TrainingDiverged
from medssl.nets.backbones import ARCHS, build_backbone, default_arch_kwargs

log = logging.getLogger(__name__)

#: AdamW weight decay (decoupled), applied to weights only: biases and normalisation parameters
#: (every parameter with fewer than 2 dimensions) get none, as DINO's ``get_params_groups``.
#: 0.05 is DeiT's value and within DINO's 0.04-0.4 range.
DEFAULT_WEIGHT_DECAY = 0.05


def _method_class(method: str):
    from medssl.methods.image_ssl import SSL_METHODS

    if method not in SSL_METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(SSL_METHODS)}")
    return SSL_METHODS[method]


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def _generator(seed: int, epoch: int, stream: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator seeded from ``(seed, epoch, stream)`` (SeedSequence-mixed): each epoch's
    permutation (stream 0) and augmentation (stream 1) depend on nothing but these numbers, so a
    resumed run draws exactly what an uninterrupted one draws."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(stream)]).generate_state(2, np.uint32)
    g = torch.Generator(device=device)
    g.manual_seed(int(state[0]) << 32 | int(state[1]))
    return g


# ------------------------------------------------------------------------------ model + step
def build_pretrain_model(
    method: str,
    arch: str,
    spatial_dims: int,
    in_channels: int,
    arch_kwargs: dict | None = None,
    num_classes: int | None = None,
    method_kwargs: dict | None = None,
) -> nn.Module:
    """The method around a fresh backbone (:func:`~medssl.nets.backbones.build_backbone`), with the
    keywords the method declares for this architecture and class count (``default_kwargs``, e.g.
    DINO's BatchNorm head on ResNets) under the explicit ``method_kwargs``."""
    cls = _method_class(method)
    kwargs = dict(method_kwargs or {})
    for key, value in cls.default_kwargs(arch, num_classes).items():
        kwargs.setdefault(key, value)
    backbone = build_backbone(arch, spatial_dims, in_channels, **(arch_kwargs or {}))
    return cls(backbone, **kwargs)


@dataclass
class PretrainSettings:
    """Everything a pretraining run uses, after the method's declared defaults are applied.

    ``method_kwargs`` are the keywords the method is built with (explicit ones, those the labels
    imply, then :meth:`~medssl.methods.image_ssl.base.SSLMethod.default_kwargs`); ``augment_kwargs``
    the :class:`~medssl.transforms.image_ssl_augment.SSLAugment` keywords (explicit, then the
    method's ``augment_defaults``).
    """

    method: str
    cls: type
    arch: str
    spatial_dims: int
    in_channels: int
    image_size: int
    n_images: int
    batch_size: int
    epochs: int
    lr: float
    weight_decay: float
    warmup_epochs: int
    grad_clip: float | None
    num_classes: int | None
    precision: str
    channels_last: bool
    seed: int
    method_kwargs: dict = field(default_factory=dict)
    label_kwargs: dict = field(default_factory=dict)
    arch_kwargs: dict = field(default_factory=dict)
    augment_preset: str = ""
    augment_kwargs: dict = field(default_factory=dict)


def resolve_settings(
    method: str,
    image_shape: Sequence[int],
    arch: str = "resnet18",
    spatial_dims: int = 2,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: int = 10,
    precision: str = "bf16",
    channels_last: bool = True,
    seed: int = 0,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    method_kwargs: dict | None = None,
    arch_kwargs: dict | None = None,
    augment_kwargs: dict | None = None,
    augment_preset: str | None = None,
    grad_clip: float | str | None = "auto",
) -> PretrainSettings:
    """The settings of :func:`pretrain_ssl` for images of ``image_shape`` ``(N, C, *spatial)``
    (arguments as there): the method's rate, clip, keywords, augmentation and the backbone's
    keywords, each from the method's declaration where not given."""
    cls = _method_class(method)
    n, in_channels, image_size = int(image_shape[0]), int(image_shape[1]), int(image_shape[-1])
    explicit = dict(method_kwargs or {})
    label_kwargs: dict = {}
    if cls.uses_labels:
        if labels is None or len(labels) != n:
            raise ValueError(f"method {method!r} needs labels for the {n} images")
        num_classes, label_kwargs = cls.label_settings(torch.as_tensor(labels), num_classes)
    kwargs = dict(explicit)
    for key, value in label_kwargs.items():
        kwargs.setdefault(key, value)
    for key, value in cls.default_kwargs(arch, num_classes).items():
        kwargs.setdefault(key, value)
    arch_kwargs = dict(arch_kwargs) if arch_kwargs is not None else default_arch_kwargs(arch, image_size)
    aug_kw = dict(augment_kwargs or {})
    preset = augment_preset or cls.aug_preset
    if preset == cls.aug_preset:  # the method's augment_defaults belong to its own recipe (DINO's local crops)
        for key, value in cls.augment_defaults(image_size, arch_kwargs).items():
            aug_kw.setdefault(key, value)
    return PretrainSettings(
        method=method, cls=cls, arch=arch, spatial_dims=spatial_dims, in_channels=in_channels,
        image_size=image_size, n_images=n, batch_size=batch_size, epochs=epochs,
        lr=cls.default_lr(arch, batch_size) if lr is None else float(lr),
        weight_decay=DEFAULT_WEIGHT_DECAY if weight_decay is None else float(weight_decay),
        warmup_epochs=warmup_epochs,
        grad_clip=cls.default_grad_clip(arch) if grad_clip == "auto" else grad_clip,
        num_classes=num_classes if cls.uses_labels else None, precision=precision, channels_last=channels_last,
        seed=seed, method_kwargs=kwargs, label_kwargs=label_kwargs, arch_kwargs=arch_kwargs,
        augment_preset=preset, augment_kwargs=aug_kw,
    )


def _scalar_attributes(model: nn.Module) -> dict[str, dict]:
    """Per submodule (by name), its public attributes of plain kinds: what ``repr`` may not show
    (a loss's temperature, an EMA start, a queue size)."""
    plain = (bool, int, float, str, type(None))
    out = {}
    for name, module in model.named_modules():
        attrs = {k: v for k, v in vars(module).items()
                 if not k.startswith("_") and k != "training"
                 and (isinstance(v, plain) or (isinstance(v, tuple) and all(isinstance(x, plain) for x in v)))}
        if attrs:
            out[name or "."] = {"class": type(module).__qualname__, **attrs}
    return out


def _init_signature(cls: type) -> dict[str, Any]:
    """The constructor's keyword defaults (``backbone`` left out)."""
    return {k: p.default for k, p in inspect.signature(cls.__init__).parameters.items()
            if p.default is not inspect.Parameter.empty}


def describe_pretraining(settings: PretrainSettings) -> dict:
    """``settings`` as plain data, with the code defaults behind them.

    Returns a JSON-able dict: the method's class and constructor keywords (its signature defaults
    under the resolved ones), the optimiser and schedule, the resolved augmentation recipe
    (``SSLAugment.describe``), the backbone keywords, and ``model``: a digest of the method built
    around a fresh backbone on the ``meta`` device (no memory, no weights): its ``repr`` (layers,
    shapes, BatchNorm placement) and every scalar attribute of every submodule. Anything that
    changes what :func:`pretrain_ssl` would build changes this dict.
    """
    from medssl.transforms.image_ssl_augment import SSLAugment

    st = settings
    with torch.device("meta"):
        model = build_pretrain_model(st.method, st.arch, st.spatial_dims, st.in_channels, st.arch_kwargs,
                                     st.num_classes, st.method_kwargs)
    structure = json.dumps([repr(model), _scalar_attributes(model)], sort_keys=True, default=repr)
    augment = SSLAugment(st.augment_preset, spatial_dims=st.spatial_dims, **st.augment_kwargs)
    return json.loads(json.dumps({
        "method": st.method, "method_class": f"{st.cls.__module__}.{st.cls.__qualname__}",
        "method_kwargs": {**_init_signature(st.cls), **st.method_kwargs},
        "model": hashlib.sha1(structure.encode()).hexdigest()[:16],
        "optimizer": {"name": "AdamW", "lr": st.lr, "weight_decay": st.weight_decay, "no_decay": "ndim < 2",
                      "schedule": "warmup + cosine per step", "warmup_epochs": st.warmup_epochs},
        "grad_clip": st.grad_clip, "arch": st.arch, "arch_kwargs": st.arch_kwargs,
        "augment": augment.describe(), "augment_kwargs": st.augment_kwargs,
        "precision": st.precision, "channels_last": st.channels_last, "batch_size": st.batch_size,
        "epochs": st.epochs, "seed": st.seed, "num_classes": st.num_classes, "image_shape": [
            st.n_images, st.in_channels, *[st.image_size] * st.spatial_dims],
    }, default=repr))


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    views: Sequence[torch.Tensor],
    labels: torch.Tensor | None = None,
    precision: str = "bf16",
    memory_format: torch.memory_format | None = None,
    grad_clip: float | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One optimiser step: views to the model's device and memory format, forward under autocast,
    backward, optional gradient-norm clipping, ``optimizer.step()``.

    Args:
        model: the method (``training_loss(views, labels) -> (loss, logs)``), in train mode.
        optimizer: its optimiser.
        views: ``(B, C, *spatial)`` float views (any device; moved to the model's).
        labels: ``(B,)`` / ``(B, K)`` targets for a method that uses labels, else ``None``.
        precision: ``"bf16"`` (autocast) or ``"32"``.
        memory_format: e.g. ``torch.channels_last``; ``None`` leaves the views as they are.
        grad_clip: max gradient norm, or ``None`` / 0 for no clipping.

    Returns:
        ``(loss, logs)``, detached (no host synchronisation here).
    """
    device = next(model.parameters()).device
    views = [v.to(device, non_blocking=True) for v in views]
    if memory_format is not None:
        views = [v.contiguous(memory_format=memory_format) for v in views]
    if labels is not None:
        labels = labels.to(device, non_blocking=True)
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, precision):
        loss, logs = model.training_loss(views, labels)
    loss.backward()
    if grad_clip:
        torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], grad_clip)
    optimizer.step()
    return loss.detach(), logs


# ------------------------------------------------------------------------------------ train
def _check_inputs(images, arch: str, precision: str, spatial_dims: int, batch_size: int, epochs: int) -> None:
    if arch not in ARCHS:
        raise ValueError(f"unknown arch {arch!r}; available: {', '.join(ARCHS)}")
    if precision not in ("32", "bf16"):
        raise ValueError(f"precision must be '32' or 'bf16', got {precision!r}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images))}")
    if images.ndim != 2 + spatial_dims:
        raise ValueError(
            f"spatial_dims={spatial_dims} needs (N, C, {spatial_dims} spatial axes) images, got {tuple(images.shape)}"
        )
    n = len(images)
    if batch_size < 2 or n < batch_size:
        raise ValueError(f"need 2 <= batch_size <= number of images, got batch_size={batch_size} for {n} images")
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")


def _restore(ckpt_path: Path, meta: dict, config: dict, model, optimizer, scheduler, dev) -> tuple[int, int]:
    """Load the state of ``ckpt_path`` (same settings required); returns ``(epoch, global_step)``."""
    ckpt = ckpt_io.load_checkpoint(ckpt_path)  # torch.load(weights_only=True)
    ckpt_io.check_resume(ckpt, meta, config, ckpt_path)
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if dev.type == "cuda" and ckpt["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
    log.info("resuming %s from epoch %d (step %d)", ckpt_path, int(ckpt["epoch"]), int(ckpt["global_step"]))
    return int(ckpt["epoch"]), int(ckpt["global_step"])


def pretrain_ssl(
    method: str,
    images: torch.Tensor,
    out_dir: str | Path,
    arch: str = "resnet18",
    spatial_dims: int = 2,
    epochs: int = 100,
    batch_size: int = 256,
    lr: float | None = None,
    weight_decay: float | None = None,
    warmup_epochs: int = 10,
    precision: str = "bf16",
    channels_last: bool = True,
    seed: int = 0,
    resume: bool = True,
    progress: bool = True,
    labels: torch.Tensor | None = None,
    num_classes: int | None = None,
    method_kwargs: dict | None = None,
    arch_kwargs: dict | None = None,
    augment_kwargs: dict | None = None,
    grad_clip: float | str | None = "auto",
    device: str | torch.device | None = None,
    log_every: int = 10,
    augment_preset: str | None = None,
    on_epoch: Callable[[dict], None] | None = None,
) -> Path:
    """Pretrain a backbone with an SSL method (or the supervised baseline) on in-memory images.

    Each epoch: a permutation of the N images from a generator seeded by ``(seed, epoch)``;
    ``N // batch_size`` steps (drop_last), each indexing ``images[perm[...]]`` (uint8), moving it
    to the device and augmenting the whole batch there into the method's views
    (``model.augmented_views`` with its ``aug_preset``), then :func:`train_step`; the LR follows
    warm-up + cosine per step (:func:`medssl.core.schedules.lr_factor`) and the method's EMA
    encoder (BYOL, MoCo v3, DINO) is updated after every step with ``progress = step / total_steps``.
    A checkpoint is written atomically after every epoch (:mod:`medssl.engines.image_ssl_checkpoint`);
    ``pretrain_log.jsonl`` gets one line every ``log_every`` steps (``kind: "step"``) and one per
    epoch (``kind: "epoch"``, mean loss), each with epoch, step, loss, lr and images/s (images, not
    views); on resume the lines after the checkpoint's step are dropped.

    Determinism: with the same settings, device and thread count, a run resumed from any epoch
    ends with the same weights as an uninterrupted one (the data order and augmentations are
    re-seeded per epoch, the global RNG state is restored); checked on CPU with one thread.

    Args:
        method: a key of ``medssl.methods.image_ssl.SSL_METHODS``.
        images: uint8 ``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D), e.g.
            ``load_medmnist(flag).images`` or ``medssl.medmnist.channels.union_images`` of several.
        out_dir: folder for ``pretrain.pt`` and ``pretrain_log.jsonl`` (created).
        arch: ``"resnet18"``, ``"resnet50"`` or ``"vit_small"`` (:func:`~medssl.nets.backbones.build_backbone`).
        spatial_dims: 2 or 3.
        epochs: passes over the images.
        batch_size: images per step (each gives the method's views, e.g. 2, or 2 + n_local crops for DINO).
        lr: AdamW peak learning rate; ``None``: the method's ``default_lr`` (``base_lr * batch / 256``).
        weight_decay: AdamW weight decay on weights (not biases / norms); ``None``: 0.05.
        warmup_epochs: linear warm-up length (clipped to ``epochs``, with a warning).
        precision: ``"bf16"`` (autocast on CPU and CUDA; about 2x on this CPU, GUIDE section 3) or ``"32"``.
        channels_last: model and views in ``channels_last`` (``channels_last_3d`` in 3D).
        seed: seeds the initialisation, the data order and the augmentations.
        resume: continue from ``out_dir/pretrain.pt`` if present (same settings required);
            ``False`` starts over and overwrites it.
        progress: show a tqdm bar over the steps (loss, img/s).
        labels: ``(N,)`` class indices or ``(N, K)`` multi-label targets; required by a method that
            ``uses_labels`` (the supervised baseline), ignored by the others.
        num_classes: classes of a method that uses labels; ``None``: from the labels
            (the method's ``label_settings``).
        method_kwargs: keywords of the method class (e.g. ``{"temperature": 0.2}``).
        arch_kwargs: backbone keywords; ``None``: :func:`~medssl.nets.backbones.default_arch_kwargs`.
        augment_kwargs: keywords of :class:`~medssl.transforms.image_ssl_augment.SSLAugment` (e.g.
            ``{"n_local": 6}``) over the method's ``augment_defaults`` (DINO: the local-crop side).
        grad_clip: gradient-norm clip; ``"auto"``: the method's ``default_grad_clip`` (DINO, ViTs: 3.0).
        device: ``None``: CUDA if available, else CPU.
        log_every: steps between ``kind: "step"`` log lines (and progress-bar updates).
        augment_preset: a preset of ``medssl.transforms.image_ssl_augment.PRESETS`` for every
            method alike (a benchmark with one shared augmentation); ``None``: the method's own
            ``aug_preset``. The method's ``augment_defaults`` (DINO's local-crop side) apply to its
            own preset only; a multi-crop method given a preset without local crops trains on the
            two global views.
        on_epoch: called after every epoch with its log record plus ``"epochs"`` (the total), e.g.
            for progress lines when there is no progress bar.

    Returns:
        The checkpoint path ``out_dir/pretrain.pt``.

    Raises:
        ValueError: bad arguments (dtype, shape, unknown method/arch/precision, too few images).
        DataError: resuming from a checkpoint made with other settings, or an unreadable one.
        TrainingDiverged: the loss became NaN/inf (the last good checkpoint is kept).
    """
    from tqdm.auto import tqdm

    from medssl.core.runtime import tune_allocator
    from medssl.transforms.image_ssl_augment import SSLAugment

    tune_allocator()
    # ------------------------------------------------------------------ checks and settings
    _method_class(method)
    _check_inputs(images, arch, precision, spatial_dims, batch_size, epochs)
    st = resolve_settings(
        method, tuple(images.shape), arch=arch, spatial_dims=spatial_dims, epochs=epochs, batch_size=batch_size,
        lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs, precision=precision,
        channels_last=channels_last, seed=seed, labels=labels, num_classes=num_classes, method_kwargs=method_kwargs,
        arch_kwargs=arch_kwargs, augment_kwargs=augment_kwargs, augment_preset=augment_preset, grad_clip=grad_clip,
    )
    cls, n = st.cls, st.n_images
    labels = torch.as_tensor(labels) if cls.uses_labels else None
    in_channels, num_classes = st.in_channels, st.num_classes
    arch_kwargs, aug_kw, lr, weight_decay, grad_clip = st.arch_kwargs, st.augment_kwargs, st.lr, st.weight_decay, st.grad_clip
    kwargs = {k: v for k, v in st.method_kwargs.items() if k in (method_kwargs or {}) or k in st.label_kwargs}
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    steps_per_epoch = n // batch_size
    total_steps = steps_per_epoch * epochs
    if warmup_epochs > epochs:
        warnings.warn(
            f"warmup_epochs={warmup_epochs} > epochs={epochs}: the warm-up is clipped to the whole run", stacklevel=2
        )
    warmup_steps = min(warmup_epochs, epochs) * steps_per_epoch
    warn_bf16_conv3d_on_cpu(dev, spatial_dims, precision)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path, log_path = out / ckpt_io.CHECKPOINT_NAME, out / ckpt_io.LOG_NAME

    # ---------------------------------------------------------------------- model and state
    torch.manual_seed(seed)
    model = build_pretrain_model(method, arch, spatial_dims, in_channels, arch_kwargs, num_classes, kwargs)
    augment = SSLAugment(st.augment_preset, spatial_dims=spatial_dims, **aug_kw)
    fmt = memory_format_for(spatial_dims) if channels_last else None
    model.to(dev)
    if fmt is not None:
        model.to(memory_format=fmt)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup_steps, "cosine")
    )
    meta = {
        "method": method, "arch": arch, "arch_kwargs": arch_kwargs, "spatial_dims": spatial_dims,
        "in_channels": in_channels, "out_dim": int(model.backbone.out_dim), "epochs": epochs, "seed": seed,
    }
    config = {
        "n_images": n, "image_shape": [int(s) for s in images.shape[1:]], "batch_size": batch_size, "lr": lr,
        "weight_decay": weight_decay, "warmup_epochs": warmup_epochs, "precision": precision,
        "channels_last": channels_last, "grad_clip": grad_clip, "num_classes": num_classes,
        "method_kwargs": ckpt_io.jsonable(kwargs), "augment_kwargs": ckpt_io.jsonable(aug_kw),
        "augment_preset": st.augment_preset,
        "resolved": hashlib.sha1(json.dumps(describe_pretraining(st), sort_keys=True).encode()).hexdigest()[:16],
    }
    start_epoch, global_step = 0, 0
    if resume and ckpt_path.exists():
        start_epoch, global_step = _restore(ckpt_path, meta, config, model, optimizer, scheduler, dev)
        if start_epoch >= epochs:
            return ckpt_path
    ckpt_io.truncate_log(log_path, global_step)

    # -------------------------------------------------------------------------------- loop
    bar = tqdm(
        total=total_steps, initial=global_step, disable=not progress, unit="step", desc=f"pretrain {method}",
        dynamic_ncols=True,
    )
    try:
        with log_path.open("a", encoding="utf-8") as logf:
            for epoch in range(start_epoch, epochs):
                model.schedule(epoch)
                perm = torch.randperm(n, generator=_generator(seed, epoch, 0))
                gen_aug = _generator(seed, epoch, 1, dev)
                loss_sum = torch.zeros((), device=dev)
                t_epoch = t_win = time.perf_counter()
                win_steps = 0
                for i in range(steps_per_epoch):
                    idx = perm[i * batch_size : (i + 1) * batch_size]
                    x = images[idx].to(dev, non_blocking=True)
                    y = labels[idx] if labels is not None else None
                    views = model.augmented_views(augment, x, gen_aug)
                    step_lr = optimizer.param_groups[0]["lr"]  # the rate this step uses
                    loss, _ = train_step(model, optimizer, views, y, precision, fmt, grad_clip)
                    scheduler.step()
                    global_step += 1
                    model.momentum_update(global_step / total_steps)
                    loss_sum += loss.float()
                    win_steps += 1
                    if global_step % log_every == 0 or i == steps_per_epoch - 1:
                        value = float(loss)  # one host sync per log line
                        if not math.isfinite(value):
                            raise TrainingDiverged(
                                f"loss is {value} at epoch {epoch + 1}, step {global_step}: lower the learning rate "
                                f"(now {lr:g}) or use precision='32'; {ckpt_path.name} keeps the last good epoch"
                            )
                        now = time.perf_counter()
                        ips = win_steps * batch_size / max(now - t_win, 1e-9)
                        t_win, win_steps = now, 0
                        if global_step % log_every == 0:
                            rec = {"kind": "step", "epoch": epoch + 1, "step": global_step, "loss": value,
                                   "lr": step_lr, "images_per_s": round(ips, 2)}
                            logf.write(json.dumps(rec) + "\n")
                        bar.set_postfix(loss=f"{value:.4f}", img_s=f"{ips:.0f}", refresh=False)
                    bar.update(1)
                mean_loss = float(loss_sum) / steps_per_epoch
                if not math.isfinite(mean_loss):
                    raise TrainingDiverged(
                        f"mean loss of epoch {epoch + 1} is {mean_loss}; {ckpt_path.name} keeps the last good epoch"
                    )
                elapsed = time.perf_counter() - t_epoch
                rng = {"torch": torch.get_rng_state()}
                if dev.type == "cuda":
                    rng["cuda"] = torch.cuda.get_rng_state_all()
                ckpt_io.save_checkpoint(ckpt_path, {
                    "format": ckpt_io.FORMAT, "meta": meta, "config": config, "epoch": epoch + 1,
                    "global_step": global_step, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": rng,
                    "backbone": model.backbone.state_dict(),  # shares storage with "model" in the file
                })
                rec = {"kind": "epoch", "epoch": epoch + 1, "step": global_step, "loss": mean_loss, "lr": step_lr,
                       "images_per_s": round(steps_per_epoch * batch_size / max(elapsed, 1e-9), 2),
                       "time_s": round(elapsed, 3)}
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
                if on_epoch is not None:
                    on_epoch({**rec, "epochs": epochs})
    finally:
        bar.close()
    return ckpt_path


__all__ = ["DEFAULT_WEIGHT_DECAY", "PretrainSettings", "build_pretrain_model", "describe_pretraining", "pretrain_ssl",
           "resolve_settings", "train_step"]
