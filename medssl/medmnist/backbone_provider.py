"""The backbones of a MedMNIST run: pretrained here, loaded from a file, or random, built lazily.

For every eval dataset ``A`` and every ``pretrain`` entry, a :class:`Backbone`: random weights
(``method: none, init: random``), a local checkpoint or another medssl pretraining run
(``method: none, init: checkpoint | run``), or the result of SSL pretraining
(:func:`medssl.engines.image_ssl.pretrain_ssl`) on the train split of ``A`` (the entry's
default) or of the entry's fixed ``datasets`` list (several = multi-domain, on their union), once
per pretraining seed. Pretraining lives in ``out/pretrain/<entry>/seed<k>/<A or A+B...>/``; the
engine resumes it per epoch, and a finished one is marked by ``medssl_pretrain.json`` there (so
it is not reloaded). The marker also records what ran: epochs and steps actually run, training
time, last loss, the resolved settings (the method's keywords after its defaults, optimiser,
augmentation) and the code version (:func:`~medssl.medmnist.provenance.code_version`).

Seeds: a random-init entry's pretraining seed draws its weights (probes and OOD use them); a
fine-tuning of it with eval seed ``s`` draws fresh weights from ``(pretraining seed, s)`` mixed
(:func:`mix_seed`), as it always drew one initialisation per fine-tune.

Every backbone is wrapped in :class:`Standardize`: float images in [0, 1] are normalised with mean
0.5 / std 0.5 (the :class:`~medssl.transforms.image_ssl_augment.SSLAugment` default the backbones were
pretrained with), for feature extraction and fine-tuning alike.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

import torch
from torch import nn

from medssl.core.atomic import write_atomic_text
from medssl.errors import DataError
from medssl.medmnist.config import MedMNISTEvalConfig, MedMNISTPretrainEntry
from medssl.medmnist.data import MedMNISTSplit
from medssl.medmnist.metrics import normalize_task
from medssl.medmnist.plan import MARKER, digest, entry_settings, file_id, resolve_init, resolved_settings

#: input normalisation of every backbone (SSLAugment's default mean/std: [0, 1] -> [-1, 1])
INPUT_MEAN, INPUT_STD = 0.5, 0.5


class RunContext(Protocol):
    """What a :class:`Backbone` needs from its run."""

    cfg: MedMNISTEvalConfig
    out: Path
    device: torch.device
    bars: bool

    def data(self, flag: str, split: str) -> MedMNISTSplit: ...

    def log(self, msg: str) -> None: ...

    def epoch_reporter(self, what: str) -> Callable[[dict], None] | None: ...


def mix_seed(*seeds: int) -> int:
    """One 63-bit seed from several (``np.random.SeedSequence``): ``(1, 0)`` and ``(0, 1)`` differ."""
    hi, lo = np.random.SeedSequence([int(s) for s in seeds]).generate_state(2, np.uint32)
    return (int(hi) << 31 | int(lo)) & ((1 << 63) - 1)


def run_summary(folder: Path) -> dict:
    """What a pretraining in ``folder`` actually ran, from its ``pretrain_log.jsonl`` epoch lines
    (resumed runs keep the lines before the resume): epochs and steps run, training seconds, the
    last epoch's mean loss and images per second. Empty if there is no log."""
    from medssl.engines.image_ssl_checkpoint import LOG_NAME

    try:
        lines = (Path(folder) / LOG_NAME).read_text().splitlines()
    except OSError:
        return {}
    epochs = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("kind") == "epoch":
            epochs.append(rec)
    if not epochs:
        return {"epochs_run": 0, "steps": 0, "time_s": 0.0}
    last = epochs[-1]
    return {"epochs_run": int(last["epoch"]), "steps": int(last["step"]),
            "time_s": round(sum(float(r.get("time_s", 0.0)) for r in epochs), 1),
            "final_loss": last.get("loss"), "images_per_s": last.get("images_per_s")}


