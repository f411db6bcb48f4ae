"""``medssl export``: a training run's checkpoint as a model folder that travels (format:
:mod:`medssl.inference.model_package`).

Only what inference needs leaves the run: the network's tensors (no optimizer, no RNG state, no
pickle), the resolved config without the paths of the run's machine (``init_from``,
``umct.init_2d``), the dataset's label and channel names, the preprocessing plan, the medssl
version and a manifest with the sha256 of every file. The folder is written beside ``OUT`` under a
temporary name, loaded back exactly as ``medssl infer`` will load it (every file verified, the
network rebuilt and its weights loaded strictly), and only then renamed to ``OUT``: a killed export
leaves no half-written model folder behind.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from medssl.errors import DataError
from medssl.inference import model_package as pkg


def resolve_checkpoint(run: str | Path) -> Path:
    """A run folder's ``checkpoints/best.ckpt``, or ``run`` itself when it is a checkpoint file.

    Raises:
        DataError: neither a checkpoint file nor a run folder with ``checkpoints/best.ckpt``.
    """
    run = Path(run)
    if run.is_file():
        return run
    if run.is_dir():
        best = run / "checkpoints" / "best.ckpt"
        if best.is_file():
            return best
        raise DataError("has no checkpoints/best.ckpt: is it a finished medssl training run?", run)
    raise DataError("no such run folder or checkpoint file", run)


def _clean_config(raw: dict) -> dict:
    """The stored config without what points at the training machine's files."""
    raw = json.loads(json.dumps(raw))
    raw.pop("init_from", None)
    if isinstance(raw.get("umct"), dict):
        raw["umct"].pop("init_2d", None)
    if isinstance(raw.get("val"), dict):
        raw["val"].pop("split", None)  # a run from before the val/test separation still predicts
    if isinstance(raw.get("data"), dict):
        raw["data"].pop("cache_dir", None)
    return raw


def _package_files(ckpt: dict, ckpt_path: Path) -> dict[str, bytes]:
    """The contents of every file of the package except the manifest."""
    import torch
    import yaml
    from safetensors.torch import save as save_safetensors

    from medssl import __version__
    from medssl.config import build_config, dump_config
    from medssl.core.weights import state_dict_of
    from medssl.inference.review_manifest import sha256_file

    state = ckpt.get("medssl") if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or "config" not in state or "dataset" not in state:
        raise DataError("is not a medssl training checkpoint (no stored config)", ckpt_path)
    cfg = build_config(_clean_config(state["config"]), source=str(ckpt_path))
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict_of(ckpt).items()}
    if not tensors:
        raise DataError("holds no tensors", ckpt_path)
    dataset = dict(state["dataset"])
    files = {
        pkg.WEIGHTS: save_safetensors(tensors, metadata={"format": pkg.FORMAT}),
        pkg.CONFIG: yaml.safe_dump(_clean_config(yaml.safe_load(dump_config(cfg))), sort_keys=False).encode("utf-8"),
        pkg.DATASET: (json.dumps(dataset, indent=2) + "\n").encode("utf-8"),
    }
    if state.get("plan"):
        files[pkg.PLAN] = (json.dumps(state["plan"], indent=2) + "\n").encode("utf-8")
    labels = dataset.get("labels") or {}
    class_names = state.get("class_names") or [n for n, _ in sorted(labels.items(), key=lambda kv: kv[1])]
    model = {
        "format": pkg.FORMAT,
        "medssl_version": __version__,
        "torch_version": torch.__version__.split("+")[0],
        "created": _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat(),
        "name": cfg.name,
        "method": cfg.method,
        "class_names": list(class_names),
        "channels": list((dataset.get("channel_names") or {}).values()),
        "plan": pkg.PLAN in files,
        "source": {"checkpoint": ckpt_path.name, "sha256": sha256_file(ckpt_path),
                   "global_step": ckpt.get("global_step"), "epoch": ckpt.get("epoch")},
    }
    files[pkg.MODEL] = (json.dumps(model, indent=2) + "\n").encode("utf-8")
    return files


def _manifest(files: dict[str, bytes]) -> bytes:
    table = {name: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)} for name, data in sorted(files.items())}
    return (json.dumps({"format": pkg.FORMAT, "files": table}, indent=2) + "\n").encode("utf-8")


def _check_destination(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise DataError("exists and is a file; give a folder to create", out)
    if out.is_dir() and any(out.iterdir()) and not force:
        raise DataError("exists and is not empty; --force replaces it", out)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _place(tmp: Path, out: Path) -> None:
    """Rename the finished folder ``tmp`` to ``out`` (an empty ``out`` is replaced; a full one
    is moved aside first and removed once the new one is in place)."""
    if out.is_dir() and any(out.iterdir()):
        old = out.parent / f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}"
        os.rename(out, old)
        os.rename(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)  # replaces an empty folder


def export_model(run: str | Path, out: str | Path, force: bool = False, verify: bool = True) -> dict:
    """Write the model folder ``out`` from a run folder (its best.ckpt) or a checkpoint file.

    Args:
        run: ``runs/NAME`` or a ``.ckpt`` file of a segmentation run.
        out: the model folder to create (refused when it holds files, unless ``force``).
        force: replace a non-empty ``out``.
        verify: load the written folder back as ``medssl infer`` does before it replaces ``out``.

    Returns:
        ``{"out", "checkpoint", "files", "manifest_sha256"}``.

    Raises:
        DataError: no checkpoint, not a segmentation checkpoint, or an unusable destination.
    """
    from medssl.core.atomic import write_atomic_bytes
    from medssl.core.weights import load_checkpoint

    out = Path(out)
    _check_destination(out, force)
    ckpt_path = resolve_checkpoint(run)
    files = _package_files(load_checkpoint(ckpt_path), ckpt_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; a folder gets the umask's permissions
        for name, data in files.items():
            write_atomic_bytes(tmp / name, data)
        manifest = _manifest(files)
        write_atomic_bytes(tmp / pkg.MANIFEST, manifest)  # last: a folder without it is no model
        if verify:
            from medssl.inference.load import load_predictor

            load_predictor(tmp)
        _check_destination(out, force)
        _place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return {"out": out, "checkpoint": ckpt_path, "files": sorted([*files, pkg.MANIFEST]),
            "manifest_sha256": hashlib.sha256(manifest).hexdigest()}
