"""The plan of a MedMNIST run: every result its config produces, keyed, with a hash of the settings
behind it; and the book of finished results that makes a run resumable.

Keys: a record is ``(dataset, entry, pretraining seed, protocol, fraction, eval seed)``, an OOD
result ``(train, test, entry, pretraining seed, score, eval seed)``, a transfer result
``(pretrained on, evaluated on, entry, pretraining seed, fraction, eval seed)``.

The hash covers what produced the result, code defaults included: the entry's settings as written
(with the pretraining seed, and the size and mtime of an ``init`` weights file), the **resolved**
settings behind them (:func:`resolved_settings`: for a pretraining, the engine's
:func:`~medssl.engines.image_ssl.describe_pretraining`, i.e. the method's keywords after its
declared defaults, the optimiser, the augmentation recipe, a digest of the built model; for any
backbone its default keywords and input normalisation), the dataset and image size, the
protocol's settings, the selection metric and the protocol code's behaviour version
(:data:`~medssl.medmnist.protocols.PROTOCOL_VERSION`). At the start of a run the finished results
of ``results.json`` whose key is planned and whose hash matches are kept (:meth:`ResultBook.load`);
the others are dropped, so a changed setting, or a changed default in the code, recomputes exactly
what it affects. Results of older medssl versions (keys without the pretraining seed, hashes without
the resolved settings) are recomputed once.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from medssl.errors import DataError
from medssl.medmnist.config import MedMNISTEvalConfig, MedMNISTPretrainEntry

#: the file that marks a finished pretraining folder (settings hash, checkpoint name)
MARKER = "medssl_pretrain.json"
KINDS = ("records", "ood", "transfer")


def digest(obj: Any) -> str:
    """A short hash of a JSON-able structure (keys sorted)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def file_id(path: Path) -> list:
    """Name, size and mtime: a rewritten file changes it, a moved run folder does not."""
    st = path.stat()
    return [path.name, st.st_size, st.st_mtime_ns]


def resolve_init(entry: MedMNISTPretrainEntry, eval_flag: str | None = None) -> Path:
    """The weights file of ``init: checkpoint`` / ``init: run``.

    ``run`` may be a checkpoint file, a pretraining folder (with ``medssl_pretrain.json``, else
    holding one checkpoint file or one named final/last/backbone), or a folder of several such
    folders (``<eval out>/pretrain/<entry>/seed<k>``, one per dataset): then the one named
    ``eval_flag``. ``<eval out>/pretrain/<entry>`` itself holds one folder per pretraining seed: it
    is accepted when there is only one.
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
    if not markers:
        seeds = sorted(p for p in path.glob("seed*") if p.is_dir() and any(p.glob(f"*/{MARKER}")))
        if len(seeds) > 1:
            raise DataError(f"holds the pretrainings of several seeds ({', '.join(p.name for p in seeds)}); "
                            f"name one of these folders as 'run'", path)
        if seeds:
            markers = sorted(seeds[0].glob(f"*/{MARKER}"))
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


def entry_settings(e: MedMNISTPretrainEntry, flag: str | None, pretrain_seed: int | None = None) -> dict:
    """What of an entry, as written, determines its backbone (part of every hash of its results):
    its fields (the pretraining seed as ``seed``) and, for fixed weights, the weights file's identity."""
    s = e.model_dump(mode="json", exclude={"name", "seeds"})
    for key in ("arch_kwargs", "augment_preset"):  # unset: as before the fields existed
        if s.get(key) is None:
            s.pop(key, None)
    if pretrain_seed is not None:
        s["seed"] = int(pretrain_seed)
    if e.fixed_weights:
        s["weights"] = file_id(resolve_init(e, flag))
    return s


def pretrain_flags(e: MedMNISTPretrainEntry, flag: str) -> list[str]:
    """The datasets whose train split the entry's backbone for ``flag`` is pretrained on (or, without
    pretraining, built for)."""
    return list(e.datasets) if e.datasets else [flag]


