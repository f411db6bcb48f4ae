"""Self-supervised (and supervised-baseline) pretraining of a backbone on in-memory images.

``pretrain_ssl("simclr", images, out)`` trains one of ``medssl.methods.ssl.SSL_METHODS`` on a
whole uint8 image tensor (one or several MedMNIST training splits) and writes ``out/pretrain.pt``;
:func:`load_backbone` rebuilds the pretrained backbone from that file (or initialises one from a
foreign state_dict such as ImageNet ResNet weights).

Why a plain PyTorch loop and not Lightning (as ``medssl.engines.train``): the data is ONE uint8
tensor in memory (BreastMNIST's 546 training images are 0.4 MB, even a 224 px split fits in RAM),
so there is no Dataset, no workers and no per-sample transform. A step indexes a batch from the
tensor (``images[perm[i:i + B]]``), moves those uint8 bytes to the device and augments the whole
batch there in a few vectorised calls (:class:`~medssl.transforms.ssl_augment.SSLAugment`). A
per-sample Dataset + DataLoader would add Python work per image, and Lightning's machinery
(loops, hooks, logger connectors) would add nothing this loop needs. The loop is short enough to
read in one screen: per-epoch seeded permutation, batched augmentation, bf16 autocast,
channels-last, AdamW with warm-up + cosine per step, the methods' EMA update after every step, an
atomic checkpoint after every epoch, exact resume.

Per-step work is in two public functions, :func:`make_views` (uint8 batch -> augmented views on
the device) and :func:`train_step` (views -> forward, backward, optimiser step), so that
``benchmarks/bench_ssl_pipeline.py`` times exactly the engine's step with real data and with a
pre-made batch (GUIDE section 2, item 13).

Files in ``out_dir``:

* ``pretrain.pt``: written atomically at the end of every epoch (``torch.save`` to a temporary
  file + ``os.replace``): ``model`` (the whole method: backbone, heads, EMA targets, DINO's centre,
  NNCLR's queue), ``optimizer``, ``scheduler``, ``epoch`` (completed epochs), ``global_step``,
  ``rng`` (the global torch RNG states), ``backbone`` (the backbone's state_dict, sharing storage
  with ``model`` in the file) and ``meta`` (method, arch, arch_kwargs, spatial_dims, in_channels,
  out_dim, epochs, seed) plus ``config`` (the other settings, checked on resume). Only tensors and
  plain values: it loads with ``torch.load(weights_only=True)``.
* ``pretrain_log.jsonl``: one line every ``log_every`` steps (``kind: "step"``) and one per epoch
  (``kind: "epoch"``, mean loss), each with epoch, step, loss, lr and images/s (images, not views,
  per second). On resume the lines after the checkpoint's step are dropped.

Multi-domain pretraining on a union of datasets with 1 and 3 channels: :func:`union_images`
repeats grayscale images to 3 channels (:func:`to_channels`) and concatenates, so one RGB-input
backbone sees every domain; a grayscale image repeated to RGB is what an ImageNet-pretrained
network is usually fed, and its colour jitter then acts as brightness/contrast only.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from medssl.core.runtime import autocast, memory_format_for, warn_bf16_conv3d_on_cpu
from medssl.core.schedules import lr_factor
from medssl.errors import DataError, TrainingDiverged
from medssl.nets.backbones import ARCHS, build_backbone, default_arch_kwargs

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "pretrain.pt"
LOG_NAME = "pretrain_log.jsonl"
FORMAT = "medssl-ssl-pretrain/1"


#: AdamW learning rate per 256 images, per method; the default lr is ``BASE_LR * batch / 256``
#: (the linear scaling rule of Goyal et al. 2017, as SimCLR, BYOL, DINO and MoCo v3 state their
#: rates). 1e-3 is Adam's usual rate and the MedMNIST v2 reference scripts' (Adam, batch 128);
#: DINO's paper rate is 5e-4 (AdamW, ViT); MoCo v3 uses 1.5e-4 for ViTs with AdamW (applied
#: when ``arch`` is a ViT). These are starting points for small images, not tuned per dataset.
BASE_LR = {
    "simclr": 1e-3,
    "mocov3": 1e-3,
    "byol": 1e-3,
    "simsiam": 1e-3,
    "dino": 5e-4,
    "barlow": 1e-3,
    "vicreg": 1e-3,
    "nnclr": 1e-3,
    "supervised": 1e-3,
}
#: AdamW weight decay (decoupled), applied to weights only: biases and normalisation parameters
#: (every parameter with fewer than 2 dimensions) get none, as DINO's ``get_params_groups``.
#: 0.05 is DeiT's value and within DINO's 0.04-0.4 range.
DEFAULT_WEIGHT_DECAY = 0.05
#: Gradient-norm clipping used with ``grad_clip="auto"`` for DINO and ViTs (DINO's ``clip_grad 3.0``).
DINO_VIT_CLIP = 3.0


# ----------------------------------------------------------------------------------- helpers
def default_lr(method: str, arch: str, batch_size: int) -> float:
    """AdamW learning rate: :data:`BASE_LR` (MoCo v3 on a ViT: 1.5e-4) times ``batch_size / 256``."""
    base = 1.5e-4 if (method == "mocov3" and arch.startswith("vit")) else BASE_LR.get(method, 1e-3)
    return base * batch_size / 256


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """LR factor of optimiser step ``step``: :func:`medssl.core.schedules.lr_factor` (cosine)."""
    return lr_factor(step, total_steps, warmup_steps, "cosine")


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
    """The method (``build_ssl_method``) around a fresh backbone (:func:`build_backbone`); DINO on a
    ResNet gets BatchNorm in its head unless ``method_kwargs`` says otherwise."""
    from medssl.methods.ssl import build_ssl_method

    kwargs = dict(method_kwargs or {})
    if method == "supervised" and num_classes is not None:
        kwargs.setdefault("num_classes", int(num_classes))
    if method == "dino" and arch.startswith("resnet"):
        # A random-init ResNet's post-ReLU features share one direction (mean pairwise cosine of the
        # head's bottleneck 0.91 on BreastMNIST), so the centred teacher starts almost uniform and DINO
        # collapses (loss = ln K); BatchNorm in the head removes that (cosine 0.17). Measured on
        # BreastMNIST, linear probe at 10 % labels: test AUROC 0.734 without, 0.790 with.
        kwargs.setdefault("use_bn_in_head", True)
    backbone = build_backbone(arch, spatial_dims, in_channels, **(arch_kwargs or {}))
    return build_ssl_method(method, backbone, **kwargs)


def make_views(
    model: nn.Module, augment: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
) -> list[torch.Tensor]:
    """Augmented views of a uint8 batch, the kind the method expects, on ``x``'s device.

    DINO (an ``augment`` with local crops): ``multi_crop`` (2 globals first, then the locals);
    the supervised baseline: ONE view (``augment(x, 0)``: a supervised step sees each image once);
    every other method: ``two_views``.

    Args:
        model: the method (only its kind is looked at).
        augment: :class:`~medssl.transforms.ssl_augment.SSLAugment` of the method's preset.
        x: ``(B, C, *spatial)`` uint8 batch, already on the training device.
        generator: random generator (on a CUDA batch a CUDA generator avoids host draws).

    Returns:
        List of float32 ``(B, C, *spatial_v)`` views.
    """
    from medssl.methods.ssl import Supervised

    if getattr(augment, "n_local", 0):
        return augment.multi_crop(x, generator)
    if isinstance(model, Supervised):
        return [augment(x, 0, generator)]
    return list(augment.two_views(x, generator))


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
        labels: ``(B,)`` / ``(B, K)`` targets for the supervised baseline, else ``None``.
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


# ------------------------------------------------------------------------------- checkpoint
def _save_checkpoint(path: Path, state: dict) -> None:
    from medssl.core.atomic import save_torch_atomic as save_checkpoint_atomic

    save_checkpoint_atomic(state, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop the log lines after ``step`` (a resumed run rewrites them)."""
    if not path.exists():
        return
    from medssl.core.atomic import write_atomic_text

    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if line.strip() and json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue  # a line cut by a kill
    write_atomic_text(path, "".join(k + "\n" for k in keep))


