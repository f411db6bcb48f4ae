"""``medssl eval medmnist``: SSL pretraining and its evaluation on MedMNIST, resumable.

One call of :func:`run_medmnist_eval` runs a whole :class:`~medssl.medmnist.config.MedMNISTEvalConfig`:

1. **Backbones.** For every eval dataset ``A`` and every ``pretrain`` entry, a backbone: random
   weights (``method: none, init: random``), a local checkpoint or another medssl pretraining run
   (``method: none, init: checkpoint | run``), or the result of SSL pretraining
   (:func:`medssl.engines.ssl_pretrain.pretrain_ssl`) on the train split of ``A`` (the entry's
   default) or of the entry's fixed ``datasets`` list (several = multi-domain, on their union).
   Pretraining lives in ``out/pretrain/<entry>/<A or A+B...>/``; the engine resumes it per epoch,
   and a finished one is marked by ``medssl_pretrain.json`` there (so it is not reloaded).
2. **Features.** Each backbone's pooled features of each split are computed once and cached in
   ``out/features/<entry>__<tag>__<dataset>_<size>_<split>.pt`` (atomic; recomputed when the
   backbone's fingerprint changes). Images are converted to the backbone's input channels
   (:func:`~medssl.engines.ssl_pretrain.to_channels`), scaled to [0, 1] and normalised with mean
   0.5 / std 0.5 (the :class:`~medssl.transforms.ssl_augment.SSLAugment` default the backbones
   were pretrained with); the same wrapper is used when fine-tuning.
3. **Records.** For protocol x label fraction x seed: a class-balanced subset of the train labels
   (:func:`~medssl.eval.subsample.class_balanced_subset`), then the linear probe (lr x wd chosen
   on val), kNN (k x T chosen on val) or full fine-tuning (best val-AUROC epoch), and test ACC,
   balanced ACC, AUROC. Fine-tuning a random-init entry draws the initial weights from
   ``entry.seed + seed``; a pretrained entry always starts from its pretrained weights.
4. **OOD** (``ood.enabled``), right after the records of ``(A, entry)``: the model trained on ``A``
   with 100 % of the labels and the first seed (linear head on frozen features, or the fine-tuned
   network) scores ``A``'s test set (in-distribution) against the test set of every other dataset
   of the run with the same spatial dims (converted to ``A``'s channels and size), with max-softmax,
   energy and Mahalanobis; AUROC, AUPR-In, AUPR-Out, FPR95 and the ROC curve per pair and score.
   Pairs with different spatial dims are skipped with a note.
5. **Transfer** (``transfer.enabled``), after everything else: for every entry that pretrains per
   dataset, its backbone pretrained on ``A`` is linear-probed on every other dataset ``B`` of the same
   spatial dims; the report shows an AUROC matrix (rows: pretrained on, columns: evaluated on;
   the diagonal is the in-domain linear probe).

Results: ``results.json`` (``records``, ``ood``, ``transfer``, ``notes``, ``meta``; record layout as
in :mod:`medssl.eval.report`, with ``method`` = the pretrain entry's name), ``results.csv``,
``ood.csv``, ``transfer.csv``, and ``report.md`` with PNG plots (:func:`~medssl.eval.report.render_report`
plus the transfer matrices and notes). A record named ``supervised*`` at 100 % labels is shown
beside the published MedMNIST v2 numbers of its dataset.

Resume: every record has a key, ``(dataset, entry, protocol, fraction, seed)`` (OOD:
``(A, B, entry, score, seed)``; transfer: ``(A, B, entry, fraction, seed)``), and a hash of the
settings that produced it (the entry's settings, the dataset size, the protocol's settings). At the
start, the records of ``out/results.json`` whose key is planned and whose hash matches are kept and
not recomputed; the others are dropped (a changed setting recomputes exactly what it affects).
``results.json``/``.csv`` are rewritten atomically after every record, so an interrupted run loses
at most the record in progress; ``report.md`` and the plots are re-rendered at most every
:data:`REPORT_EVERY_S` seconds and at the end.
"""

from __future__ import annotations

import copy
import csv
import hashlib
import io
import json
import math
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.config import dump_config
from medssl.medmnist.config import MedMNISTEvalConfig, MedMNISTPretrainEntry
from medssl.core.atomic import write_atomic_bytes, write_atomic_text
from medssl.data.medmnist import MedMNISTSplit, load_medmnist
from medssl.errors import DataError
from medssl.eval import protocols
from medssl.eval.metrics import classification_metrics, mean_ci, normalize_task
from medssl.eval.report import render_report, write_results
from medssl.eval.subsample import class_balanced_subset

__all__ = ["run_medmnist_eval", "REPORT_EVERY_S"]

#: Seconds between re-renderings of report.md and its plots (results files: after every record).
REPORT_EVERY_S = 60.0
#: Input normalisation of every backbone (SSLAugment's default mean/std: [0, 1] -> [-1, 1]).
INPUT_MEAN, INPUT_STD = 0.5, 0.5
#: Batch size of feature extraction and OOD scoring, by spatial dims.
FEATURE_BATCH = {2: 512, 3: 32}
MARKER = "medssl_pretrain.json"
SPLITS = ("train", "val", "test")


# ---------------------------------------------------------------- small helpers


