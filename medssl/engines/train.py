"""``medssl train``: build data, model and trainer from a typed config; run, resume, report.

Run folder layout::

    OUT/config.yaml          the resolved config (after --set overrides)
    OUT/checkpoints/last.ckpt  written atomically after every validation (resume point)
    OUT/checkpoints/best.ckpt  best mean validation Dice so far
    OUT/metrics.jsonl        training loss / LR every log_every steps, and every validation
    OUT/metrics.json         final validation metrics (mean Dice per class and overall)
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
import warnings
from pathlib import Path

from medssl.config import RunConfig, dump_config
from medssl.errors import ConfigError, DataError


def _rank() -> int:
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # our StepSampler restarts at the restored global step, so a mid-epoch resume is exact
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def prepare_run_dir(cfg: RunConfig, out: Path | None, resume: bool) -> Path:
    """Create (or, with ``resume``, reopen) the run folder; write the resolved config atomically."""
    from medssl.core.atomic import write_atomic_text

    out = Path(out) if out is not None else Path("runs") / cfg.name
    last = out / "checkpoints" / "last.ckpt"
    if _rank() == 0:
        if last.exists() and not resume:
            raise DataError("this run folder already has checkpoints: add --resume to continue it, or choose another --out", out)
        if resume and (out / "config.yaml").exists():
            old = (out / "config.yaml").read_text()
            if old != dump_config(cfg):
                logging.getLogger("medssl").warning("config differs from the one the run started with; using the new one")
        out.mkdir(parents=True, exist_ok=True)
        write_atomic_text(out / "config.yaml", dump_config(cfg))
    return out


def build_cases(cfg: RunConfig):
    """Training and validation cases of the dataset named by ``cfg.data``."""
    from medssl.data.dataset import list_cases, read_dataset_json

    root = cfg.data.root
    spec = read_dataset_json(root)
    train = [c for c in list_cases(root, "train", spec) if c.label is not None]
    if not train:
        raise DataError("no labeled training cases (imagesTr/ + labelsTr/); run `medssl data check` on it", root)
    if cfg.data.num_labeled is not None:
        if cfg.data.num_labeled > len(train):
            raise ConfigError(f"data.num_labeled={cfg.data.num_labeled} but {root} has only {len(train)} labeled cases")
        if cfg.data.labeled_seed is None:
            train = train[: cfg.data.num_labeled]
        else:  # which cases are labeled is part of the experiment: draw them reproducibly
            import numpy as np

            pick = np.random.default_rng(cfg.data.labeled_seed).choice(len(train), cfg.data.num_labeled, replace=False)
            train = [train[i] for i in sorted(pick)]
    if cfg.data.extra_labels is not None:  # reviewed pseudo-labels (accepted / edited cases)
        from medssl.data.manifest import reviewed_cases

        train = train + reviewed_cases(cfg.data.extra_labels)
    val = [c for c in list_cases(root, cfg.val.split, spec) if c.label is not None]
    if not val:
        raise DataError(f"no labeled {cfg.val.split} cases for validation (imagesTs/ + labelsTs/)", root)
    if cfg.val.max_cases:
        val = val[: cfg.val.max_cases]
    return spec, train, val


def build_unlabeled_cases(cfg: RunConfig, exclude: set[str] = frozenset()):
    """Unlabeled cases (imagesUnlabeled/), minus any already used as labeled (reviewed) cases."""
    from medssl.data.dataset import list_cases, read_dataset_json

    cases = list_cases(cfg.data.root, "unlabeled", read_dataset_json(cfg.data.root))
    return [c for c in cases if c.image.resolve() not in exclude]


def warm_cache(cases, cache_dir: Path, progress: bool = True) -> None:
    """Convert every case once into the memory-mapped cache (images, labels, fg locations)."""
    from tqdm.auto import tqdm

    from medssl.data.cache import VolumeCache

    cache = VolumeCache(cache_dir)
    for case in tqdm(cases, desc="caching volumes", disable=not progress, leave=False):
        cache.get(case.image)
        if case.label is not None:
            cache.get(case.label)
            cache.foreground_locations(case.label)


def _common_kwargs(cfg: RunConfig, spec) -> dict:
    return dict(
        num_classes=spec.num_classes, class_names=spec.class_names,
        roi_size=cfg.val.roi_size or cfg.data.patch_size, sw_batch_size=cfg.val.sw_batch_size, overlap=cfg.val.overlap,
        optimizer=cfg.optim.name, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay,
        scheduler=cfg.optim.scheduler, warmup_steps=cfg.optim.warmup_steps, max_steps=cfg.trainer.max_steps,
        extra_state={"config": json.loads(json.dumps(cfg.model_dump(mode="json"))), "dataset": spec.to_json()},
    )


def _build_supervised(cfg: RunConfig, spec):
    from medssl.methods import get_method
    from medssl.nets import build_network

    if cfg.model.name == "multiview_asym_unet":  # one view: the network a contrastive stage pretrains
        net = build_network("multiview_asym_unet", num_views=1, in_channels=1, out_channels=spec.num_classes,
                            channels=cfg.model.channels, dropout=cfg.model.dropout, spatial_dims=3, squeeze_views=True)
    else:
        net = build_network(
            cfg.model.name, spatial_dims=3, in_channels=1, out_channels=spec.num_classes,
            channels=cfg.model.channels, strides=cfg.model.strides, num_res_units=cfg.model.num_res_units,
            dropout=cfg.model.dropout, norm=cfg.model.norm,
        )
    return get_method("supervised")(net=net, **_common_kwargs(cfg, spec))


def _build_contrastive(cfg: RunConfig, spec):
    from medssl.methods import get_method
    from medssl.nets import build_network

    c = cfg.contrastive
    if cfg.model.name != "multiview_asym_unet":
        raise ConfigError("contrastive pretraining needs model.name: multiview_asym_unet (its encoder/decoder "
                          "initialise the supervised and UMCT networks)")
    if c.stage == "local" and cfg.init_from is None:
        raise ConfigError("contrastive.stage=local trains the decoder on a pretrained encoder: set init_from to the "
                          "global stage's checkpoint (runs/<global>/checkpoints/last.ckpt)")
    net = build_network("multiview_asym_unet", num_views=1, in_channels=1, out_channels=spec.num_classes,
                        channels=cfg.model.channels, dropout=cfg.model.dropout, spatial_dims=c.spatial_dims)
    kw = _common_kwargs(cfg, spec)
    for k in ("num_classes", "class_names", "roi_size", "sw_batch_size", "overlap"):
        kw.pop(k)
    return get_method("contrastive")(
        net=net, stage=c.stage, global_loss=c.global_loss, local_loss=c.local_loss, temperature=c.temperature,
        decoder_blocks=c.decoder_blocks,
        num_regions=c.num_regions or (13 if c.spatial_dims == 2 else 35), region_size=c.region_size,
        proj_dim=c.proj_dim, proj_hidden=c.proj_hidden, augment_strength=c.augment_strength, seed=cfg.trainer.seed,
        **kw,
    )


def _build_umct(cfg: RunConfig, spec):
    from medssl.methods import get_method
    from medssl.nets import build_network

    u = cfg.umct
    if len(set(cfg.data.patch_size)) != 1:
        raise ConfigError(f"umct needs cubic patches so that all views share one shape; got data.patch_size={list(cfg.data.patch_size)}")
    if cfg.model.name != "multiview_asym_unet":
        raise ConfigError("umct needs model.name: multiview_asym_unet")
    net = build_network(
        "multiview_asym_unet", num_views=u.num_views, in_channels=1, out_channels=spec.num_classes,
        channels=cfg.model.channels, dropout=cfg.model.dropout, spatial_dims=3,
    )
    if u.init_2d is not None:
        from medssl.core.weights import load_checkpoint
        from medssl.nets.multiview_unet import init_inplane_from_2d

        try:
            loaded, _ = init_inplane_from_2d(net, load_checkpoint(u.init_2d))
        except DataError as exc:
            raise DataError(exc.args[0], u.init_2d) from None
        if _rank() == 0:
            print(f"umct.init_2d {u.init_2d}: {len(loaded)} in-plane tensors initialised from the 2D network")
    return get_method("umct")(
        net=net, num_views=u.num_views, fusion=u.fusion, uncertainty=u.uncertainty, mc_samples=u.mc_samples,
        floor=u.floor, lambda_max=u.lambda_max, rampup_steps=u.rampup_steps, stage1_steps=u.stage1_steps,
        cotrain_loss=u.cotrain_loss, confidence_weighting=u.confidence_weighting, **_common_kwargs(cfg, spec),
    )


#: method name -> builder from the typed config (the only place configs meet method classes)
BUILDERS = {"supervised": _build_supervised, "umct": _build_umct, "contrastive": _build_contrastive}


def build_model(cfg: RunConfig, spec):
    """The method's LightningModule from the config (plain keyword arguments below this point)."""
    return BUILDERS[cfg.method](cfg, spec)


