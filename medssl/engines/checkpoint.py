"""Safe checkpoint files: atomic writes, ``weights_only`` loads, partial weight initialisation.

A checkpoint is a pickle; loading one with ``weights_only=False`` can run arbitrary code, so
medssl never does: everything it stores is tensors and plain JSON-like values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from medssl.errors import DataError


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no code from the file runs)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors have many types)
        raise DataError(f"cannot load as a weights-only checkpoint ({type(exc).__name__}: {str(exc)[:200]})", path) from exc


def state_dict_of(ckpt: dict) -> dict[str, torch.Tensor]:
    """The model weights of a Lightning checkpoint or of a bare ``state_dict`` file."""
    sd = ckpt.get("state_dict", ckpt)
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def load_matching_weights(
    module: torch.nn.Module, path: str | Path, prefix: str = "", strip: str = ""
) -> tuple[list[str], list[str]]:
    """Copy into ``module`` every tensor of checkpoint ``path`` whose name and shape match.

    Args:
        module: the model to initialise.
        path: a medssl/Lightning checkpoint or a bare state_dict file.
        prefix: only take source keys starting with this (e.g. ``"net."``).
        strip: remove this from source keys before matching (e.g. ``"net."``).

    Returns:
        ``(loaded, skipped)`` target parameter names.
    """
    src = state_dict_of(load_checkpoint(path))
    src = {k[len(strip):] if strip and k.startswith(strip) else k: v for k, v in src.items() if k.startswith(prefix)}
    return _copy_matching(module, src, path)


def _copy_matching(module: torch.nn.Module, src: dict, path) -> tuple[list[str], list[str]]:
    target = module.state_dict()
    loaded, skipped = [], []
    for name, tensor in target.items():
        cand = src.get(name)
        if cand is not None and cand.shape == tensor.shape:
            target[name] = cand.to(tensor.dtype)
            loaded.append(name)
        else:
            skipped.append(name)
    if not loaded:
        raise DataError("no parameter name and shape matches the model: is it a checkpoint of this network?", path)
    module.load_state_dict(target)
    return loaded, skipped


def init_network(
    net: torch.nn.Module, path: str | Path, parts: list[str] | None = None
) -> tuple[list[str], list[str], list[str] | None]:
    """Initialise ``net`` from a checkpoint's network weights (``init_from`` of a config).

    Keys are taken from the checkpoint's ``net.`` sub-module when it has one. Only names under
    ``parts`` (prefixes such as ``"encoder"`` or ``"decoder.0"``) are used; by default the parts
    the checkpoint's run recorded as trained (a contrastive stage stores them), else all. A
    :class:`~medssl.nets.multiview_unet.MultiViewAsymUNet` target goes through
    :func:`~medssl.nets.multiview_unet.init_inplane_from_2d`, so a 2D or one-view source fills the
    in-plane kernels of every view; other networks take every tensor whose name and shape match.

    Returns:
        ``(loaded, skipped, parts)``: target names set, target names kept, the prefixes used.
    """
    from medssl.nets.multiview_unet import MultiViewAsymUNet, init_inplane_from_2d

    ckpt = load_checkpoint(path)
    src = state_dict_of(ckpt)
    if any(k.startswith("net.") for k in src):
        src = {k[4:]: v for k, v in src.items() if k.startswith("net.")}
    if parts is None:
        parts = (ckpt.get("medssl") or {}).get("trained_parts")
    if parts:
        src = {k: v for k, v in src.items() if any(k == p or k.startswith(p.rstrip(".") + ".") for p in parts)}
        if not src:
            raise DataError(f"has no network weights under {list(parts)}", path)
    if isinstance(net, MultiViewAsymUNet):
        try:
            loaded, skipped = init_inplane_from_2d(net, src)
        except DataError as exc:
            raise DataError(exc.args[0] if exc.args else str(exc), path) from None
    else:
        loaded, skipped = _copy_matching(net, src, path)
    return loaded, skipped, parts


def save_checkpoint_atomic(state: dict, path: str | Path) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then ``os.replace`` (atomic): a job
    killed while saving keeps its previous checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place, and
    loads with ``weights_only=True``: a run killed while saving keeps its previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_checkpoint_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=True) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