def _digest(obj: Any) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_id(path: Path) -> list:
    """Name, size and mtime: a rewritten file changes it, a moved run folder does not."""
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def _save_pt(obj: Any, path: Path) -> Path:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return write_atomic_bytes(path, buf.getvalue())


def _load_pt(path: Path) -> Any | None:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001  a truncated or foreign file is recomputed
        return None


def _in_channels(module: nn.Module) -> int | None:
    """Input channels of the first convolution (``None`` if there is none)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None


def _num_outputs(split: MedMNISTSplit) -> int:
    return 2 if normalize_task(split.task) == "binary" else split.num_classes


class Standardize(nn.Module):
    """``backbone((x - mean) / std)`` for float images in [0, 1]; keeps ``out_dim``."""

    def __init__(self, backbone: nn.Module, mean: float = INPUT_MEAN, std: float = INPUT_STD):
        super().__init__()
        self.backbone, self.mean, self.std = backbone, mean, std
        self.out_dim = getattr(backbone, "out_dim", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std)


def _arch_kwargs(entry: MedMNISTPretrainEntry, size: int) -> dict:
    """The entry's backbone keywords, or the engine's defaults for the image side."""
    if entry.arch_kwargs is not None:
        return dict(entry.arch_kwargs)
    return _engine().default_arch_kwargs(entry.arch, size)


def _random_backbone(arch: str, spatial_dims: int, in_channels: int, arch_kwargs: dict, seed: int) -> nn.Module:
    """A randomly initialised backbone as the engine builds it, weights drawn from ``seed`` (global RNG untouched)."""
    engine = _engine()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return engine.build_backbone(arch, spatial_dims, in_channels, **arch_kwargs)


def _engine():
    """The SSL pretraining engine, imported on first use (tests replace its functions)."""
    from medssl.engines import ssl_pretrain

    return ssl_pretrain


def _adapt(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 ``(N, C, *spatial)`` images brought to a backbone's input channels (every dataset of a run
    has one size): grayscale is repeated (:func:`~medssl.engines.ssl_pretrain.to_channels`), RGB into a
    grayscale backbone becomes its luma ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601)."""
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 1 and images.shape[1] == 3:
        w = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, *([1] * (images.ndim - 2)))
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return _engine().to_channels(images, channels)


def _autocast(device: torch.device, precision: str):
    from contextlib import nullcontext

    return torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()


