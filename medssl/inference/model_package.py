"""A model folder that travels: what inference needs, verified file by file before it is used.

``medssl export`` (:mod:`medssl.inference.export`) writes it; ``medssl infer --checkpoint DIR``,
``medssl pseudo-label`` and ``medssl doctor --model DIR`` read it through :func:`read_model_package`::

    MODEL_DIR/weights.safetensors   the network's tensors (safetensors: no pickle, no code runs)
    MODEL_DIR/config.yaml           the run's resolved config (what rebuilds the network)
    MODEL_DIR/dataset.json          label names and values, channel names (as the run's dataset.json)
    MODEL_DIR/plan.json             the preprocessing plan, when the run had one
    MODEL_DIR/model.json            format, medssl version, method, class names, source checkpoint
    MODEL_DIR/manifest.json         sha256 and size of every file above

Every file the manifest lists is read once, into memory, and its sha256 and size are checked
against the manifest before anything is parsed, so a changed, truncated or missing file is refused
with one line naming it (and what the model was loaded from is exactly what was verified).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from medssl.errors import DataError

FORMAT = "medssl-model/1"
MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
CONFIG = "config.yaml"
DATASET = "dataset.json"
PLAN = "plan.json"
MODEL = "model.json"
REQUIRED = (WEIGHTS, CONFIG, DATASET, MODEL)


def is_model_package(path: str | Path) -> bool:
    """Whether ``path`` is a folder (a model folder, or meant to be one)."""
    return Path(path).is_dir()


def _read_manifest(root: Path) -> tuple[dict, bytes]:
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"no {MANIFEST}: not a medssl model folder (make one with `medssl export RUN --out DIR`)", root)
    raw = path.read_bytes()
    try:
        manifest = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"is not valid JSON ({exc})", path) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else type(manifest).__name__
        raise DataError(f"format is {found!r}, expected {FORMAT!r}", path)
    files = manifest.get("files")
    if not isinstance(files, dict) or any(not isinstance(v, dict) or "sha256" not in v or "bytes" not in v
                                          for v in files.values()):
        raise DataError("has no valid 'files' table (name -> sha256, bytes)", path)
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise DataError(f"does not list {', '.join(missing)}", path)
    for name in files:
        if Path(name).name != name:
            raise DataError(f"lists {name!r}: only plain file names are allowed", path)
    return manifest, raw


def verify_files(root: str | Path) -> tuple[dict[str, bytes], dict, str]:
    """Read and verify every file the manifest lists.

    Returns:
        ``(contents by file name, manifest, sha256 of manifest.json)``; the last identifies the
        whole model (it pins every other file's sha256).

    Raises:
        DataError: no or invalid manifest; a listed file missing, of another size (truncated or
            grown) or with another sha256 (changed since export), naming the file.
    """
    root = Path(root)
    manifest, raw = _read_manifest(root)
    contents = {}
    for name, entry in manifest["files"].items():
        path = root / name
        if not path.is_file():
            raise DataError(f"missing: {MANIFEST} lists it; the model folder is incomplete", path)
        data = path.read_bytes()
        if len(data) != entry["bytes"]:
            how = "truncated" if len(data) < entry["bytes"] else "grown"
            raise DataError(f"{how}: {len(data)} bytes, {MANIFEST} records {entry['bytes']}; the file was damaged "
                            "or changed since export", path)
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry["sha256"]:
            raise DataError(f"changed since export: sha256 {digest[:12]}... does not match {MANIFEST} "
                            f"({str(entry['sha256'])[:12]}...)", path)
        contents[name] = data
    return contents, manifest, hashlib.sha256(raw).hexdigest()


def _json(contents: dict, name: str, root: Path):
    try:
        return json.loads(contents[name])
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"is not valid JSON ({exc})", root / name) from None


def read_model_package(root: str | Path) -> dict:
    """A verified model folder as the checkpoint dict :func:`medssl.inference.load.load_predictor` reads:
    ``{"state_dict": tensors, "medssl": {"config", "dataset", "plan", "class_names"}, "package": {...}}``.

    Raises:
        DataError: any file fails verification or cannot be parsed (naming it).
    """
    import yaml
    from safetensors.torch import load as load_safetensors

    root = Path(root)
    contents, manifest, sha = verify_files(root)
    try:
        config = yaml.safe_load(contents[CONFIG].decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise DataError(f"is not valid YAML ({' '.join(str(exc).split())[:200]})", root / CONFIG) from None
    if not isinstance(config, dict):
        raise DataError("is not a config mapping", root / CONFIG)
    try:
        tensors = load_safetensors(contents[WEIGHTS])
    except Exception as exc:  # noqa: BLE001  (safetensors' error class differs between versions)
        raise DataError(f"cannot be read as safetensors ({exc})", root / WEIGHTS) from None
    model = _json(contents, MODEL, root)
    if not isinstance(model, dict) or model.get("format") != FORMAT:
        raise DataError(f"format is not {FORMAT!r}", root / MODEL)
    state = {
        "config": config,
        "dataset": _json(contents, DATASET, root),
        "plan": _json(contents, PLAN, root) if PLAN in contents else None,
        "class_names": model.get("class_names"),
    }
    return {"state_dict": tensors, "medssl": state,
            "package": {"root": str(root), "manifest_sha256": sha, "model": model, "files": manifest["files"]}}


def model_sha256(path: str | Path) -> str:
    """The identity of a model: a checkpoint file's sha256, or a model folder's manifest sha256
    (which pins every other file; :func:`verify_files` checks them when the model is loaded)."""
    path = Path(path)
    if path.is_dir():
        return hashlib.sha256(_read_manifest(path)[1]).hexdigest()
    from medssl.inference.review_manifest import sha256_file

    return sha256_file(path)