def resolved_settings(cfg: MedMNISTEvalConfig, e: MedMNISTPretrainEntry, flags: list[str],
                      memo: dict | None = None) -> dict:
    """The settings the code resolves for ``e`` on ``flags`` (see the module doc), from the official
    table's image counts and channels (no data is read).

    Args:
        memo: a dict kept by the caller for one planning pass (the defaults cannot change within
            it); results are looked up and stored there by their inputs. Nothing is cached across
            calls without it, so a changed default is always seen.
    """
    from medssl.medmnist.files import flag_info

    infos = [flag_info(f) for f in flags]
    dims = int(infos[0]["spatial_dims"])
    channels = max(int(i["n_channels"]) for i in infos)  # a union repeats 1-channel images to 3
    n = sum(int(i["n_samples"]["train"]) for i in infos)
    key = digest([e.model_dump(mode="json", exclude={"name", "seeds", "seed"}), flags, cfg.size])
    if memo is not None and key in memo:
        return memo[key]
    from medssl.medmnist.backbone_provider import INPUT_MEAN, INPUT_STD, arch_kwargs_for

    out: dict = {"input_norm": [INPUT_MEAN, INPUT_STD]}
    if e.method == "none":
        out["arch_kwargs"] = arch_kwargs_for(e, cfg.size)
    else:
        import torch

        from medssl.engines import image_ssl as engine

        labels = num_classes = None
        if e.method == "supervised":
            info = infos[0]
            k = len(info["label"])
            multi = info["task"].startswith("multi-label")
            labels = torch.zeros(n, k) if multi else torch.zeros(n, dtype=torch.long)
            num_classes = None if multi else (2 if info["task"] == "binary-class" else k)
        st = engine.resolve_settings(
            e.method, (n, channels, *[cfg.size] * dims), arch=e.arch, spatial_dims=dims, epochs=e.epochs,
            batch_size=min(e.batch_size, n), lr=e.lr, weight_decay=e.weight_decay, warmup_epochs=e.warmup_epochs,
            precision=e.precision, labels=labels, num_classes=num_classes, method_kwargs=dict(e.method_kwargs) or None,
            arch_kwargs=e.arch_kwargs, augment_preset=e.augment_preset)
        out["pretraining"] = {k: v for k, v in engine.describe_pretraining(st).items() if k != "seed"}
    if memo is not None:
        memo[key] = out
    return out


def record_hash(cfg: MedMNISTEvalConfig, e: MedMNISTPretrainEntry, flag: str, proto: str,
                pretrained_on: str | None = None, pretrain_seed: int | None = None, memo: dict | None = None) -> str:
    """Hash of the settings behind a record (and a transfer result: ``pretrained_on``) of the
    backbone of pretraining seed ``pretrain_seed`` (default: the entry's first); ``memo`` as
    :func:`resolved_settings`."""
    from medssl.medmnist.protocols import PROTOCOL_VERSION

    pseed = cfg.seeds_of(e)[0] if pretrain_seed is None else pretrain_seed
    return digest({"entry": entry_settings(e, flag, pseed),
                   "resolved": resolved_settings(cfg, e, pretrain_flags(e, pretrained_on or flag), memo),
                   "dataset": flag, "size": cfg.size, "protocol": proto,
                   "settings": getattr(cfg.eval, proto).model_dump(mode="json"), "select_on": cfg.eval.select_on,
                   "code": PROTOCOL_VERSION[proto], "pretrained_on": pretrained_on})


def ood_hash(cfg: MedMNISTEvalConfig, e: MedMNISTPretrainEntry, flag: str, other: str,
             pretrain_seed: int | None = None, memo: dict | None = None) -> str:
    """Hash of the settings behind an OOD result: the model it scores with, and the OOD dataset."""
    model = cfg.ood.model
    return digest({"base": record_hash(cfg, e, flag, model, pretrain_seed=pretrain_seed, memo=memo),
                   "other": other, "model": model})


def transfer_entries(cfg: MedMNISTEvalConfig) -> list[MedMNISTPretrainEntry]:
    """The entries with a transfer matrix: those that pretrain once per dataset."""
    return [e for e in cfg.pretrain if e.method != "none" and not e.datasets]