@torch.no_grad()
def _forward(model: nn.Module, images: torch.Tensor, device: torch.device, precision: str,
             head: nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Features ``(N, D)`` (and ``head`` logits) in float32, in batches, in eval mode."""
    model.eval()
    if head is not None:
        head.eval()
    feats, logits = [], []
    for batch in images.split(FEATURE_BATCH.get(images.ndim - 2, 64)):
        x = batch.to(device).float().div_(255.0)
        with _autocast(device, precision):
            f = model(x)
            if head is not None:
                logits.append(head(f).float().cpu())
        feats.append(f.float().cpu())
    return torch.cat(feats), (torch.cat(logits) if head is not None else None)


# ---------------------------------------------------------------- backbones


class _Backbone:
    """One backbone of the run (an entry pretrained on, or initialised for, one tag), loaded lazily."""

    def __init__(self, run: "_Run", entry: MedMNISTPretrainEntry, tag: str, eval_flag: str | None):
        self.run, self.entry, self.tag, self.eval_flag = run, entry, tag, eval_flag
        self.id = f"{entry.name}__{tag}"
        self.folder = run.out / "pretrain" / entry.name / tag
        self._ckpt: Path | None = None
        self._module: nn.Module | None = None

    # -- where the weights come from
    def pretrain_flags(self) -> list[str]:
        return list(self.entry.datasets) if self.entry.datasets else [self.eval_flag]

    def settings(self) -> dict:
        """What determines the weights (part of every record hash of this backbone)."""
        s = self.run.entry_settings(self.entry, self.eval_flag)
        s.update(tag=self.tag, size=self.run.cfg.size)
        if self.entry.method == "none" and self.entry.init == "random":
            d = self.run.data(self.eval_flag, "train")
            s.update(spatial_dims=d.spatial_dims, channels=d.n_channels)
        return s

    def checkpoint(self) -> Path | None:
        """The weights file (pretraining it first if needed); ``None`` for random init."""
        if self._ckpt is not None:
            return self._ckpt
        e = self.entry
        if e.method == "none":
            if e.init == "random":
                return None
            self._ckpt = _resolve_init(e, self.eval_flag)
            return self._ckpt
        settings = _digest(self.settings())
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
        e, run, engine = self.entry, self.run, _engine()
        flags = self.pretrain_flags()
        splits = [run.data(f, "train") for f in flags]
        images = splits[0].images if len(splits) == 1 else engine.union_images([s.images for s in splits])
        labels = num_classes = None
        if e.method == "supervised":
            labels, num_classes = splits[0].labels, _num_outputs(splits[0])
        batch = min(e.batch_size, len(images))  # a small dataset: one batch of all images per step
        run.log(f"pretraining {e.name} ({e.method}, {e.arch}) on {'+'.join(flags)}: {len(images)} images, "
                f"batch {batch}, {e.epochs} epochs")
        meta = {"settings": settings, "complete": False, "method": e.method, "arch": e.arch, "datasets": flags,
                "epochs": e.epochs}
        write_atomic_text(self.folder / MARKER, json.dumps(meta, indent=1) + "\n")
        ckpt = engine.pretrain_ssl(
            e.method, images, self.folder, arch=e.arch, spatial_dims=splits[0].spatial_dims, epochs=e.epochs,
            batch_size=batch, lr=e.lr, weight_decay=e.weight_decay, warmup_epochs=e.warmup_epochs,
            precision=e.precision, seed=e.seed, resume=resume, progress=run.progress, labels=labels,
            arch_kwargs=e.arch_kwargs,
            num_classes=num_classes, method_kwargs=dict(e.method_kwargs) or None, device=run.device,
        )
        ckpt = Path(ckpt)
        try:
            rel = str(ckpt.resolve().relative_to(self.folder.resolve()))
        except ValueError:
            rel = str(ckpt.resolve())
        meta.update(complete=True, checkpoint=rel)
        write_atomic_text(self.folder / MARKER, json.dumps(meta, indent=1) + "\n")
        return ckpt

    def fingerprint(self) -> str:
        ckpt = self.checkpoint()
        return _digest([self.settings(), _file_id(ckpt) if ckpt is not None else None])

    # -- the network
    def _build(self, seed: int) -> nn.Module:
        ckpt = self.checkpoint()
        if ckpt is None:
            d = self.run.data(self.eval_flag, "train")
            net = _random_backbone(self.entry.arch, d.spatial_dims, d.n_channels,
                                   _arch_kwargs(self.entry, self.run.cfg.size), seed)
        else:
            net = self._load(ckpt)
        return Standardize(net).to(self.run.device)

    def _load(self, ckpt: Path) -> nn.Module:
        """A medssl pretraining checkpoint as it is; a foreign file into the entry's arch for this dataset."""
        engine = _engine()
        try:
            return engine.load_backbone(ckpt)
        except DataError as exc:
            if self.entry.method != "none" or "not a medssl pretraining checkpoint" not in str(exc):
                raise
        d = self.run.data(self.eval_flag, "train")
        net = engine.load_backbone(ckpt, arch=self.entry.arch, spatial_dims=d.spatial_dims, in_channels=d.n_channels,
                                   arch_kwargs=_arch_kwargs(self.entry, self.run.cfg.size))
        self.run.log(f"{self.entry.name}: weights from {ckpt}: {getattr(net, 'init_report', '')}")
        return net

    def module(self) -> nn.Module:
        """The (normalising) backbone; do not train it in place (see :meth:`fresh`)."""
        if self._module is None:
            self._module = self._build(self.entry.seed)
        return self._module

    def fresh(self, seed: int) -> nn.Module:
        """A trainable copy for fine-tuning: new random weights from ``entry.seed + seed`` for random
        init, else a copy of the pretrained weights."""
        if self.checkpoint() is None:
            return self._build(self.entry.seed + seed)
        return copy.deepcopy(self.module())

    def release(self) -> None:
        self._module = None


def _resolve_init(entry: MedMNISTPretrainEntry, eval_flag: str | None = None) -> Path:
    """The weights file of ``init: checkpoint`` / ``init: run``.

    ``run`` may be a checkpoint file, a pretraining folder (with ``medssl_pretrain.json``, else
    holding one checkpoint file or one named final/last/backbone), or a folder of several such
    folders (``<eval out>/pretrain/<entry>``, one per dataset): then the one named ``eval_flag``.
    """
    if entry.init == "checkpoint":
        path = Path(entry.checkpoint).expanduser()
        if not path.is_file():
            raise DataError(f"checkpoint of pretrain entry {entry.name!r} not found", path)
        return path
    path = Path(entry.run).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError(f"pretraining run of entry {entry.name!r} not found (a folder or a checkpoint)", path)
    markers = [path / MARKER] if (path / MARKER).is_file() else sorted(path.glob(f"*/{MARKER}"))
    if len(markers) > 1:
        same = [m for m in markers if m.parent.name == eval_flag]
        if len(same) != 1:
            raise DataError(f"holds several pretraining runs ({', '.join(m.parent.name for m in markers)}) and "
                            f"none named {eval_flag!r}; name one of these folders as 'run'", path)
        markers = same
    if markers:
        rec = json.loads(markers[0].read_text())
        if not rec.get("complete"):
            raise DataError("this pretraining run has not finished; complete it first", markers[0].parent)
        ckpt = markers[0].parent / rec["checkpoint"]
        if ckpt.is_file():
            return ckpt
        raise DataError(f"{MARKER} names {rec['checkpoint']!r}, which does not exist", markers[0].parent)
    cands = [p for p in sorted(path.iterdir()) if p.suffix in (".ckpt", ".pt", ".pth") and p.is_file()]
    named = [p for p in cands if p.stem in ("final", "last", "backbone")]
    if len(cands) == 1 or len(named) == 1:
        return (named or cands)[0]
    raise DataError(f"no {MARKER} and {len(cands)} checkpoint files; name the checkpoint file as 'run'", path)


# ---------------------------------------------------------------- the run


class _Run:
    def __init__(self, cfg: MedMNISTEvalConfig, out: Path, progress: bool):
        self.cfg, self.out, self.progress = cfg, Path(out), progress
        if cfg.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device)
        self._data: dict[tuple[str, str], MedMNISTSplit] = {}
        self._backbones: dict[str, _Backbone] = {}
        self._last_report = -math.inf
        self.results: dict[str, Any] = {"records": [], "ood": [], "transfer": [], "notes": [], "meta": {}}
        self._order: dict[str, dict[tuple, int]] = {}
        self._done: dict[str, dict[tuple, dict]] = {"records": {}, "ood": {}, "transfer": {}}
        self._bar = None

    # -- utilities
    def log(self, msg: str) -> None:
        if self.progress:
            from tqdm.auto import tqdm

            tqdm.write(msg)

    def data(self, flag: str, split: str) -> MedMNISTSplit:
        if (flag, split) not in self._data:
            self._data[flag, split] = load_medmnist(flag, split, self.cfg.size, self.cfg.root, verify=self.cfg.verify)
        return self._data[flag, split]

    def dims(self, flag: str) -> int:
        from medssl.data.medmnist import flag_info

        return int(flag_info(flag)["spatial_dims"])

    def entry_settings(self, e: MedMNISTPretrainEntry, flag: str | None) -> dict:
        s = e.model_dump(mode="json", exclude={"name"})
        if s.get("arch_kwargs") is None:  # unset: same record hashes as runs made before the field existed
            s.pop("arch_kwargs", None)
        if e.method == "none" and e.init != "random":
            s["weights"] = _file_id(_resolve_init(e, flag))
        return s

    def backbone(self, entry: MedMNISTPretrainEntry, eval_flag: str, pretrain_flag: str | None = None) -> _Backbone:
        """The backbone of ``entry`` evaluated on ``eval_flag`` (pretrained on ``pretrain_flag`` if given)."""
        if entry.method == "none":
            tag = eval_flag  # random weights / a foreign file are built for the dataset's channels
        elif entry.datasets:
            tag = "+".join(entry.datasets)
        else:
            tag = pretrain_flag or eval_flag
        key = f"{entry.name}__{tag}"
        if key not in self._backbones:
            own = eval_flag if entry.method == "none" else (pretrain_flag or eval_flag)
            self._backbones[key] = _Backbone(self, entry, tag, own)
        return self._backbones[key]

    def features(self, bb: _Backbone, flag: str, split: str) -> torch.Tensor:
        """Cached ``(N, D)`` features of ``flag``'s ``split`` under backbone ``bb``."""
        path = self.out / "features" / f"{bb.id}__{flag}_{self.cfg.size}_{split}.pt"
        fp = bb.fingerprint()
        cached = _load_pt(path) if path.is_file() else None
        if isinstance(cached, dict) and cached.get("fingerprint") == fp:
            return cached["features"]
        model = bb.module()
        d = self.data(flag, split)
        images = _adapt(d.images, _in_channels(model))
        feats, _ = _forward(model, images, self.device, bb.entry.precision)
        _save_pt({"fingerprint": fp, "features": feats}, path)
        return feats

    # -- results bookkeeping
    def plan(self) -> None:
        """Every key this config produces, in run order, with its settings hash."""
        cfg, ev = self.cfg, self.cfg.eval
        recs, ood, tr = {}, {}, {}
        seed0 = ev.seeds[0]
        for flag in cfg.datasets:
            for e in cfg.pretrain:
                for proto in ev.protocols:
                    for fr in ev.fractions:
                        for s in ev.seeds:
                            recs[(flag, e.name, proto, fr, s)] = self.record_hash(e, flag, proto)
                if cfg.ood.enabled:
                    for other in cfg.datasets:
                        if other != flag and self.dims(other) == self.dims(flag):
                            for score in cfg.ood.scores:
                                ood[(flag, other, e.name, score, seed0)] = self.ood_hash(e, flag, other)
        if cfg.transfer.enabled:
            for e in self.transfer_entries():
                for a in cfg.datasets:
                    for b in cfg.datasets:
                        if a != b and self.dims(a) == self.dims(b):
                            for fr in cfg.transfer.fractions:
                                for s in ev.seeds:
                                    tr[(a, b, e.name, fr, s)] = self.record_hash(e, b, "linear", pretrained_on=a)
        self._plan = {"records": recs, "ood": ood, "transfer": tr}
        self._order = {k: {key: i for i, key in enumerate(v)} for k, v in self._plan.items()}

    def transfer_entries(self) -> list[MedMNISTPretrainEntry]:
        return [e for e in self.cfg.pretrain if e.method != "none" and not e.datasets]

    def record_hash(self, e: MedMNISTPretrainEntry, flag: str, proto: str, pretrained_on: str | None = None) -> str:
        ev = self.cfg.eval
        return _digest({"entry": self.entry_settings(e, flag), "dataset": flag, "size": self.cfg.size,
                        "protocol": proto, "settings": getattr(ev, proto).model_dump(mode="json"),
                        "pretrained_on": pretrained_on})

    def ood_hash(self, e: MedMNISTPretrainEntry, flag: str, other: str) -> str:
        model = self.cfg.ood.model
        return _digest({"base": self.record_hash(e, flag, model), "other": other, "model": model})

    @staticmethod
    def key(kind: str, r: dict) -> tuple:
        if kind == "records":
            return (r["dataset"], r["method"], r["protocol"], r["fraction"], r["seed"])
        if kind == "ood":
            return (r["train"], r["test"], r["method"], r["score"], r["seed"])
        return (r["pretrain"], r["dataset"], r["method"], r["fraction"], r["seed"])

    def load_previous(self) -> None:
        path = self.out / "results.json"
        if not path.is_file():
            return
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            self.log(f"warning: {path} is not valid JSON; starting afresh")
            return
        dropped = 0
        for kind in self._done:
            for r in prev.get(kind) or []:
                try:
                    key = self.key(kind, r)
                except (KeyError, TypeError):
                    dropped += 1
                    continue
                if self._plan[kind].get(key) == r.get("config_hash"):
                    self._done[kind][key] = r
                else:
                    dropped += 1
        if dropped:
            self.log(f"resume: {dropped} earlier record(s) do not match this config and are recomputed or dropped")
        kept = sum(len(v) for v in self._done.values())
        if kept:
            self.log(f"resume: {kept} record(s) found in {path}, not recomputed")

    def done(self, kind: str, key: tuple) -> dict | None:
        return self._done[kind].get(key)

    def add(self, kind: str, record: dict) -> None:
        key = self.key(kind, record)
        record["config_hash"] = self._plan[kind][key]
        self._done[kind][key] = record
        self.write()

    def note(self, text: str) -> None:
        if text not in self.results["notes"]:
            self.results["notes"].append(text)
            self.log(f"note: {text}")

    def collect(self) -> dict:
        for kind, order in self._order.items():
            self.results[kind] = sorted(self._done[kind].values(), key=lambda r, k=kind: order[self.key(k, r)])
        return self.results

    def write(self, final: bool = False) -> None:
        results = self.collect()
        write_results(results, self.out)
        if results["transfer"]:
            _write_transfer_csv(results["transfer"], self.out / "transfer.csv")
        if final or time.monotonic() - self._last_report >= REPORT_EVERY_S:
            self._last_report = time.monotonic()
            self.render()

    def render(self) -> Path:
        published = None if self.cfg.report.published else {}
        path = render_report(self.results, self.out, published=published, baseline=self.cfg.report.baseline)
        extra = _transfer_section(self.results, self.cfg, self.out)
        if self.results["notes"]:
            extra += ["## Notes", "", *(f"- {n}" for n in self.results["notes"]), ""]
        if extra:
            write_atomic_text(path, path.read_text() + "\n" + "\n".join(extra))
        return path

    # -- the work
    def execute(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.plan()
        self.load_previous()
        self.results["meta"] = _meta(cfg, self.device)
        if cfg.ood.enabled:
            for flag in cfg.datasets:
                if not any(o != flag and self.dims(o) == self.dims(flag) for o in cfg.datasets):
                    self.note(f"OOD: no other {self.dims(flag)}D dataset in this run to score {flag} against; "
                              f"add one to 'datasets' (e.g. pneumoniamnist beside breastmnist)")
                for o in cfg.datasets:
                    if o != flag and self.dims(o) != self.dims(flag):
                        self.note(f"OOD: {flag} ({self.dims(flag)}D) vs {o} ({self.dims(o)}D) skipped: "
                                  f"spatial dims differ")
        if cfg.transfer.enabled:
            if not self.transfer_entries():
                self.note("transfer: no pretrain entry pretrains per dataset (method other than 'none', "
                          "no fixed 'datasets'); no transfer matrix")
            if not self._plan["transfer"]:
                self.note("transfer: needs at least two datasets with the same spatial dims")
        self.write()
        jobs = [(flag, e) for flag in cfg.datasets for e in cfg.pretrain]
        with tqdm(jobs, desc="medmnist eval", unit="job", disable=not self.progress) as bar:
            for flag, e in bar:
                bar.set_postfix_str(f"{flag} / {e.name}")
                self.records(flag, e)
                if cfg.ood.enabled:
                    self.ood(flag, e)
                for bb in self._backbones.values():
                    bb.release()
        if cfg.transfer.enabled:
            self.transfer()
        self.write(final=True)
        return self.results

    def records(self, flag: str, e: MedMNISTPretrainEntry) -> None:
        from tqdm.auto import tqdm

        ev = self.cfg.eval
        todo = [(p, fr, s) for p in ev.protocols for fr in ev.fractions for s in ev.seeds
                if not self.done("records", (flag, e.name, p, fr, s))]
        bb = self.backbone(e, flag)
        for proto, fr, seed in tqdm(todo, desc=f"{flag}/{e.name}", leave=False, disable=not self.progress):
            t0 = time.perf_counter()
            if proto == "finetune":
                probs, extra = self.finetune(bb, flag, fr, seed)
            else:
                probs, extra = self.probe(bb, flag, proto, fr, seed)
            self.add_record(bb, flag, proto, fr, seed, probs, extra, t0)

    def add_record(self, bb: _Backbone, flag: str, proto: str, fraction: float, seed: int, probs: np.ndarray,
                   extra: dict, t0: float) -> None:
        e, test = bb.entry, self.data(flag, "test")
        self.add("records", {
            "dataset": flag, "protocol": proto, "method": e.name, "fraction": fraction, "seed": seed,
            **classification_metrics(test.labels.numpy(), probs, test.task),
            "arch": _arch_key(e.arch, self.dims(flag), self.cfg.size), "ssl_method": e.method, "init": e.init,
            "pretrain_datasets": "+".join(bb.pretrain_flags()) if e.method != "none" else "",
            **extra, "time_s": round(time.perf_counter() - t0, 3),
        })

    def _subset(self, flag: str, fraction: float, seed: int) -> np.ndarray:
        return class_balanced_subset(self.data(flag, "train").labels.numpy(), fraction, seed)

    def probe(self, bb: _Backbone, flag: str, proto: str, fraction: float, seed: int):
        """Linear / kNN probe of ``bb``'s features of dataset ``flag`` (test probabilities, extras)."""
        ev = self.cfg.eval
        tr, va, te = (self.data(flag, s) for s in SPLITS)
        ftr, fva, fte = (self.features(bb, flag, s) for s in SPLITS)
        idx = torch.from_numpy(self._subset(flag, fraction, seed))
        args = (ftr[idx], tr.labels[idx], fva, va.labels.numpy(), fte, tr.task)
        if proto == "linear":
            probs, params, val_auroc = protocols.linear_probe(
                *args, lrs=ev.linear.lrs, wds=ev.linear.wds, epochs=ev.linear.epochs,
                batch_size=ev.linear.batch_size, seed=seed, num_classes=_num_outputs(tr), device=self.device)
        else:
            probs, params, val_auroc = protocols.knn_probe(
                *args, ks=ev.knn.ks, temps=ev.knn.temps, num_classes=_num_outputs(tr), device=self.device)
        return probs, {"n_train": len(idx), "params": params, "val_auroc": val_auroc}

    def _finetune_path(self, bb: _Backbone, flag: str) -> Path:
        return self.out / "models" / f"{bb.id}__{flag}_finetune.pt"

    def finetune(self, bb: _Backbone, flag: str, fraction: float, seed: int, save: bool = False):
        """Fine-tune ``bb`` on ``flag``; the model of 100 % labels and the first seed is kept for OOD."""
        ft = self.cfg.eval.finetune
        tr, va, te = (self.data(flag, s) for s in SPLITS)
        idx = torch.from_numpy(self._subset(flag, fraction, seed))
        model = bb.fresh(seed)
        in_ch = _in_channels(model)
        x_tr, x_va, x_te = (_adapt(d.images, in_ch) for d in (tr, va, te))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(bb.entry.seed + seed)
            head = nn.Linear(model.out_dim, _num_outputs(tr)).to(self.device)
        augment = None
        if ft.augment == "light":
            from medssl.transforms.ssl_augment import SSLAugment

            augment = SSLAugment("light", spatial_dims=tr.spatial_dims, std=None).to(self.device)
        probs, history = protocols.fine_tune(
            model, head, (x_tr[idx], tr.labels[idx]), (x_va, va.labels.numpy()), x_te, tr.task, epochs=ft.epochs,
            lr=ft.lr, batch_size=ft.batch_size, augment=augment, precision=ft.precision, seed=seed,
            weight_decay=ft.weight_decay, device=self.device, progress=self.progress)
        ood = self.cfg.ood
        if save or (ood.enabled and ood.model == "finetune" and fraction == 1.0 and seed == self.cfg.eval.seeds[0]):
            state = {"hash": self.record_hash(bb.entry, flag, "finetune"),
                     "model": {k: v.cpu() for k, v in model.state_dict().items()},
                     "head": {k: v.cpu() for k, v in head.state_dict().items()}}
            _save_pt(state, self._finetune_path(bb, flag))
        return probs, {"n_train": len(idx), "best_epoch": history["best_epoch"],
                       "val_auroc": (history["best_val"] or {}).get("auroc")}

    # -- OOD
    def ood(self, flag: str, e: MedMNISTPretrainEntry) -> None:
        cfg, seed0 = self.cfg, self.cfg.eval.seeds[0]
        others = [o for o in cfg.datasets if o != flag and self.dims(o) == self.dims(flag)]
        todo = [(o, s) for o in others for s in cfg.ood.scores if not self.done("ood", (flag, o, e.name, s, seed0))]
        if not todo:
            return
        bb = self.backbone(e, flag)
        tr = self.data(flag, "train")
        if cfg.ood.model == "linear":
            feats_of, logits_of = self._linear_ood_model(bb, flag, seed0)
        else:
            feats_of, logits_of = self._finetune_ood_model(bb, flag, seed0)
        from medssl.eval import ood as ood_mod

        maha = None
        if "mahalanobis" in cfg.ood.scores:
            labels = None if tr.multilabel else tr.labels.numpy()
            maha = ood_mod.MahalanobisScorer().fit(feats_of(flag, "train").numpy(), labels)

        def score(name: str, target: str) -> np.ndarray:
            if name == "mahalanobis":
                return maha.score(feats_of(target, "test").numpy())
            logits = logits_of(target)
            return ood_mod.max_softmax(logits) if name == "msp" else ood_mod.energy(logits)

        for other, name in todo:
            s_in, s_out = score(name, flag), score(name, other)
            self.add("ood", {"train": flag, "test": other, "method": e.name, "score": name, "seed": seed0,
                             **ood_mod.ood_metrics(s_in, s_out), "model": cfg.ood.model,
                             "n_in": len(s_in), "n_out": len(s_out),
                             "roc": ood_mod.roc_curve_points(s_in, s_out)})

    def _linear_ood_model(self, bb: _Backbone, flag: str, seed: int):
        """Features and linear-head logits (100 % labels, ``seed``; lr/wd as the probe selected)."""
        ev = self.cfg.eval
        tr, va = self.data(flag, "train"), self.data(flag, "val")
        ftr = self.features(bb, flag, "train")
        rec = self.done("records", (flag, bb.entry.name, "linear", 1.0, seed))
        if rec is not None and rec.get("params"):
            params = rec["params"]
        else:  # the linear protocol did not run at 100 %: select lr x wd the same way
            _, params, _ = protocols.linear_probe(
                ftr, tr.labels, self.features(bb, flag, "val"), va.labels.numpy(), self.features(bb, flag, "test"),
                tr.task, lrs=ev.linear.lrs, wds=ev.linear.wds, epochs=ev.linear.epochs,
                batch_size=ev.linear.batch_size, seed=seed, num_classes=_num_outputs(tr), device=self.device)
        task = normalize_task(tr.task)
        mean, std = ftr.mean(0), ftr.std(0, unbiased=False)  # the probe's standardisation
        std = torch.where(std > 1e-6, std, torch.ones_like(std))
        x = ((ftr - mean) / std).to(self.device)
        # the same private trainer linear_probe uses: same seed and params give the selected layer
        layer = protocols._train_linear(x, protocols._labels(tr.labels, task).to(self.device), _num_outputs(tr),
                                        task, params["lr"], params["wd"], ev.linear.epochs,
                                        ev.linear.batch_size, seed)

        def feats_of(target: str, split: str) -> torch.Tensor:
            return self.features(bb, target, split)

        def logits_of(target: str) -> torch.Tensor:
            with torch.no_grad():
                return layer(((feats_of(target, "test") - mean) / std).to(self.device)).float().cpu()

        return feats_of, logits_of

    def _finetune_ood_model(self, bb: _Backbone, flag: str, seed: int):
        """Features and logits of the network fine-tuned on 100 % of ``flag``'s labels with ``seed``."""
        path = self._finetune_path(bb, flag)
        want = self.record_hash(bb.entry, flag, "finetune")
        state = _load_pt(path) if path.is_file() else None
        if not (isinstance(state, dict) and state.get("hash") == want):
            t0 = time.perf_counter()
            probs, extra = self.finetune(bb, flag, 1.0, seed, save=True)
            key = (flag, bb.entry.name, "finetune", 1.0, seed)
            if key in self._plan["records"] and not self.done("records", key):
                self.add_record(bb, flag, "finetune", 1.0, seed, probs, extra, t0)
            state = _load_pt(path)
        model = bb.fresh(seed)
        model.load_state_dict(state["model"])
        head = nn.Linear(model.out_dim, _num_outputs(self.data(flag, "train"))).to(self.device)
        head.load_state_dict(state["head"])
        precision = self.cfg.eval.finetune.precision
        cache: dict[tuple[str, str], tuple] = {}

        def run(target: str, split: str):
            if (target, split) not in cache:
                images = _adapt(self.data(target, split).images, _in_channels(model))
                cache[target, split] = _forward(model, images, self.device, precision, head)
            return cache[target, split]

        return (lambda target, split: run(target, split)[0]), (lambda target: run(target, "test")[1])

    # -- transfer
    def transfer(self) -> None:
        from tqdm.auto import tqdm

        cfg = self.cfg
        todo = [key for key in self._plan["transfer"] if not self.done("transfer", key)]
        for a, b, name, fr, seed in tqdm(todo, desc="transfer", leave=False, disable=not self.progress):
            e = next(p for p in cfg.pretrain if p.name == name)
            bb = self.backbone(e, b, pretrain_flag=a)
            t0 = time.perf_counter()
            probs, extra = self.probe(bb, b, "linear", fr, seed)
            test = self.data(b, "test")
            self.add("transfer", {"pretrain": a, "dataset": b, "method": name, "protocol": "linear", "fraction": fr,
                                  "seed": seed, **classification_metrics(test.labels.numpy(), probs, test.task),
                                  **extra, "time_s": round(time.perf_counter() - t0, 3)})


# ---------------------------------------------------------------- report pieces


def _arch_key(arch: str, dims: int, size: int) -> str:
    """The key of :data:`medssl.eval.report.PUBLISHED_MEDMNIST_V2` (``resnet18_28``, ``resnet18_3d_28``)."""
    return f"{arch}_3d_{size}" if dims == 3 else f"{arch}_{size}"


def _meta(cfg: MedMNISTEvalConfig, device: torch.device) -> dict:
    import medssl

    return {"config": cfg.name, "datasets": ", ".join(cfg.datasets), "size": cfg.size,
            "pretrain": ", ".join(
                f"{p.name} ({p.method}, {p.arch}{f' {p.arch_kwargs}' if p.arch_kwargs else ''})" for p in cfg.pretrain
            ),
            "protocols": ", ".join(cfg.eval.protocols), "seeds": len(cfg.eval.seeds),
            "device": str(device), "medssl": medssl.__version__, "torch": torch.__version__}


def _write_transfer_csv(rows: list[dict], path: Path) -> Path:
    first = ["pretrain", "dataset", "method", "protocol", "fraction", "seed", "acc", "balanced_acc", "auroc"]
    extra = sorted({k for r in rows for k in r if k not in first})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=first + extra, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in r.items()})
    return write_atomic_text(path, buf.getvalue())