def uses_unlabeled(cfg: RunConfig) -> bool:
    return cfg.method == "umct" and cfg.umct.num_views > 1


def is_pretraining(cfg: RunConfig) -> bool:
    """A self-supervised stage: no labels, no Dice validation; checkpoints every val_every steps."""
    return cfg.method == "contrastive"


def pretraining_cases(cfg: RunConfig):
    """Every training image of the dataset, labeled (labels unused) and unlabeled: the pool of a
    self-supervised stage. Test cases are never used."""
    from medssl.data.dataset import list_cases, read_dataset_json

    spec = read_dataset_json(cfg.data.root)
    cases = list_cases(cfg.data.root, "train", spec) + list_cases(cfg.data.root, "unlabeled", spec)
    cases = [dataclasses.replace(c, label=None) for c in cases]
    if not cases:
        raise DataError("no training images (imagesTr/ or imagesUnlabeled/) for pretraining", cfg.data.root)
    return spec, cases


def run_training(cfg: RunConfig, out: Path | None = None, resume: bool = False) -> dict:
    """Train ``cfg`` into run folder ``out``; returns the final metrics and a one-line summary.

    Deterministic on CPU for a given seed (patches are a function of seed and step; see
    :mod:`medssl.data.seg_dataset`); ``resume`` continues from ``OUT/checkpoints/last.ckpt`` with
    the same optimiser, LR schedule, step and RNG state.
    """
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    _quiet_lightning()  # after the import: Lightning sets its loggers to INFO when imported

    from medssl.core.atomic import write_atomic_text
    from medssl.engines.callbacks import MetricsLog, StepProgressBar
    from medssl.core.weights import init_from_checkpoint
    from medssl.engines.checkpoint import AtomicCheckpointIO
    from medssl.engines.datamodule import PartitionDataModule, SegDataModule

    from medssl.core.runtime import tune_allocator

    tune_allocator()
    t0 = time.time()
    if cfg.init_from is not None and not resume and not Path(cfg.init_from).is_file():
        raise ConfigError(f"init_from {cfg.init_from}: no such checkpoint (run the stage that writes it first, "
                          "or fix the path with --set init_from=...)")
    out = prepare_run_dir(cfg, out, resume)
    tc = cfg.trainer
    if tc.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is available; use --set trainer.accelerator=cpu")
    threads = tc.threads
    if threads is None and tc.accelerator == "cpu" and tc.devices > 1:
        threads = max(1, (os.cpu_count() or 1) // tc.devices)
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(tc.seed, workers=True, verbose=False)

    pretrain = is_pretraining(cfg)
    if pretrain:
        spec, train_cases = pretraining_cases(cfg)
        val_cases = []
    else:
        spec, train_cases, val_cases = build_cases(cfg)
    if not pretrain and tc.devices * tc.num_nodes > len(val_cases):  # every rank must validate at least one case
        raise ConfigError(f"{tc.devices * tc.num_nodes} processes but only {len(val_cases)} validation cases; "
                          "use fewer devices or more test cases")
    unlabeled = build_unlabeled_cases(cfg, {c.image.resolve() for c in train_cases}) if uses_unlabeled(cfg) else []
    if uses_unlabeled(cfg) and not unlabeled:
        raise DataError("umct needs unlabeled images (imagesUnlabeled/) besides any reviewed cases used as labels", cfg.data.root)
    cache_dir = cfg.data.cache_dir or Path(cfg.data.root) / ".medssl_cache"
    warm_cache(train_cases + val_cases + unlabeled, cache_dir, progress=tc.progress and _rank() == 0)

    model = build_model(cfg, spec)
    if cfg.init_from is not None and not resume:
        loaded, skipped, parts = init_from_checkpoint(model.net, cfg.init_from, cfg.init_parts)
        if _rank() == 0:
            under = f" under {parts}" if parts else ""
            print(f"init_from {cfg.init_from}: {len(loaded)} tensors loaded{under}, {len(skipped)} kept from random init")

    ckpt_dir = out / "checkpoints"
    if pretrain:
        c = cfg.contrastive
        dm = PartitionDataModule(
            train_cases, cache_dir, c.spatial_dims, cfg.data.patch_size[: c.spatial_dims], c.num_volumes,
            c.num_partitions, tc.max_steps, seed=tc.seed, intensity=cfg.data.intensity,
            ct_window=cfg.data.ct_window, num_workers=cfg.data.num_workers,
        )
        # no labels, no validation: last.ckpt every val_every steps is the resume point and the result
        ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=tc.val_every,
                                  enable_version_counter=False)
    else:
        dm = SegDataModule(
            train_cases, val_cases, cache_dir, cfg.data.patch_size, cfg.data.batch_size, tc.max_steps,
            seed=tc.seed, fg_fraction=cfg.data.fg_fraction, intensity=cfg.data.intensity,
            ct_window=cfg.data.ct_window, num_workers=cfg.data.num_workers, unlabeled_cases=unlabeled,
        )
        # saved at every validation (the run is one long epoch; validation every val_every steps)
        ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_dice", mode="max", save_top_k=1,
                                  save_last=True, every_n_epochs=1, save_on_train_epoch_end=False,
                                  enable_version_counter=False)
    callbacks = [ckpt_cb, MetricsLog(out / "metrics.jsonl", every=tc.log_every)]
    if tc.progress:
        callbacks.append(StepProgressBar(refresh_rate=max(1, min(10, tc.log_every))))
    val_kwargs = (dict(limit_val_batches=0) if pretrain else
                  dict(val_check_interval=min(tc.val_every, tc.max_steps), check_val_every_n_epoch=None))
    trainer = pl.Trainer(
        default_root_dir=out, max_steps=tc.max_steps, max_epochs=1, **val_kwargs,
        num_sanity_val_steps=0, precision="bf16-mixed" if tc.precision == "bf16" else "32-true",
        accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=tc.strategy, callbacks=callbacks, logger=False, enable_model_summary=False,
        enable_progress_bar=tc.progress, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
        log_every_n_steps=tc.log_every,
    )
    last = ckpt_dir / "last.ckpt"
    ckpt_path = last if resume and last.exists() else None
    if resume and ckpt_path is None and trainer.is_global_zero:
        print(f"no checkpoint in {ckpt_dir}: starting from scratch")
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    if pretrain:
        return _finish_pretraining(cfg, trainer, model, out, last, t0)
    if model.last_val_metrics.get("step") != trainer.global_step:
        trainer.validate(model, datamodule=dm, verbose=False)
    metrics = model.last_val_metrics
    result = {
        "method": cfg.method,
        "step": int(trainer.global_step),
        "dice_mean": metrics.get("val/dice_mean"),
        "dice": {n: metrics.get(f"val/dice_{n}") for n in spec.class_names[1:]},
        "hd95_mean_mm": metrics.get("val/hd95_mean"),
        "hd95_mm": {n: metrics.get(f"val/hd95_{n}") for n in spec.class_names[1:]},
        "n_val_cases": metrics.get("n_cases"),
        "val_split": cfg.val.split,
        "checkpoint": str(last),
        "best_checkpoint": str(ckpt_dir / "best.ckpt"),
        "wall_time_s": round(time.time() - t0, 1),
        "rank": trainer.global_rank,
    }
    # last.ckpt was written before the final validation when max_steps isn't a multiple of
    # val_every; save again (a collective call under DDP: every rank must make it).
    trainer.save_checkpoint(last, weights_only=False)  # full state (loops, optimiser) for --resume
    if trainer.is_global_zero:
        write_atomic_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    per_class = ", ".join(f"{n} {v:.3f}" for n, v in result["dice"].items() if v is not None and not math.isnan(v))
    result["summary"] = (
        f"validation Dice {result['dice_mean']:.3f} ({per_class}) on {result['n_val_cases']} {cfg.val.split} cases "
        f"after {result['step']} steps, {result['wall_time_s']:.0f} s\n"
        f"checkpoint: {last}\nmetrics:    {out / 'metrics.json'}"
    )
    return result


def _finish_pretraining(cfg: RunConfig, trainer, model, out: Path, last: Path, t0: float) -> dict:
    """Save the final state of a self-supervised stage and summarise it (there is no Dice)."""
    from medssl.core.atomic import write_atomic_text

    trainer.save_checkpoint(last, weights_only=False)
    loss = trainer.callback_metrics.get("train/loss")
    result = {
        "method": cfg.method,
        "stage": cfg.contrastive.stage,
        "step": int(trainer.global_step),
        "final_loss": None if loss is None else float(loss),
        "trained_parts": list(model.trained_parts),
        "checkpoint": str(last),
        "wall_time_s": round(time.time() - t0, 1),
        "rank": trainer.global_rank,
    }
    if trainer.is_global_zero:
        write_atomic_text(out / "metrics.json", json.dumps(result, indent=2) + "\n")
    loss_txt = "n/a" if result["final_loss"] is None else f"{result['final_loss']:.4f}"
    result["summary"] = (
        f"{cfg.contrastive.stage} contrastive stage: loss {loss_txt} after {result['step']} steps, "
        f"{result['wall_time_s']:.0f} s; trained {', '.join(result['trained_parts'])}\n"
        f"checkpoint: {last}  (next stage: init_from: {last})"
    )
    return result