def plan_run(cfg: MedMNISTEvalConfig, dims: Callable[[str], int]) -> dict[str, dict[tuple, str]]:
    """Every key ``cfg`` produces, per kind, in run order, with its settings hash.

    Args:
        cfg: the run's config.
        dims: a dataset flag's spatial dims (OOD and transfer pair datasets of the same dims).
    """
    ev = cfg.eval
    recs, ood, tr = {}, {}, {}
    seed0 = ev.seeds[0]
    memo: dict = {}
    for flag in cfg.datasets:
        for e in cfg.pretrain:
            for ps in cfg.seeds_of(e):
                for proto in ev.protocols:
                    h = record_hash(cfg, e, flag, proto, pretrain_seed=ps, memo=memo)
                    for fr in ev.fractions:
                        for s in ev.seeds:
                            recs[(flag, e.name, ps, proto, fr, s)] = h
                if cfg.ood.enabled:
                    for other in cfg.datasets:
                        if other != flag and dims(other) == dims(flag):
                            h = ood_hash(cfg, e, flag, other, pretrain_seed=ps, memo=memo)
                            for score in cfg.ood.scores:
                                ood[(flag, other, e.name, ps, score, seed0)] = h
    if cfg.transfer.enabled:
        for e in transfer_entries(cfg):
            for ps in cfg.seeds_of(e):
                for a in cfg.datasets:
                    for b in cfg.datasets:
                        if a != b and dims(a) == dims(b):
                            h = record_hash(cfg, e, b, "linear", pretrained_on=a, pretrain_seed=ps, memo=memo)
                            for fr in cfg.transfer.fractions:
                                for s in ev.seeds:
                                    tr[(a, b, e.name, ps, fr, s)] = h
    return {"records": recs, "ood": ood, "transfer": tr}


def result_key(kind: str, r: dict) -> tuple:
    """The key of a finished result of ``kind``."""
    if kind == "records":
        return (r["dataset"], r["method"], r["pretrain_seed"], r["protocol"], r["fraction"], r["seed"])
    if kind == "ood":
        return (r["train"], r["test"], r["method"], r["pretrain_seed"], r["score"], r["seed"])
    return (r["pretrain"], r["dataset"], r["method"], r["pretrain_seed"], r["fraction"], r["seed"])


class ResultBook:
    """The finished results of a run by kind and key, each stamped with its settings hash.

    Args:
        plan: :func:`plan_run`'s output: per kind, the planned keys in run order and their hashes.
    """

    def __init__(self, plan: dict[str, dict[tuple, str]]) -> None:
        self.plan = plan
        self._order = {k: {key: i for i, key in enumerate(v)} for k, v in plan.items()}
        self._done: dict[str, dict[tuple, dict]] = {k: {} for k in KINDS}

    def load(self, path: Path, log: Callable[[str], None] = lambda _: None) -> None:
        """Keep the results of an earlier ``results.json`` whose key is planned and whose hash matches."""
        if not path.is_file():
            return
        try:
            prev = json.loads(path.read_text())
        except ValueError:
            log(f"warning: {path} is not valid JSON; starting afresh")
            return
        dropped = 0
        for kind in KINDS:
            for r in prev.get(kind) or []:
                try:
                    key = result_key(kind, r)
                except (KeyError, TypeError):
                    dropped += 1
                    continue
                if self.plan[kind].get(key) == r.get("config_hash"):
                    self._done[kind][key] = r
                else:
                    dropped += 1
        if dropped:
            log(f"resume: {dropped} earlier record(s) do not match this config and are recomputed or dropped")
        kept = sum(len(v) for v in self._done.values())
        if kept:
            log(f"resume: {kept} record(s) found in {path}, not recomputed")

    def get(self, kind: str, key: tuple) -> dict | None:
        """The finished result of ``key``, or ``None``."""
        return self._done[kind].get(key)

    def add(self, kind: str, record: dict) -> None:
        """Store a finished result (stamped with its planned hash as ``config_hash``)."""
        key = result_key(kind, record)
        record["config_hash"] = self.plan[kind][key]
        self._done[kind][key] = record

    def ordered(self, kind: str) -> list[dict]:
        """The finished results of ``kind`` in plan order."""
        order = self._order[kind]
        return sorted(self._done[kind].values(), key=lambda r: order[result_key(kind, r)])