def _ci_cell(values: list) -> tuple[str, float]:
    vals = [math.nan if v is None else float(v) for v in values]
    mean, half = mean_ci(vals)
    n = sum(not math.isnan(v) for v in vals)
    if n == 0:
        return "n/a", math.nan
    return (f"{mean:.3f} (n=1)" if n == 1 else f"{mean:.3f} ± {half:.3f} (n={n})"), mean


def transfer_matrix(results: dict, method: str, fraction: float, metric: str = "auroc") -> tuple[list[str], list[list]]:
    """``(datasets, cells)`` of the transfer matrix of one entry: ``cells[i][j]`` = ``(text, mean)`` of
    ``metric`` pretrained on ``datasets[i]``, evaluated on ``datasets[j]`` (the diagonal from the in-domain
    linear records); ``None`` where there is no result."""
    rows = [r for r in results.get("transfer", []) if r["method"] == method and r["fraction"] == fraction]
    flags = list(dict.fromkeys([r["pretrain"] for r in rows] + [r["dataset"] for r in rows]))
    cells = []
    for a in flags:
        line = []
        for b in flags:
            if a == b:
                grp = [r for r in results.get("records", []) if r["dataset"] == a and r["method"] == method
                       and r["protocol"] == "linear" and r["fraction"] == fraction]
            else:
                grp = [r for r in rows if r["pretrain"] == a and r["dataset"] == b]
            line.append(_ci_cell([r.get(metric) for r in grp]) if grp else None)
        cells.append(line)
    return flags, cells


