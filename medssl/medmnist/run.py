"""``medssl eval medmnist``: SSL pretraining and its evaluation on MedMNIST, resumable.

One call of :func:`run_medmnist_eval` runs a whole :class:`~medssl.medmnist.config.MedMNISTEvalConfig`:

1. **Backbones** (:mod:`medssl.medmnist.backbone_provider`): for every eval dataset, every
   ``pretrain`` entry and every pretraining seed, random weights, a checkpoint, or SSL pretraining
   on the train split(s).
2. **Features.** Each backbone's pooled features of each split are computed once and cached in
   ``out/features/<entry>__s<pretraining seed>__<tag>__<dataset>_<size>_<split>.pt`` (atomic;
   recomputed when the backbone's fingerprint changes). Images are converted to the backbone's input channels
   (:func:`~medssl.medmnist.channels.adapt_channels`) and scaled to [0, 1]; the backbone wrapper
   normalises them as in pretraining, also when fine-tuning.
3. **Records.** For every pretraining seed of the entry (``pretrain_seeds`` / the entry's
   ``seeds``: one pretraining, or one random initialisation, each) x protocol x label fraction x
   eval seed: a class-balanced subset of the train labels drawn from the eval seed
   (:func:`~medssl.medmnist.subsample.class_balanced_subset`; the same subset for every entry and
   pretraining seed), then the linear probe (lr x wd chosen on val), kNN (k x T chosen on val) or
   full fine-tuning (best validation epoch), and test ACC, balanced ACC, AUROC. The selection
   metric is ``eval.select_on`` (validation AUROC by default). The test labels are read only to
   score the selected model. Fine-tuning a random-init entry draws the initial weights from the
   pretraining and eval seeds mixed; a pretrained entry always starts from its pretrained weights.
4. **OOD** (``ood.enabled``, :mod:`medssl.medmnist.ood_step`), right after the records of
   ``(A, entry)``. Pairs with different spatial dims are skipped with a note.
5. **Transfer** (``transfer.enabled``, :mod:`medssl.medmnist.transfer`), after everything else.

Results: ``results.json`` (``records``, ``ood``, ``transfer``, ``pretraining``, ``notes``, ``meta``;
record layout as in :mod:`medssl.medmnist.report`, with ``method`` = the pretrain entry's name and
``pretrain_seed`` beside the eval ``seed``; ``pretraining``: what each pretraining actually ran,
from its marker), ``results.csv``,
``ood.csv``, ``transfer.csv``, and ``report.md`` with PNG plots (:func:`~medssl.medmnist.report.render_report`
plus the transfer matrices and notes). A record named ``supervised*`` at 100 % labels is shown
beside the published MedMNIST v2 numbers of its dataset.

Resume (:mod:`medssl.medmnist.plan`): every result has a key and a hash of the settings that
produced it, the code's resolved defaults included; the results of ``out/results.json`` whose key
is planned and whose hash matches are kept, and an unfinished pretraining resumes from its last
epoch. ``results.json``/``.csv`` are rewritten atomically after every record, so an interrupted run
loses at most the record in progress; ``report.md`` and the plots are re-rendered at most every
:data:`REPORT_EVERY_S` seconds and at the end.

Progress: tqdm bars on a terminal; elsewhere (a log file) or with bars off, timestamped lines
(:class:`~medssl.medmnist.progress.Progress`): every stage, and at most one line a minute of
pretraining / fine-tuning epochs and records.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.config import dump_config
from medssl.core.atomic import write_atomic_text
from medssl.medmnist import features as feat
from medssl.medmnist import finetune as ft_mod
from medssl.medmnist import protocols
from medssl.medmnist.backbone_provider import Backbone, in_channels_of, mix_seed, num_outputs, pretrain_folder
from medssl.medmnist.channels import adapt_channels
from medssl.medmnist.config import MedMNISTEvalConfig, MedMNISTPretrainEntry
from medssl.medmnist.data import MedMNISTSplit, load_medmnist
from medssl.medmnist.metrics import classification_metrics
from medssl.medmnist.ood_step import ood_step
from medssl.medmnist.plan import MARKER, ResultBook, plan_run, pretrain_flags, record_hash, transfer_entries
from medssl.medmnist.progress import LINE_EVERY_S, Progress
from medssl.medmnist.report import render_report, write_results
from medssl.medmnist.subsample import class_balanced_subset
from medssl.medmnist.transfer import transfer_section, transfer_step, write_transfer_csv

__all__ = ["MedMNISTRun", "run_medmnist_eval", "REPORT_EVERY_S"]

#: Seconds between re-renderings of report.md and its plots (results files: after every record).
REPORT_EVERY_S = 60.0
SPLITS = ("train", "val", "test")


def _arch_key(arch: str, dims: int, size: int) -> str:
    """The key of :data:`medssl.medmnist.report.PUBLISHED_MEDMNIST_V2` (``resnet18_28``, ``resnet18_3d_28``)."""
    return f"{arch}_3d_{size}" if dims == 3 else f"{arch}_{size}"


def run_meta(cfg: MedMNISTEvalConfig, device: torch.device) -> dict:
    """The ``meta`` block of ``results.json`` (listed at the top of the report)."""
    from medssl.medmnist.provenance import code_version

    seeds = {p.name: cfg.seeds_of(p) for p in cfg.pretrain}
    distinct = {tuple(v) for v in seeds.values()}
    pseeds = (", ".join(map(str, distinct.pop())) if len(distinct) == 1
              else "; ".join(f"{k}: {', '.join(map(str, v))}" for k, v in seeds.items()))
    return {"config": cfg.name, "datasets": ", ".join(cfg.datasets), "size": cfg.size,
            "pretrain": ", ".join(
                f"{p.name} ({p.method}, {p.arch}{f' {p.arch_kwargs}' if p.arch_kwargs else ''}"
                f"{f', augmentation {p.augment_preset}' if p.augment_preset else ''})" for p in cfg.pretrain
            ),
            "protocols": ", ".join(cfg.eval.protocols), "pretraining seeds": pseeds,
            "eval seeds": len(cfg.eval.seeds), "selection": f"validation {cfg.eval.select_on.upper()}",
            "device": str(device), "threads": torch.get_num_threads(), "code": code_version(),
            "torch": torch.__version__}


class MedMNISTRun:
    """One run: its data, backbones, feature cache, result book and the steps that fill it.

    Args:
        cfg: the validated recipe.
        out: run folder.
        progress: tqdm bars when stderr is a terminal; otherwise (or ``False``) plain periodic lines.
        quiet: no bars and no lines.
        progress_every_s: seconds between two periodic lines.
    """

    def __init__(self, cfg: MedMNISTEvalConfig, out: Path, progress: bool, quiet: bool = False,
                 progress_every_s: float = LINE_EVERY_S):
        from medssl.core.runtime import interactive

        self.cfg, self.out = cfg, Path(out)
        self.ui = Progress(bars=interactive(progress), quiet=quiet, every_s=progress_every_s)
        if cfg.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(cfg.device)
        self._data: dict[tuple[str, str], MedMNISTSplit] = {}
        self._backbones: dict[str, Backbone] = {}
        self._last_report = -math.inf
        self.results: dict[str, Any] = {"records": [], "ood": [], "transfer": [], "notes": [], "meta": {}}
        self.book = ResultBook({"records": {}, "ood": {}, "transfer": {}})

    # -- context
    @property
    def bars(self) -> bool:
        """Progress bars are drawn (a terminal)."""
        return self.ui.bars

    def log(self, msg: str) -> None:
        self.ui.log(msg)

    def epoch_reporter(self, what: str):
        """A pretraining's ``on_epoch`` callback: rate-limited progress lines (none with bars)."""
        if not self.ui.lines:
            return None

        def report(rec: dict) -> None:
            self.ui.tick(f"{what}: epoch {rec['epoch']}/{rec['epochs']}, loss {rec['loss']:.4f}, "
                         f"{rec.get('images_per_s', 0):.0f} img/s", force=rec["epoch"] == rec["epochs"])

        return report

    def data(self, flag: str, split: str) -> MedMNISTSplit:
        if (flag, split) not in self._data:
            self._data[flag, split] = load_medmnist(flag, split, self.cfg.size, self.cfg.root, verify=self.cfg.verify)
        return self._data[flag, split]

    def dims(self, flag: str) -> int:
        from medssl.medmnist.files import flag_info

        return int(flag_info(flag)["spatial_dims"])

    def record_hash(self, e: MedMNISTPretrainEntry, flag: str, proto: str, pretrain_seed: int | None = None) -> str:
        return record_hash(self.cfg, e, flag, proto, pretrain_seed=pretrain_seed)

    @staticmethod
    def tag_of(entry: MedMNISTPretrainEntry, eval_flag: str, pretrain_flag: str | None = None) -> str:
        """The folder name of the backbone of ``entry`` evaluated on ``eval_flag``."""
        if entry.method == "none":
            return eval_flag  # random weights / a foreign file are built for the dataset's channels
        return "+".join(entry.datasets) if entry.datasets else (pretrain_flag or eval_flag)

    def backbone(self, entry: MedMNISTPretrainEntry, eval_flag: str, pretrain_seed: int | None = None,
                 pretrain_flag: str | None = None) -> Backbone:
        """The backbone of ``entry`` with ``pretrain_seed`` (default: its first) evaluated on
        ``eval_flag`` (pretrained on ``pretrain_flag`` if given)."""
        pseed = self.cfg.seeds_of(entry)[0] if pretrain_seed is None else pretrain_seed
        tag = self.tag_of(entry, eval_flag, pretrain_flag)
        key = f"{entry.name}__s{pseed}__{tag}"
        if key not in self._backbones:
            own = eval_flag if entry.method == "none" else (pretrain_flag or eval_flag)
            self._backbones[key] = Backbone(self, entry, tag, own, pseed)
        return self._backbones[key]

    def features(self, bb: Backbone, flag: str, split: str) -> torch.Tensor:
        """Cached ``(N, D)`` features of ``flag``'s ``split`` under backbone ``bb``."""
        path = self.out / "features" / f"{bb.id}__{flag}_{self.cfg.size}_{split}.pt"
        fp = bb.fingerprint()
        cached = feat.load_pt(path) if path.is_file() else None
        if isinstance(cached, dict) and cached.get("fingerprint") == fp:
            return cached["features"]
        model = bb.module()
        images = adapt_channels(self.data(flag, split).images, in_channels_of(model))
        feats, _ = feat.forward(model, images, self.device, bb.entry.precision)
        feat.save_pt({"fingerprint": fp, "features": feats}, path)
        return feats

    # -- results
    def done(self, kind: str, key: tuple) -> dict | None:
        return self.book.get(kind, key)

    def add(self, kind: str, record: dict) -> None:
        self.book.add(kind, record)
        self.write()

    def note(self, text: str) -> None:
        if text not in self.results["notes"]:
            self.results["notes"].append(text)
            self.log(f"note: {text}")

    def collect(self) -> dict:
        for kind in self.book.plan:
            self.results[kind] = self.book.ordered(kind)
        self.results["pretraining"] = self.pretraining_summary()
        return self.results

    def pretraining_summary(self) -> list[dict]:
        """What every pretraining of the plan ran, read from its marker (``status`` says if it has
        not started or not finished); the report's "Pretraining" table."""
        cfg, rows, seen = self.cfg, [], set()
        pairs = [(flag, e) for flag in cfg.datasets for e in cfg.pretrain if e.method != "none"]
        for flag, e in pairs:
            for ps in cfg.seeds_of(e):
                tag = self.tag_of(e, flag)
                if (e.name, ps, tag) in seen:
                    continue
                seen.add((e.name, ps, tag))
                folder = pretrain_folder(self.out, e.name, ps, tag)
                try:
                    rec = json.loads((folder / MARKER).read_text())
                except (OSError, ValueError):
                    rec = {}
                resolved = rec.get("resolved") or {}
                rows.append({
                    "entry": e.name, "pretrain_seed": ps, "datasets": "+".join(pretrain_flags(e, flag)),
                    "method": e.method, "arch": e.arch, "epochs": e.epochs,
                    "status": "done" if rec.get("complete") else ("running or stopped" if rec else "not started"),
                    **{k: rec.get(k) for k in ("epochs_run", "steps", "time_s", "final_loss", "images_per_s", "code")},
                    "lr": (resolved.get("optimizer") or {}).get("lr"),
                    "method_kwargs": resolved.get("method_kwargs"),
                    "augment": (resolved.get("augment") or {}).get("preset"),
                })
        return rows

    def write(self, final: bool = False) -> None:
        results = self.collect()
        write_results(results, self.out)
        if results["transfer"]:
            write_transfer_csv(results["transfer"], self.out / "transfer.csv")
        if final or time.monotonic() - self._last_report >= REPORT_EVERY_S:
            self._last_report = time.monotonic()
            self.render()

    def render(self) -> Path:
        published = None if self.cfg.report.published else {}
        path = render_report(self.results, self.out, published=published, baseline=self.cfg.report.baseline)
        extra = transfer_section(self.results, self.out)
        if self.results["notes"]:
            extra += ["## Notes", "", *(f"- {n}" for n in self.results["notes"]), ""]
        if extra:
            write_atomic_text(path, path.read_text() + "\n" + "\n".join(extra))
        return path

    # -- the work
    def execute(self) -> dict:
        from tqdm.auto import tqdm

        cfg = self.cfg
        self.book = ResultBook(plan_run(cfg, self.dims))
        self.book.load(self.out / "results.json", self.log)
        self.results["meta"] = run_meta(cfg, self.device)
        self._notes()
        self.write()
        jobs = [(flag, e, ps) for flag in cfg.datasets for e in cfg.pretrain for ps in cfg.seeds_of(e)]
        with tqdm(jobs, desc="medmnist eval", unit="job", disable=not self.bars) as bar:
            for i, (flag, e, ps) in enumerate(bar):
                bar.set_postfix_str(f"{flag} / {e.name} / seed {ps}")
                self.ui.tick(f"job {i + 1}/{len(jobs)}: {flag} / {e.name} / pretraining seed {ps}", force=True)
                self.records(flag, e, ps)
                if cfg.ood.enabled:
                    ood_step(self, flag, e, ps)
                for bb in self._backbones.values():
                    bb.release()
        if cfg.transfer.enabled:
            transfer_step(self)
        self.write(final=True)
        return self.results

    def _notes(self) -> None:
        """What the config asks for that cannot be computed, said once in the report."""
        cfg = self.cfg
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
            if not transfer_entries(cfg):
                self.note("transfer: no pretrain entry pretrains per dataset (method other than 'none', "
                          "no fixed 'datasets'); no transfer matrix")
            if not self.book.plan["transfer"]:
                self.note("transfer: needs at least two datasets with the same spatial dims")

    def records(self, flag: str, e: MedMNISTPretrainEntry, pretrain_seed: int) -> None:
        from tqdm.auto import tqdm

        ev = self.cfg.eval
        todo = [(p, fr, s) for p in ev.protocols for fr in ev.fractions for s in ev.seeds
                if not self.done("records", (flag, e.name, pretrain_seed, p, fr, s))]
        bb = self.backbone(e, flag, pretrain_seed)
        name = f"{flag}/{e.name}/s{pretrain_seed}"
        for i, (proto, fr, seed) in enumerate(tqdm(todo, desc=name, leave=False, disable=not self.bars)):
            t0 = time.perf_counter()
            if proto == "finetune":
                probs, extra = self.finetune(bb, flag, fr, seed)
            else:
                probs, extra = self.probe(bb, flag, proto, fr, seed)
            self.add_record(bb, flag, proto, fr, seed, probs, extra, t0)
            self.ui.tick(f"records {name}: {i + 1}/{len(todo)} done", force=i + 1 == len(todo))

    def add_record(self, bb: Backbone, flag: str, proto: str, fraction: float, seed: int, probs: np.ndarray,
                   extra: dict, t0: float) -> None:
        """Score ``probs`` on the test labels (the only place they are read) and store the record."""
        e, test = bb.entry, self.data(flag, "test")
        self.add("records", {
            "dataset": flag, "protocol": proto, "method": e.name, "pretrain_seed": bb.pseed, "fraction": fraction,
            "seed": seed,
            **classification_metrics(test.labels.numpy(), probs, test.task),
            "arch": _arch_key(e.arch, self.dims(flag), self.cfg.size), "ssl_method": e.method, "init": e.init,
            "pretrain_datasets": "+".join(bb.pretrain_flags()) if e.method != "none" else "",
            **extra, "time_s": round(time.perf_counter() - t0, 3),
        })

    def _subset(self, flag: str, fraction: float, seed: int) -> np.ndarray:
        return class_balanced_subset(self.data(flag, "train").labels.numpy(), fraction, seed)

    def probe_data(self, bb: Backbone, flag: str, idx: torch.Tensor) -> protocols.ProbeData:
        """``bb``'s features of ``flag``: the train rows ``idx`` with their labels, val with labels,
        test without."""
        tr, va = self.data(flag, "train"), self.data(flag, "val")
        ftr, fva, fte = (self.features(bb, flag, s) for s in SPLITS)
        return protocols.ProbeData(ftr[idx], tr.labels[idx], fva, va.labels.numpy(), fte, tr.task)

    def probe(self, bb: Backbone, flag: str, proto: str, fraction: float, seed: int):
        """Linear / kNN probe of ``bb``'s features of dataset ``flag`` (test probabilities, extras)."""
        ev = self.cfg.eval
        idx = torch.from_numpy(self._subset(flag, fraction, seed))
        data = self.probe_data(bb, flag, idx)
        outputs = num_outputs(self.data(flag, "train"))
        if proto == "linear":
            probs, params, val_auroc = protocols.linear_probe(
                data, lrs=ev.linear.lrs, wds=ev.linear.wds, epochs=ev.linear.epochs,
                batch_size=ev.linear.batch_size, seed=seed, num_classes=outputs, device=self.device,
                select_on=ev.select_on)
        else:
            probs, params, val_auroc = protocols.knn_probe(
                data, ks=ev.knn.ks, temps=ev.knn.temps, num_classes=outputs, device=self.device, vote=ev.knn.vote,
                select_on=ev.select_on)
        return probs, {"n_train": len(idx), "params": params, "val_auroc": val_auroc}

    def finetune_path(self, bb: Backbone, flag: str) -> Path:
        return self.out / "models" / f"{bb.id}__{flag}_finetune.pt"

    def finetune(self, bb: Backbone, flag: str, fraction: float, seed: int, save: bool = False):
        """Fine-tune ``bb`` on ``flag``; the model of 100 % labels and the first seed is kept for OOD."""
        ft = self.cfg.eval.finetune
        tr, va, te = (self.data(flag, s) for s in SPLITS)
        idx = torch.from_numpy(self._subset(flag, fraction, seed))
        model = bb.fresh(seed)
        in_ch = in_channels_of(model)
        x_tr, x_va, x_te = (adapt_channels(d.images, in_ch) for d in (tr, va, te))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(mix_seed(bb.pseed, seed))
            head = nn.Linear(model.out_dim, num_outputs(tr)).to(self.device)
        augment = None
        if ft.augment == "light":
            from medssl.transforms.image_ssl_augment import SSLAugment

            augment = SSLAugment("light", spatial_dims=tr.spatial_dims, std=None).to(self.device)
        probs, history = ft_mod.fine_tune(
            model, head, (x_tr[idx], tr.labels[idx]), (x_va, va.labels.numpy()), x_te, tr.task, epochs=ft.epochs,
            lr=ft.lr, batch_size=ft.batch_size, augment=augment, precision=ft.precision, seed=seed,
            weight_decay=ft.weight_decay, device=self.device, progress=self.bars, select_on=self.cfg.eval.select_on,
            on_epoch=self._finetune_reporter(f"fine-tune {bb.id} on {flag} ({fraction:g}, seed {seed})"))
        ood = self.cfg.ood
        if save or (ood.enabled and ood.model == "finetune" and fraction == 1.0 and seed == self.cfg.eval.seeds[0]):
            state = {"hash": self.record_hash(bb.entry, flag, "finetune", bb.pseed),
                     "model": {k: v.cpu() for k, v in model.state_dict().items()},
                     "head": {k: v.cpu() for k, v in head.state_dict().items()}}
            feat.save_pt(state, self.finetune_path(bb, flag))
        return probs, {"n_train": len(idx), "best_epoch": history["best_epoch"],
                       "val_auroc": (history["best_val"] or {}).get("auroc")}

    def _finetune_reporter(self, what: str):
        if not self.ui.lines:
            return None
        return lambda rec: self.ui.tick(f"{what}: epoch {rec['epoch']}/{rec['epochs']}, loss {rec['train_loss']:.4f}, "
                                        f"val AUROC {rec['val_auroc']:.3f}")


def run_medmnist_eval(cfg: MedMNISTEvalConfig, out: str | Path, progress: bool = True, threads: int | None = None,
                      quiet: bool = False) -> dict:
    """Run (or resume) a MedMNIST SSL evaluation; see the module doc for the order and the files.

    Args:
        cfg: the validated recipe (:func:`medssl.medmnist.config.load_medmnist_eval_config`).
        out: run folder; created if needed; an earlier run's results there are resumed.
        progress: tqdm bars on a terminal (outer loop over dataset x entry x pretraining seed, inner
            over records, pretraining epochs); without a terminal, or ``False``, plain periodic lines.
        threads: torch CPU threads (``torch.set_num_threads``); ``None``: torch's default (all cores).
        quiet: neither bars nor lines.

    Returns:
        The results structure (``records``, ``ood``, ``transfer``, ``notes``, ``meta``) as written to
        ``out/results.json``.

    Raises:
        DataError: a MedMNIST file or an init checkpoint is missing or invalid.
    """
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(int(threads))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic_text(out / "config.yaml", dump_config(cfg))
    return MedMNISTRun(cfg, out, progress, quiet=quiet).execute()
