"""The plan of a MedMNIST run: every result its config produces, keyed, with a hash of the settings
behind it; and the book of finished results that makes a run resumable.

Keys: a record is ``(dataset, entry, protocol, fraction, seed)``, an OOD result
``(train, test, entry, score, seed)``, a transfer result ``(pretrained on, evaluated on, entry,
fraction, seed)``. The hash covers what produced the result: the entry's settings (with the size
and mtime of an ``init`` weights file), the dataset and image size, the protocol's settings. At the
start of a run the finished results of ``results.json`` whose key is planned and whose hash matches
are kept (:meth:`ResultBook.load`); the others are dropped, so a changed setting recomputes
exactly what it affects.
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


def entry_settings(e: MedMNISTPretrainEntry, flag: str | None) -> dict:
    """What of an entry determines its backbone (part of every hash of its results)."""
    s = e.model_dump(mode="json", exclude={"name"})
    if s.get("arch_kwargs") is None:  # unset: same record hashes as runs made before the field existed
        s.pop("arch_kwargs", None)
    if e.method == "none" and e.init != "random":
        s["weights"] = file_id(resolve_init(e, flag))
    return s


def record_hash(cfg: MedMNISTEvalConfig, e: MedMNISTPretrainEntry, flag: str, proto: str,
                pretrained_on: str | None = None) -> str:
    """Hash of the settings behind a record (and a transfer result: ``pretrained_on``)."""
    return digest({"entry": entry_settings(e, flag), "dataset": flag, "size": cfg.size, "protocol": proto,
                   "settings": getattr(cfg.eval, proto).model_dump(mode="json"), "pretrained_on": pretrained_on})


def ood_hash(cfg: MedMNISTEvalConfig, e: MedMNISTPretrainEntry, flag: str, other: str) -> str:
    """Hash of the settings behind an OOD result: the model it scores with, and the OOD dataset."""
    model = cfg.ood.model
    return digest({"base": record_hash(cfg, e, flag, model), "other": other, "model": model})


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
    for flag in cfg.datasets:
        for e in cfg.pretrain:
            for proto in ev.protocols:
                for fr in ev.fractions:
                    for s in ev.seeds:
                        recs[(flag, e.name, proto, fr, s)] = record_hash(cfg, e, flag, proto)
            if cfg.ood.enabled:
                for other in cfg.datasets:
                    if other != flag and dims(other) == dims(flag):
                        for score in cfg.ood.scores:
                            ood[(flag, other, e.name, score, seed0)] = ood_hash(cfg, e, flag, other)
    if cfg.transfer.enabled:
        for e in transfer_entries(cfg):
            for a in cfg.datasets:
                for b in cfg.datasets:
                    if a != b and dims(a) == dims(b):
                        for fr in cfg.transfer.fractions:
                            for s in ev.seeds:
                                tr[(a, b, e.name, fr, s)] = record_hash(cfg, e, b, "linear", pretrained_on=a)
    return {"records": recs, "ood": ood, "transfer": tr}


def result_key(kind: str, r: dict) -> tuple:
    """The key of a finished result of ``kind``."""
    if kind == "records":
        return (r["dataset"], r["method"], r["protocol"], r["fraction"], r["seed"])
    if kind == "ood":
        return (r["train"], r["test"], r["method"], r["score"], r["seed"])
    return (r["pretrain"], r["dataset"], r["method"], r["fraction"], r["seed"])


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