def _transfer_section(results: dict, cfg: MedMNISTEvalConfig, out: Path) -> list[str]:
    rows = results.get("transfer", [])
    if not rows:
        return []
    from matplotlib.figure import Figure

    lines = ["## Cross-dataset transfer (linear probe)", "",
             "Rows: the dataset the backbone was pretrained on; columns: the dataset it is linear-probed on "
             "(test AUROC, mean ± 95 % CI over seeds). The diagonal is the in-domain linear probe.", ""]
    for method in dict.fromkeys(r["method"] for r in rows):
        for fraction in sorted({r["fraction"] for r in rows if r["method"] == method}):
            flags, cells = transfer_matrix(results, method, fraction)
            title = f"{method}, {fraction * 100:g}% labels"
            lines += [f"### {title}", ""]
            lines += ["| pretrained on \\ evaluated on | " + " | ".join(flags) + " |", "|" + "---|" * (len(flags) + 1)]
            lines += ["| " + a + " | " + " | ".join(c[0] if c else "" for c in line) + " |"
                      for a, line in zip(flags, cells)]
            fig = Figure(figsize=(1.6 * len(flags) + 2, 1.3 * len(flags) + 1.5), layout="constrained")
            ax = fig.subplots()
            grid = np.array([[c[1] if c else np.nan for c in line] for line in cells], dtype=float)
            im = ax.imshow(grid, vmin=0.5, vmax=1.0, cmap="viridis")
            for i in range(len(flags)):
                for j in range(len(flags)):
                    if not np.isnan(grid[i, j]):
                        ax.text(j, i, f"{grid[i, j]:.3f}", ha="center", va="center", fontsize=9,
                                color="k" if grid[i, j] > 0.8 else "w")  # readable on viridis
            ax.set_xticks(range(len(flags)), flags, rotation=30, ha="right")
            ax.set_yticks(range(len(flags)), flags)
            ax.set(xlabel="evaluated on", ylabel="pretrained on", title=f"transfer AUROC: {title}")
            fig.colorbar(im, ax=ax, shrink=0.8)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            slug = re.sub(r"[^A-Za-z0-9._-]+", "-", f"transfer_{method}_{fraction * 100:g}pct")
            png = write_atomic_bytes(out / f"{slug}.png", buf.getvalue())
            lines += ["", f"![transfer {title}]({png.name})", ""]
    return lines


# ---------------------------------------------------------------- entry point


def run_medmnist_eval(cfg: MedMNISTEvalConfig, out: str | Path, progress: bool = True) -> dict:
    """Run (or resume) a MedMNIST SSL evaluation; see the module doc for the order and the files.

    Args:
        cfg: the validated recipe (:func:`medssl.medmnist.config.load_medmnist_eval_config`).
        out: run folder; created if needed; an earlier run's results there are resumed.
        progress: tqdm bars (outer loop over dataset x entry, inner over records, pretraining epochs).

    Returns:
        The results structure (``records``, ``ood``, ``transfer``, ``notes``, ``meta``) as written to
        ``out/results.json``.

    Raises:
        DataError: a MedMNIST file or an init checkpoint is missing or invalid.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_text(out / "config.yaml", dump_config(cfg))
    return _Run(cfg, out, progress).execute()

