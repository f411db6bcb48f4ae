"""``medssl train``: the segmentation engine. Data, model and trainer from a typed config; fit,
select on validation, test once, resume.

The engine knows no method by name: it builds the method registered under ``cfg.method``
(:func:`medssl.methods.build_method`) and reads what the method declares (``is_pretraining``,
``uses_unlabeled``, ``data_kind``). Cases come from :func:`medssl.data.splits.split_cases`:
checkpoints are selected on the **val** split only, and the **test** split is evaluated once,
after training, with the selected checkpoint (``best.ckpt``).

Run folder layout::

    OUT/config.yaml            the resolved config (after --set overrides)
    OUT/checkpoints/last.ckpt  written atomically after every validation (resume point)
    OUT/checkpoints/best.ckpt  best mean validation Dice so far (the val split)
    OUT/metrics.jsonl          training loss / LR every log_every steps, and every validation
    OUT/metrics.json           {"val": last validation, "best": the selected step, "test": the
                               selected checkpoint on the test split (read once), "reviewed":
                               the reviewed cases trained on, with data.extra_labels}
    OUT/reviewed_cases.json    with data.extra_labels: the manifest and its accepted / edited
                               cases trained on (names, label files and their sha256), written
                               beside config.yaml before training
"""

from __future__ import annotations

import logging
import math
import os
import time
import warnings
from pathlib import Path

from medssl.config import RunConfig, dump_config
from medssl.core.runtime import rank
from medssl.errors import ConfigError, DataError


def _quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    warnings.filterwarnings("ignore", message=".*Checkpoint directory.*exists and is not empty.*")
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    # our StepSampler restarts at the restored global step, so a mid-epoch resume is exact
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before the epoch ended.*")


def prepare_run_dir(cfg: RunConfig, out: Path | None, resume: bool) -> tuple[Path, bool]:
    """Create (or, with ``resume``, reopen) the run folder; write the resolved config atomically.

    Returns:
        ``(folder, created)``: ``created`` when this call made the folder (a failed run then
        removes it again, leaving nothing behind).

    Raises:
        DataError: the folder has checkpoints and ``resume`` is off; ``--out`` is a file; the
            folder cannot be created or written (named).
    """
    from medssl.core.atomic import write_atomic_text

    out = Path(out) if out is not None else Path("runs") / cfg.name
    last = out / "checkpoints" / "last.ckpt"
    created = not out.exists()
    if rank() == 0:
        if out.exists() and not out.is_dir():
            raise DataError("--out must be a folder (or a path to create one), not a file", out)
        if last.exists() and not resume:
            raise DataError("this run folder already has checkpoints: add --resume to continue it, or choose another --out", out)
        if resume and (out / "config.yaml").exists():
            old = (out / "config.yaml").read_text()
            if old != dump_config(cfg):
                logging.getLogger("medssl").warning("config differs from the one the run started with; using the new one")
        try:
            out.mkdir(parents=True, exist_ok=True)
            write_atomic_text(out / "config.yaml", dump_config(cfg))
        except OSError as exc:
            raise DataError(f"cannot write the run folder ({exc.strerror or exc})", out) from None
    return out, created


def _resume_point(out: Path, cfg: RunConfig) -> int | None:
    """The step of ``last.ckpt`` when resuming (None: no checkpoint yet).

    Raises:
        DataError: the checkpoint cannot be read (a truncated or foreign file), naming it.
    """
    from medssl.core.weights import load_checkpoint

    last = out / "checkpoints" / "last.ckpt"
    if not last.exists():
        return None
    try:
        return int(load_checkpoint(last).get("global_step", 0))
    except DataError as exc:
        raise DataError(f"{exc}; the resume point is unreadable: remove it to restart from scratch, or use another --out",
                        None) from None