def _check_resume(ckpt: dict, meta: dict, config: dict, path: Path) -> None:
    if ckpt.get("format") != FORMAT:
        raise DataError(
            f"not a medssl pretraining checkpoint (format {ckpt.get('format')!r}); use resume=False or another out_dir",
            path,
        )
    diff = [k for k in meta if ckpt["meta"].get(k) != meta[k]]
    diff += [k for k in config if ckpt["config"].get(k) != config[k]]
    if diff:
        was = {k: ckpt["meta"].get(k, ckpt["config"].get(k)) for k in diff}
        now = {k: meta.get(k, config.get(k)) for k in diff}
        raise DataError(
            f"cannot resume: the checkpoint was made with other settings ({was} now {now}); the schedule and data "
            "order depend on them. Use resume=False to start over, or another out_dir",
            path,
        )


def _jsonable(value: Any) -> Any:
    """``value`` if it survives a JSON round trip unchanged in kind (so weights_only can load it), else its repr."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


# ------------------------------------------------------------------------------------ train
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
) -> Path:
    """Pretrain a backbone with an SSL method (or the supervised baseline) on in-memory images.

    Each epoch: a permutation of the N images from a generator seeded by ``(seed, epoch)``;
    ``N // batch_size`` steps (drop_last), each indexing ``images[perm[...]]`` (uint8), moving it
    to the device and augmenting the whole batch there with the method's preset
    (``model.aug_preset``: two views, or DINO's multi-crop with the global crops first), then
    :func:`train_step`; the LR follows :func:`warmup_cosine` per step and the method's EMA encoder
    (BYOL, MoCo v3, DINO) is updated after every step with ``progress = step / total_steps``.
    A checkpoint is written atomically after every epoch (see the module docstring).

    Determinism: with the same settings, device and thread count, a run resumed from any epoch
    ends with the same weights as an uninterrupted one (the data order and augmentations are
    re-seeded per epoch, the global RNG state is restored); checked on CPU with one thread.

    Args:
        method: a key of ``medssl.methods.ssl.SSL_METHODS``.
        images: uint8 ``(N, C, H, W)`` (2D) or ``(N, C, D, H, W)`` (3D), e.g.
            ``load_medmnist(flag).images`` or :func:`union_images` of several.
        out_dir: folder for ``pretrain.pt`` and ``pretrain_log.jsonl`` (created).
        arch: ``"resnet18"``, ``"resnet50"`` or ``"vit_small"`` (:func:`build_backbone`).
        spatial_dims: 2 or 3.
        epochs: passes over the images.
        batch_size: images per step (each gives 2 views, or 2 + n_local crops for DINO).
        lr: AdamW peak learning rate; ``None``: :func:`default_lr` (``BASE_LR[method] * batch / 256``).
        weight_decay: AdamW weight decay on weights (not biases / norms); ``None``: 0.05.
        warmup_epochs: linear warm-up length (clipped to ``epochs``, with a warning).
        precision: ``"bf16"`` (autocast on CPU and CUDA; about 2x on this CPU, GUIDE section 3) or ``"32"``.
        channels_last: model and views in ``channels_last`` (``channels_last_3d`` in 3D).
        seed: seeds the initialisation, the data order and the augmentations.
        resume: continue from ``out_dir/pretrain.pt`` if present (same settings required);
            ``False`` starts over and overwrites it.
        progress: show a tqdm bar over the steps (loss, img/s).
        labels: ``(N,)`` class indices or ``(N, K)`` multi-label targets; used only by
            ``method="supervised"`` (required there), ignored by the SSL methods.
        num_classes: supervised classes; ``None``: ``labels.max() + 1``, or ``K`` for
            multi-label ``(N, K)`` labels (then ``multi_label=True`` unless given).
        method_kwargs: keywords of the method class (e.g. ``{"temperature": 0.2}``).
        arch_kwargs: backbone keywords; ``None``: :func:`default_arch_kwargs` for the image side.
        augment_kwargs: keywords of :class:`~medssl.transforms.ssl_augment.SSLAugment` (e.g.
            ``{"n_local": 6}``); for DINO the local-crop side defaults to 3/7 of the image side
            (12 px at 28, DINO's 96/224), a multiple of the ViT patch.
        grad_clip: gradient-norm clip; ``"auto"``: 3.0 for DINO or a ViT (DINO's), else none.
        device: ``None``: CUDA if available, else CPU.
        log_every: steps between ``kind: "step"`` log lines (and progress-bar updates).

    Returns:
        The checkpoint path ``out_dir/pretrain.pt``.

    Raises:
        ValueError: bad arguments (dtype, shape, unknown method/arch/precision, too few images).
        DataError: resuming from a checkpoint made with other settings, or an unreadable one.
        FloatingPointError: the loss became NaN/inf (the last good checkpoint is kept).
    """
    from tqdm.auto import tqdm

    from medssl.core.runtime import tune_allocator
    from medssl.methods.ssl import SSL_METHODS
    from medssl.transforms.ssl_augment import SSLAugment

    tune_allocator()
    # ------------------------------------------------------------------ checks and settings
    if method not in SSL_METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(SSL_METHODS)}")
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
    kwargs = dict(method_kwargs or {})
    if method == "supervised":
        if labels is None or len(labels) != n:
            raise ValueError(f"method 'supervised' needs labels for the {n} images")
        labels = torch.as_tensor(labels)
        if labels.ndim == 2 and labels.shape[1] > 1:
            num_classes = int(labels.shape[1]) if num_classes is None else num_classes
            kwargs.setdefault("multi_label", True)
        elif num_classes is None:
            num_classes = int(labels.max()) + 1
    else:
        labels = None
    in_channels = int(images.shape[1])
    image_size = int(images.shape[-1])
    arch_kwargs = dict(arch_kwargs) if arch_kwargs is not None else default_arch_kwargs(arch, image_size)
    dev = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    lr = default_lr(method, arch, batch_size) if lr is None else float(lr)
    weight_decay = DEFAULT_WEIGHT_DECAY if weight_decay is None else float(weight_decay)
    if grad_clip == "auto":
        grad_clip = DINO_VIT_CLIP if (method == "dino" or arch.startswith("vit")) else None
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
    ckpt_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME

    # ---------------------------------------------------------------------- model and state
    torch.manual_seed(seed)
    model = build_pretrain_model(method, arch, spatial_dims, in_channels, arch_kwargs, num_classes, kwargs)
    aug_kw = dict(augment_kwargs or {})
    if model.aug_preset == "dino" and "local_size" not in aug_kw:
        patch = int(arch_kwargs.get("patch_size", 1))
        aug_kw["local_size"] = max(patch, round(image_size * 3 / 7 / patch) * patch)
    augment = SSLAugment(model.aug_preset, spatial_dims=spatial_dims, **aug_kw)
    fmt = memory_format_for(spatial_dims) if channels_last else None
    model.to(dev)
    if fmt is not None:
        model.to(memory_format=fmt)
    model.train()
    optimizer = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, warmup_steps, total_steps))

    meta = {
        "method": method,
        "arch": arch,
        "arch_kwargs": arch_kwargs,
        "spatial_dims": spatial_dims,
        "in_channels": in_channels,
        "out_dim": int(model.backbone.out_dim),
        "epochs": epochs,
        "seed": seed,
    }
    config = {
        "n_images": n,
        "image_shape": [int(s) for s in images.shape[1:]],
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "precision": precision,
        "channels_last": channels_last,
        "grad_clip": grad_clip,
        "num_classes": num_classes,
        "method_kwargs": _jsonable(kwargs),
        "augment_kwargs": _jsonable(aug_kw),
    }
    start_epoch, global_step = 0, 0
    if resume and ckpt_path.exists():
        from medssl.core.weights import load_checkpoint

        ckpt = load_checkpoint(ckpt_path)  # torch.load(weights_only=True)
        _check_resume(ckpt, meta, config, ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["rng"]["torch"])
        if dev.type == "cuda" and ckpt["rng"].get("cuda"):
            torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])
        start_epoch, global_step = int(ckpt["epoch"]), int(ckpt["global_step"])
        del ckpt
        log.info("resuming %s from epoch %d (step %d)", ckpt_path, start_epoch, global_step)
        if start_epoch >= epochs:
            return ckpt_path
    _truncate_log(log_path, global_step)

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
                    views = make_views(model, augment, x, gen_aug)
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
                        rec = {
                            "kind": "step", "epoch": epoch + 1, "step": global_step, "loss": value, "lr": step_lr,
                            "images_per_s": round(ips, 2),
                        }
                        if global_step % log_every == 0:
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
                state = {
                    "format": FORMAT,
                    "meta": meta,
                    "config": config,
                    "epoch": epoch + 1,
                    "global_step": global_step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng,
                    "backbone": model.backbone.state_dict(),  # shares storage with "model" in the file
                }
                _save_checkpoint(ckpt_path, state)
                rec = {
                    "kind": "epoch",
                    "epoch": epoch + 1,
                    "step": global_step,
                    "loss": mean_loss,
                    "lr": step_lr,
                    "images_per_s": round(steps_per_epoch * batch_size / max(elapsed, 1e-9), 2),
                    "time_s": round(elapsed, 3),
                }
                logf.write(json.dumps(rec) + "\n")
                logf.flush()
    finally:
        bar.close()
    return ckpt_path


# ----------------------------------------------------------------------------- load / init
@dataclass
class WeightsReport:
    """What :func:`init_backbone_weights` copied: target state_dict names (parameters and buffers)."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    strip: str = ""

    @property
    def total(self) -> int:
        return len(self.loaded) + len(self.adapted) + len(self.skipped)

    def __str__(self) -> str:
        s = f"{len(self.loaded) + len(self.adapted)}/{self.total} tensors matched"
        if self.adapted:
            s += f" ({len(self.adapted)} with input channels adapted: {', '.join(self.adapted)})"
        if self.strip:
            s += f", source prefix {self.strip!r} stripped"
        if self.skipped:
            more = ", ..." if len(self.skipped) > 5 else ""
            s += f"; {len(self.skipped)} left at their initialisation ({', '.join(self.skipped[:5])}{more})"
        return s


#: key prefixes tried when matching a foreign state_dict (DDP, Lightning modules, SSL wrappers)
_PREFIXES = (
    "", "module.", "backbone.", "model.", "encoder.", "net.", "model.backbone.", "module.backbone.", "module.encoder."
)


def adapt_input_channels(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A first-layer conv weight ``(O, C_src, *k)`` for ``in_channels`` inputs.

    ``C_src -> 1``: sum over the input channels, so a grayscale image ``g`` gives the response
    the source network gave to ``g`` repeated on every channel (timm's ``adapt_input_conv``).
    ``1 -> C``: repeat divided by ``C``, so an image repeated on ``C`` channels gives the source's
    response again.

    Raises:
        ValueError: neither side has one channel (and they differ).
    """
    c = weight.shape[1]
    if c == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if c == 1:
        return weight.repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels
    raise ValueError(f"cannot adapt a {c}-channel input layer to {in_channels} channels")


def init_backbone_weights(backbone: nn.Module, checkpoint: str | Path, strip: str | None = None) -> WeightsReport:
    """Initialise ``backbone`` from a foreign checkpoint: every tensor whose name and shape match.

    For ``init: checkpoint`` with weights a user has, e.g. an ImageNet ResNet-18/50 state_dict
    (MONAI's ResNet uses torchvision's parameter names), a Lightning checkpoint or a DDP
    ``module.``-prefixed dict. Matching tensors are copied by
    :func:`medssl.engines.checkpoint.load_matching_weights` (loaded weights-only); the input layer
    (the backbone's first conv weight) is then adapted if only its input-channel count differs
    (:func:`adapt_input_channels`: a 3-channel conv1 into a 1-channel backbone is summed over
    the input channels). The file is read twice (once here to pick the key prefix and the input
    layer, once by ``load_matching_weights``): a one-off cost.

    Args:
        backbone: the module to initialise.
        checkpoint: a ``.pt``/``.pth``/``.ckpt`` file (bare state_dict or ``{"state_dict": ...}``).
        strip: key prefix to remove from the source; ``None``: the one of ``"", "module.",
            "backbone.", "model.", "encoder.", ...`` under which most names match.

    Returns:
        A :class:`WeightsReport` (also logged at INFO level).

    Raises:
        DataError: unreadable file, or no tensor matched.
    """
    from medssl.core.weights import load_checkpoint, load_matching_weights, state_dict_of

    path = Path(checkpoint)
    raw = load_checkpoint(path)
    src = state_dict_of(raw) if isinstance(raw, dict) else {}
    target = backbone.state_dict()
    if strip is None:
        def hits(prefix: str) -> int:
            return sum(1 for k in src if k.startswith(prefix) and k[len(prefix):] in target)

        strip = max(_PREFIXES, key=hits)  # first (shortest) wins ties
    src = {k[len(strip):]: v for k, v in src.items() if k.startswith(strip)}
    convs = (name for name, m in backbone.named_modules() if isinstance(m, nn.modules.conv._ConvNd))
    stem = next((f"{name}.weight" if name else "weight" for name in convs), None)  # the input layer
    adapted: dict[str, torch.Tensor] = {}
    if stem is not None and stem in src:
        s, t = src[stem], target[stem]
        if s.ndim == t.ndim and s.shape != t.shape and s.shape[:1] + s.shape[2:] == t.shape[:1] + t.shape[2:]:
            try:
                adapted[stem] = adapt_input_channels(s, t.shape[1])
            except ValueError:
                pass
    del raw
    try:
        loaded, skipped = load_matching_weights(backbone, path, prefix=strip, strip=strip)
    except DataError:
        if not adapted:
            raise
        loaded, skipped = [], list(target)
    if adapted:
        backbone.load_state_dict({k: v.to(target[k].dtype) for k, v in adapted.items()}, strict=False)
        skipped = [k for k in skipped if k not in adapted]
    report = WeightsReport(loaded=loaded, adapted=list(adapted), skipped=skipped, strip=strip)
    log.info("initialised %s from %s: %s", type(backbone).__name__, path, report)
    return report


def load_backbone(
    checkpoint: str | Path,
    arch: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    arch_kwargs: dict | None = None,
    strict: bool = True,
) -> nn.Module:
    """The backbone of a pretraining checkpoint, or a fresh one initialised from a foreign file.

    * A :func:`pretrain_ssl` checkpoint: the backbone is rebuilt from its ``meta`` (arch, its
      keywords, spatial_dims, in_channels) and its ``"backbone"`` weights are loaded (the file is
      read with ``weights_only=True``); ``arch`` etc. must then be ``None`` or agree.
    * Any other file (bare state_dict, Lightning or DDP checkpoint, ImageNet weights): give
      ``arch``, ``spatial_dims`` and ``in_channels``; the backbone is built with
      :func:`build_backbone` and initialised by :func:`init_backbone_weights` (matching names and
      shapes, input-channel adaptation of the first conv).

    The returned module has ``out_dim`` and an ``init_report`` (:class:`WeightsReport`).

    Args:
        checkpoint: the file.
        arch, spatial_dims, in_channels, arch_kwargs: the backbone to build for a foreign file
            (``arch_kwargs`` default: ``small_input=True`` for ResNets, 28 px / patch 4 for the ViT).
        strict: for a pretraining checkpoint, require every backbone tensor (``load_state_dict(strict=True)``).

    Raises:
        DataError: unreadable file, missing settings for a foreign file, settings that contradict
            the checkpoint's, or no tensor matched.
    """
    from medssl.core.weights import load_checkpoint

    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("meta"), dict) and isinstance(ckpt.get("backbone"), dict):
        meta = ckpt["meta"]
        given = {"arch": arch, "spatial_dims": spatial_dims, "in_channels": in_channels}
        clash = {k: (v, meta[k]) for k, v in given.items() if v is not None and v != meta[k]}
        if clash:
            raise DataError(f"the checkpoint's backbone differs from the one asked for ({clash}: asked, stored)", path)
        arch_kw = meta.get("arch_kwargs", {})
        backbone = build_backbone(meta["arch"], meta["spatial_dims"], meta["in_channels"], **arch_kw)
        result = backbone.load_state_dict(ckpt["backbone"], strict=strict)
        missing = list(getattr(result, "missing_keys", []))
        loaded = [k for k in backbone.state_dict() if k not in missing]
        backbone.init_report = WeightsReport(loaded=loaded, skipped=missing)
        return backbone
    del ckpt
    if arch is None or spatial_dims is None or in_channels is None:
        raise DataError(
            "not a medssl pretraining checkpoint (no 'meta'/'backbone'): give arch, spatial_dims and in_channels "
            "to initialise a backbone from its matching weights",
            path,
        )
    backbone = build_backbone(arch, spatial_dims, in_channels, **(arch_kwargs or {}))
    backbone.init_report = init_backbone_weights(backbone, path)
    return backbone


__all__ = [
    "ARCHS",
    "BASE_LR",
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "WeightsReport",
    "adapt_input_channels",
    "autocast",
    "build_backbone",
    "build_pretrain_model",
    "default_arch_kwargs",
    "default_lr",
    "init_backbone_weights",
    "load_backbone",
    "make_views",
    "memory_format_for",
    "pretrain_ssl",
    "train_step",
    "warmup_cosine",
]