class Standardize(nn.Module):
    """``backbone((x - mean) / std)`` for float images in [0, 1]; keeps ``out_dim``."""

    def __init__(self, backbone: nn.Module, mean: float = INPUT_MEAN, std: float = INPUT_STD):
        super().__init__()
        self.backbone, self.mean, self.std = backbone, mean, std
        self.out_dim = getattr(backbone, "out_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def in_channels_of(module: nn.Module) -> int | None:
    """Input channels of the first convolution (``None`` if there is none)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None


def num_outputs(split: MedMNISTSplit) -> int:
    """Logits of a classifier for ``split``'s task: 2 for binary, else one per class (label)."""
    return 2 if normalize_task(split.task) == "binary" else split.num_classes


def arch_kwargs_for(entry: MedMNISTPretrainEntry, size: int) -> dict:
    """The entry's backbone keywords, or the defaults for the image side."""
    from medssl.nets.backbones import default_arch_kwargs

    if entry.arch_kwargs is not None:
        return dict(entry.arch_kwargs)
    return default_arch_kwargs(entry.arch, size)


def random_backbone(arch: str, spatial_dims: int, in_channels: int, arch_kwargs: dict, seed: int) -> nn.Module:
    """A randomly initialised backbone, weights drawn from ``seed`` (the global RNG is left untouched)."""
    from medssl.nets.backbones import build_backbone

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_backbone(arch, spatial_dims, in_channels, **arch_kwargs)


def pretrain_folder(out: Path, entry_name: str, pretrain_seed: int, tag: str) -> Path:
    """``out/pretrain/<entry>/seed<k>/<tag>``: where one pretraining lives."""
    return Path(out) / "pretrain" / entry_name / f"seed{pretrain_seed}" / tag


class Backbone:
    """One backbone of the run (an entry pretrained on, or initialised for, one tag, with one
    pretraining seed), loaded lazily.

    Args:
        run: the run (its config, folder, device, data and log).
        entry: the pretrain entry.
        tag: the folder name under ``out/pretrain/<entry>/seed<k>/``: the pretraining dataset(s), or
            the eval dataset for an entry without pretraining.
        eval_flag: the dataset the weights are pretrained on (or, without pretraining, built for).
        pretrain_seed: the pretraining seed (random init: the initialisation seed); default the
            entry's ``seed``.
    """

    def __init__(self, run: RunContext, entry: MedMNISTPretrainEntry, tag: str, eval_flag: str | None,
                 pretrain_seed: int | None = None):
        self.run, self.entry, self.tag, self.eval_flag = run, entry, tag, eval_flag
        self.pseed = entry.seed if pretrain_seed is None else int(pretrain_seed)
        self.id = f"{entry.name}__s{self.pseed}__{tag}"
        self.folder = pretrain_folder(run.out, entry.name, self.pseed, tag)
        self._ckpt: Path | None = None
        self._module: nn.Module | None = None
        self._settings: dict | None = None

    # -- where the weights come from
    def pretrain_flags(self) -> list[str]:
        return list(self.entry.datasets) if self.entry.datasets else [self.eval_flag]

    def settings(self) -> dict:
        """What determines the weights (part of every record hash of this backbone): the entry as
        written with this pretraining seed, and the settings the code resolves for it."""
        if self._settings is None:
            s = entry_settings(self.entry, self.eval_flag, self.pseed)
            s.update(tag=self.tag, size=self.run.cfg.size,
                     resolved=resolved_settings(self.run.cfg, self.entry, self.pretrain_flags()))
            if self.entry.method == "none" and self.entry.init == "random":
                d = self.run.data(self.eval_flag, "train")
                s.update(spatial_dims=d.spatial_dims, channels=d.n_channels)
            self._settings = s
        return self._settings

    def checkpoint(self) -> Path | None:
        """The weights file (pretraining it first if needed); ``None`` for random init."""
        if self._ckpt is not None:
            return self._ckpt
        e = self.entry
        if e.method == "none":
            if e.init == "random":
                return None
            self._ckpt = resolve_init(e, self.eval_flag)
            return self._ckpt
        settings = digest(self.settings())
        try:
            rec = json.loads((self.folder / MARKER).read_text())
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict) and rec.get("settings") == settings and rec.get("complete"):
            ckpt = self.folder / str(rec.get("checkpoint"))
            if ckpt.is_file():
                self._ckpt = ckpt
                return ckpt
        # the same settings resume the engine's per-epoch checkpoint; other settings start over
        resume = not isinstance(rec, dict) or rec.get("settings") == settings
        if not resume:
            self.run.log(f"{self.folder}: the pretraining settings changed; pretraining starts over")
        self._ckpt = self._pretrain(settings, resume)
        return self._ckpt

    def _pretrain(self, settings: str, resume: bool) -> Path:
        from medssl.engines import image_ssl as engine
        from medssl.medmnist.channels import union_images

        e, run = self.entry, self.run
        flags = self.pretrain_flags()
        splits = [run.data(f, "train") for f in flags]
        images = splits[0].images if len(splits) == 1 else union_images([s.images for s in splits])
        labels = num_classes = None
        if e.method == "supervised":
            labels, num_classes = splits[0].labels, num_outputs(splits[0])
        batch = min(e.batch_size, len(images))  # a small dataset: one batch of all images per step
        what = f"pretraining {e.name} seed {self.pseed} ({e.method}, {e.arch}) on {'+'.join(flags)}"
        run.log(f"{what}: {len(images)} images, batch {batch}, {e.epochs} epochs")
        from medssl.medmnist.provenance import code_version

        meta = {"settings": settings, "complete": False, "entry": e.name, "pretrain_seed": self.pseed,
                "method": e.method, "arch": e.arch, "datasets": flags, "epochs": e.epochs, "code": code_version()}
        write_atomic_text(self.folder / MARKER, json.dumps(meta, indent=1) + "\n")
        kwargs = dict(
            arch=e.arch, spatial_dims=splits[0].spatial_dims, epochs=e.epochs, batch_size=batch, lr=e.lr,
            weight_decay=e.weight_decay, warmup_epochs=e.warmup_epochs, precision=e.precision, seed=self.pseed,
            labels=labels, arch_kwargs=e.arch_kwargs, num_classes=num_classes,
            method_kwargs=dict(e.method_kwargs) or None, augment_preset=e.augment_preset,
        )
        resolved = engine.describe_pretraining(engine.resolve_settings(e.method, tuple(images.shape), **kwargs))
        ckpt = engine.pretrain_ssl(e.method, images, self.folder, resume=resume, progress=run.bars,
                                   device=run.device, on_epoch=run.epoch_reporter(what), **kwargs)
        ckpt = Path(ckpt)
        try:
            rel = str(ckpt.resolve().relative_to(self.folder.resolve()))
        except ValueError:
            rel = str(ckpt.resolve())
        meta.update(complete=True, checkpoint=rel, **run_summary(self.folder), resolved=resolved)
        write_atomic_text(self.folder / MARKER, json.dumps(meta, indent=1) + "\n")
        run.log(f"{what}: done, {meta.get('epochs_run')} epochs ({meta.get('time_s', 0) / 60:.1f} min of training)")
        return ckpt

    def fingerprint(self) -> str:
        """Changes whenever the weights may have: the settings and the weights file's identity."""
        ckpt = self.checkpoint()
        return digest([self.settings(), file_id(ckpt) if ckpt is not None else None])

    # -- the network
    def _build(self, seed: int) -> nn.Module:
        ckpt = self.checkpoint()
        if ckpt is None:
            d = self.run.data(self.eval_flag, "train")
            net = random_backbone(self.entry.arch, d.spatial_dims, d.n_channels,
                                  arch_kwargs_for(self.entry, self.run.cfg.size), seed)
        else:
            net = self._load(ckpt)
        return Standardize(net).to(self.run.device)

    def _load(self, ckpt: Path) -> nn.Module:
        """A medssl pretraining checkpoint as it is; a foreign file into the entry's arch for this dataset."""
        from medssl.engines.image_ssl_checkpoint import load_backbone

        try:
            return load_backbone(ckpt)
        except DataError as exc:
            if self.entry.method != "none" or "not a medssl pretraining checkpoint" not in str(exc):
                raise
        d = self.run.data(self.eval_flag, "train")
        net = load_backbone(ckpt, arch=self.entry.arch, spatial_dims=d.spatial_dims, in_channels=d.n_channels,
                            arch_kwargs=arch_kwargs_for(self.entry, self.run.cfg.size))
        self.run.log(f"{self.entry.name}: weights from {ckpt}: {getattr(net, 'init_report', '')}")
        return net

    def module(self) -> nn.Module:
        """The (normalising) backbone; do not train it in place (see :meth:`fresh`)."""
        if self._module is None:
            self._module = self._build(self.pseed)
        return self._module

    def fresh(self, seed: int) -> nn.Module:
        """A trainable copy for fine-tuning with eval seed ``seed``: new random weights from
        ``mix_seed(pretraining seed, seed)`` for random init, else a copy of the pretrained weights."""
        if self.checkpoint() is None:
            return self._build(mix_seed(self.pseed, seed))
        return copy.deepcopy(self.module())

    def release(self) -> None:
        self._module = None