def _mark_failed(out: Path, created: bool, exc: BaseException) -> None:
    """After a failed run: remove a folder this run created that holds no checkpoint (nothing is
    left behind), else record why in ``failed.json`` (removed when a resume succeeds)."""
    import shutil

    from medssl.core.jsonfile import write_json

    from medssl.errors import RunInterrupted

    if rank() != 0 or not out.is_dir():
        return
    if created and not (out / "checkpoints").exists():
        shutil.rmtree(out, ignore_errors=True)
        return
    if isinstance(exc, (RunInterrupted, KeyboardInterrupt)):
        return  # not a failure: the run resumes from its intact checkpoint
    try:
        write_json(out / "failed.json", {"error": f"{type(exc).__name__}: {exc}",
                                         "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    except OSError:
        pass


def build_splits(cfg: RunConfig, pretraining: bool = False):
    """The run's :class:`~medssl.data.splits.Splits`: train (+ reviewed pseudo-labels), val, test.

    A pretraining stage takes every training image (no ``num_labeled``), never val or test ones.
    """
    from medssl.data.splits import split_cases

    d = cfg.data
    splits = split_cases(
        d.root, num_val=d.num_val, split_seed=d.split_seed,
        num_labeled=None if pretraining else d.num_labeled, labeled_seed=d.labeled_seed,
        require_val=not pretraining, unlabeled_from_train=d.unlabeled_from_train and not pretraining,
    )
    if d.extra_labels is not None and not pretraining:  # reviewed pseudo-labels (accepted / edited cases)
        from medssl.inference.review_manifest import ReviewManifest

        reviewed = ReviewManifest.read(d.extra_labels).reviewed_cases()
        held_out = {c.image.resolve() for c in splits.val + splits.test}
        leak = [c.name for c in reviewed if c.image.resolve() in held_out]
        if leak:
            raise DataError(f"reviewed cases {leak} are validation or test images: they cannot be trained on", d.extra_labels)
        splits.train = splits.train + reviewed
    if cfg.val.max_cases:
        splits.val = splits.val[: cfg.val.max_cases]
    if d.channels is not None:  # a subset of the input channels (e.g. one MRI sequence of several)
        splits.spec = splits.spec.select(d.channels)
        for role in ("train", "val", "test", "unlabeled"):
            setattr(splits, role, [c.select(d.channels) for c in getattr(splits, role)])
    used = {c.image.resolve() for c in splits.train}
    splits.unlabeled = [c for c in splits.unlabeled if c.image.resolve() not in used]
    return splits


def default_cache_dir(cfg: RunConfig) -> Path:
    """``data.cache_dir``, else the dataset's folder in the cache root (:mod:`medssl.core.paths`)."""
    from medssl.data.cache import default_cache_dir as dataset_cache_dir

    return Path(cfg.data.cache_dir) if cfg.data.cache_dir is not None else dataset_cache_dir(cfg.data.root)


def warm_cache(cases, cache_dir: Path, progress: bool = True) -> None:
    """Convert every case once into the memory-mapped cache (images, labels, fg locations)."""
    from tqdm.auto import tqdm

    from medssl.data.cache import VolumeCache

    cache = VolumeCache(cache_dir)
    for case in tqdm(cases, desc="caching volumes", disable=not progress, leave=False):
        for image in case.images:
            cache.get(image)
        if case.label is not None:
            cache.get(case.label)
            cache.foreground_locations(case.label)


def _datamodule(cfg: RunConfig, model, splits, cache_dir: Path, spec, plan=None):
    from medssl.data.intensity import channel_modes
    from medssl.engines.datamodule import PartitionDataModule, SegDataModule

    d, tc = cfg.data, cfg.trainer
    common = dict(seed=tc.seed, intensity=channel_modes(d.intensity, spec.modalities), ct_window=d.ct_window,
                  num_workers=d.num_workers, plan=plan)
    if model.data_kind == "partitions":
        sd = model.net.spatial_dims
        return PartitionDataModule(
            tc.max_steps, num_workers=common.pop("num_workers"), cases=splits.pretraining_pool(), cache_dir=cache_dir,
            spatial_dims=sd, size=d.patch_size[:sd], num_volumes=model.num_volumes,
            num_partitions=model.num_partitions, **common)
    return SegDataModule(
        splits.train, splits.val, cache_dir, d.patch_size, d.batch_size, tc.max_steps, fg_fraction=d.fg_fraction,
        unlabeled_cases=splits.unlabeled if model.uses_unlabeled else (), test_cases=splits.test,
        resample_channels=d.resample_channels, **common,
    )


def run_training(cfg: RunConfig, out: Path | None = None, resume: bool = False, skip_checks: bool = False) -> dict:
    """Train ``cfg`` into run folder ``out``; returns the final metrics and a one-line summary.

    Deterministic on CPU for a given seed (patches are a function of seed and step; see
    :mod:`medssl.data.seg_dataset`); ``resume`` continues from ``OUT/checkpoints/last.ckpt`` with
    the same optimiser, LR schedule, step and RNG state. Before anything is written, every case
    the run will read passes :func:`medssl.data.preflight.preflight` (the checks of ``medssl data
    check``, remembered per file version) unless ``skip_checks``.
    """
    import pytorch_lightning  # noqa: F401  (before _quiet_lightning: Lightning sets its loggers when imported)

    _quiet_lightning()

    from medssl.core.runtime import interactive, tune_allocator
    from medssl.data.dataset import read_dataset_json
    from medssl.methods import get_method

    tune_allocator()
    t0 = time.time()
    if cfg.init_from is not None and not resume and not Path(cfg.init_from).is_file():
        raise ConfigError(f"init_from {cfg.init_from}: no such checkpoint (run the stage that writes it first, "
                          "or fix the path with --set init_from=...)")
    spec = read_dataset_json(cfg.data.root).select(cfg.data.channels)
    pretrain = get_method(cfg.method).is_pretraining  # declared on the class
    splits = build_splits(cfg, pretraining=pretrain)
    if not skip_checks:  # refuse broken cases before a folder is made or a step is taken
        from medssl.data.preflight import preflight

        preflight(splits.pretraining_pool() if pretrain else splits.train + splits.val + splits.test, spec,
                  volume_cache=default_cache_dir(cfg), progress=interactive(cfg.trainer.progress) and rank() == 0,
                  resample_channels=cfg.data.resample_channels)
    out, created = prepare_run_dir(cfg, out, resume)
    done_at = _resume_point(out, cfg) if resume else None
    if done_at is not None and done_at >= cfg.trainer.max_steps and (out / "metrics.json").is_file():
        return _already_complete(out, done_at)
    try:
        return _fit(cfg, out, resume, spec, pretrain, splits, t0, skip_checks)
    except BaseException as exc:
        if rank() == 0:
            _mark_failed(out, created, exc)
        raise


def _already_complete(out: Path, step: int) -> dict:
    from medssl.core.jsonfile import read_json

    result = read_json(out / "metrics.json")
    result["summary"] = (f"the run in {out} is complete (step {step} of {step}); nothing to do. Raise "
                         f"trainer.max_steps to train further.\nmetrics:    {out / 'metrics.json'}")
    result.setdefault("rank", 0)
    return result


def _fit(cfg: RunConfig, out: Path, resume: bool, spec, pretrain: bool, splits, t0: float, skip_checks: bool) -> dict:
    """The training proper (see :func:`run_training`)."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.callbacks import ModelCheckpoint

    from medssl.core.runtime import interactive
    from medssl.core.weights import init_from_checkpoint
    from medssl.engines.callbacks import DivergenceGuard, MetricsLog, PlainProgress, StepProgressBar
    from medssl.engines.checkpoint import AtomicCheckpointIO
    from medssl.errors import RunInterrupted
    from medssl.methods import build_method

    tc = cfg.trainer
    if tc.accelerator == "gpu" and not torch.cuda.is_available():
        raise ConfigError("trainer.accelerator=gpu but no CUDA device is available; use --set trainer.accelerator=cpu")
    threads = tc.threads
    if threads is None and tc.accelerator == "cpu" and tc.devices > 1:
        threads = max(1, (os.cpu_count() or 1) // tc.devices)
    if threads:
        torch.set_num_threads(threads)
    pl.seed_everything(tc.seed, workers=True, verbose=False)
    model = build_method(cfg, spec)  # after seeding: the initial weights are a function of the seed

    if not pretrain and tc.devices * tc.num_nodes > len(splits.val):  # every rank must validate at least one case
        raise ConfigError(f"{tc.devices * tc.num_nodes} processes but only {len(splits.val)} validation cases; "
                          "use fewer devices or more validation cases (data.num_val, imagesVal/)")
    if model.uses_unlabeled and not splits.unlabeled:
        raise DataError(f"{cfg.method} needs unlabeled images (imagesUnlabeled/) besides any reviewed cases used as labels",
                        cfg.data.root)
    cache_dir = default_cache_dir(cfg)
    used = splits.pretraining_pool() if pretrain else splits.train + splits.val + splits.test
    if model.uses_unlabeled and not pretrain:
        if not skip_checks:
            from medssl.data.preflight import preflight

            preflight(splits.unlabeled, spec, volume_cache=cache_dir, progress=interactive(tc.progress) and rank() == 0,
                      resample_channels=cfg.data.resample_channels)
        used = used + splits.unlabeled
    warm_cache(used, cache_dir, progress=interactive(tc.progress) and rank() == 0)
    from medssl.data.plan import resolve_plan

    plan = resolve_plan(cfg.data.plan, splits.train if not pretrain else splits.pretraining_pool(), spec.modalities,
                        out, cache_dir, isotropic=cfg.data.plan_isotropic, spacing=cfg.data.plan_spacing)
    if plan is not None:
        model.extra_state["plan"] = plan.to_json()  # in every checkpoint: inference uses the same grid
        if rank() == 0:
            print(f"plan: {'x'.join(f'{v:g}' for v in plan.spacing)} mm voxels, LPS (median spacing of "
                  f"{plan.n_cases} cases: {'x'.join(f'{v:g}' for v in plan.median_spacing)} mm)")

    if cfg.init_from is not None and not resume:
        loaded, skipped, parts = init_from_checkpoint(model.net, cfg.init_from, cfg.init_parts)
        if rank() == 0:
            under = f" under {parts}" if parts else ""
            print(f"init_from {cfg.init_from}: {len(loaded)} tensors loaded{under}, {len(skipped)} kept from random init")
    if not pretrain and rank() == 0:
        print(f"cases: {len(splits.train)} train, {len(splits.val)} val ({splits.val_source}), "
              f"{len(splits.test)} test (evaluated once, at the end)")

    reviewed = None
    if cfg.data.extra_labels is not None and not pretrain:  # which reviewed labels this run trained on
        from medssl.core.jsonfile import write_json
        from medssl.inference.review_manifest import reviewed_provenance

        reviewed = reviewed_provenance(cfg.data.extra_labels)
        if rank() == 0:
            write_json(out / "reviewed_cases.json", reviewed)
            print(f"reviewed cases: {len(reviewed['cases'])} from {cfg.data.extra_labels} "
                  f"({', '.join(c['name'] + ' ' + c['status'] for c in reviewed['cases']) or 'none'})")

    ckpt_dir = out / "checkpoints"
    dm = _datamodule(cfg, model, splits, cache_dir, spec, plan)
    if pretrain:
        # no labels, no validation: last.ckpt every val_every steps is the resume point and the result
        ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, save_top_k=0, save_last=True, every_n_train_steps=tc.val_every,
                                  enable_version_counter=False)
    else:
        # saved at every validation (the run is one long epoch; validation every val_every steps)
        ckpt_cb = ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val_dice", mode="max", save_top_k=1,
                                  save_last=True, every_n_epochs=1, save_on_train_epoch_end=False,
                                  enable_version_counter=False)
    callbacks = [ckpt_cb, MetricsLog(out / "metrics.jsonl", every=tc.log_every), DivergenceGuard()]
    bar = interactive(tc.progress)
    if bar:
        callbacks.append(StepProgressBar(refresh_rate=max(1, min(10, tc.log_every))))
    elif tc.progress:
        callbacks.append(PlainProgress())
    val_kwargs = (dict(limit_val_batches=0) if pretrain else
                  dict(val_check_interval=min(tc.val_every, tc.max_steps), check_val_every_n_epoch=None))
    trainer = pl.Trainer(
        default_root_dir=out, max_steps=tc.max_steps, max_epochs=1, **val_kwargs,
        num_sanity_val_steps=0, precision="bf16-mixed" if tc.precision == "bf16" else "32-true",
        accelerator=tc.accelerator, devices=tc.devices, num_nodes=tc.num_nodes,
        strategy=tc.strategy, callbacks=callbacks, logger=False, enable_model_summary=False,
        enable_progress_bar=bar, use_distributed_sampler=False, plugins=[AtomicCheckpointIO()],
        log_every_n_steps=tc.log_every,
    )
    last = ckpt_dir / "last.ckpt"
    ckpt_path = last if resume and last.exists() else None
    if resume and ckpt_path is None and trainer.is_global_zero:
        print(f"no checkpoint in {ckpt_dir}: starting from scratch")
    try:
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:  # Lightning's graceful shutdown after Ctrl-C ends in sys.exit(1)
        import signal

        signal.signal(signal.SIGINT, signal.default_int_handler)
        if trainer.interrupted:
            saved = _resume_point(out, cfg)
            at = "no checkpoint yet" if saved is None else f"last.ckpt (step {saved}) is intact"
            raise RunInterrupted(f"at step {trainer.global_step}; {at}: continue with --resume", out) from None
        raise
    if pretrain:
        return _finish_pretraining(cfg, trainer, model, out, last, t0)
    if model.last_val_metrics.get("step") != trainer.global_step:
        trainer.validate(model, datamodule=dm, verbose=False)
    val = dict(model.last_val_metrics)
    # last.ckpt was written before the final validation when max_steps isn't a multiple of
    # val_every; save again (a collective call under DDP: every rank must make it), BEFORE the
    # test loads best.ckpt's weights into the model.
    trainer.save_checkpoint(last, weights_only=False)  # full state (loops, optimiser) for --resume
    best = Path(ckpt_cb.best_model_path) if ckpt_cb.best_model_path else last
    best_score = ckpt_cb.best_model_score
    best_step = _checkpoint_step(best)
    test = None
    if splits.test:  # the test split, read once, with the checkpoint selected on validation
        trainer.test(model, datamodule=dm, ckpt_path=str(best), weights_only=True, verbose=False)
        test = _block(model.test_metrics, "test", spec)
        test["checkpoint"] = str(best)
    result = {
        "method": cfg.method,
        "step": int(trainer.global_step),
        "val": {**_block(val, "val", spec), "step": val.get("step"), "source": splits.val_source},
        "best": {"step": best_step, "val_dice_mean": None if best_score is None else float(best_score),
                 "checkpoint": str(best)},
        "test": test,
        "n_train_cases": len(splits.train),
        "reviewed": reviewed,
        "checkpoint": str(last),
        "best_checkpoint": str(best),
    }
    _write_result(trainer, out, result, t0)
    result["summary"] = _summary(result, out)
    return result


def _write_result(trainer, out: Path, result: dict, t0: float) -> None:
    """Add time and rank; write ``metrics.json`` (rank 0) and clear a previous failure mark."""
    result.update(wall_time_s=round(time.time() - t0, 1), rank=trainer.global_rank)
    if trainer.is_global_zero:
        from medssl.core.jsonfile import write_json

        write_json(out / "metrics.json", result)
        (out / "failed.json").unlink(missing_ok=True)


def _checkpoint_step(path: Path) -> int | None:
    from medssl.core.weights import load_checkpoint

    try:
        return int(load_checkpoint(path).get("global_step"))
    except Exception:  # noqa: BLE001  (a summary figure; never fail the run on it)
        return None


def _block(metrics: dict, prefix: str, spec) -> dict:
    """``{prefix}/dice_*`` metrics as a metrics.json block."""
    names = spec.class_names[1:]
    return {
        "split": prefix,
        "n_cases": metrics.get("n_cases"),
        "dice_mean": metrics.get(f"{prefix}/dice_mean"),
        "dice": {n: metrics.get(f"{prefix}/dice_{n}") for n in names},
        "hd95_mean_mm": metrics.get(f"{prefix}/hd95_mean"),
        "hd95_mm": {n: metrics.get(f"{prefix}/hd95_{n}") for n in names},
    }


def _dice_line(block: dict) -> str:
    per_class = ", ".join(f"{n} {v:.3f}" for n, v in block["dice"].items() if v is not None and not math.isnan(v))
    return f"Dice {block['dice_mean']:.3f} ({per_class}) on {block['n_cases']} {block['split']} cases"


def _summary(result: dict, out: Path) -> str:
    best = result["best"]
    lines = [f"validation {_dice_line(result['val'])} after {result['step']} steps, {result['wall_time_s']:.0f} s; "
             f"best.ckpt from step {best['step']}"]
    if result["test"] is not None:
        lines.append(f"test {_dice_line(result['test'])} (best.ckpt, evaluated once)")
    else:
        lines.append("no test split (imagesTs/ + labelsTs/): nothing reported on held-out data")
    lines += [f"checkpoint: {result['checkpoint']}", f"metrics:    {out / 'metrics.json'}"]
    return "\n".join(lines)


def _finish_pretraining(cfg: RunConfig, trainer, model, out: Path, last: Path, t0: float) -> dict:
    """Save the final state of a self-supervised stage and summarise it (there is no Dice)."""
    trainer.save_checkpoint(last, weights_only=False)
    loss = trainer.callback_metrics.get("train/loss")
    state = model.checkpoint_state()
    result = {
        "method": cfg.method,
        "stage": state.get("stage"),
        "step": int(trainer.global_step),
        "final_loss": None if loss is None else float(loss),
        "trained_parts": list(state.get("trained_parts", [])),
        "checkpoint": str(last),
    }
    _write_result(trainer, out, result, t0)
    loss_txt = "n/a" if result["final_loss"] is None else f"{result['final_loss']:.4f}"
    result["summary"] = (
        f"{model.summary()}: loss {loss_txt} after {result['step']} steps, {result['wall_time_s']:.0f} s\n"
        f"checkpoint: {last}  (next stage: init_from: {last})"
    )
    return result
