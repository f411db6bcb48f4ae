"""Weights in and out of checkpoint files, safely and in one way.

A checkpoint is a pickle; loading one with ``weights_only=False`` can run arbitrary code, so
medssl never does: :func:`load_checkpoint` is the only reader, and everything medssl stores is
tensors and plain JSON-like values. Foreign weights (another medssl run, a Lightning or DDP
checkpoint, an ImageNet ``state_dict``) are matched to a module by :func:`best_prefix`: the key
prefix (``""``, ``"net."``, ``"module.backbone."``...) under which most of the module's names
appear, then by name and shape (:func:`copy_matching`). A network with its own rule for foreign
weights (the multi-view U-Net inflating a 2D twin) declares ``load_foreign_state(state)`` and
:func:`init_from_checkpoint` calls it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path

from medssl.errors import DataError


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with ``torch.load(weights_only=True)`` (no code from the file runs).

    Raises:
        DataError: missing file, or not loadable as a weights-only checkpoint (named).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise DataError("checkpoint not found", path)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  (pickle/zip errors have many types)
        raise DataError(f"cannot load as a weights-only checkpoint ({type(exc).__name__}: {str(exc)[:200]})", path) from exc


def state_dict_of(ckpt) -> dict:
    """The tensors of a Lightning checkpoint (its ``"state_dict"``) or of a bare state dict."""
    import torch

    if not isinstance(ckpt, Mapping):
        return {}
    sd = ckpt["state_dict"] if isinstance(ckpt.get("state_dict"), Mapping) else ckpt
    return {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def best_prefix(state: Iterable[str], target: Iterable[str]) -> str:
    """The key prefix of ``state`` under which most ``target`` names appear.

    Every dot-separated prefix of every source key is a candidate (``""``, ``"net."``,
    ``"model.net."``...); ties go to the shortest. ``""`` when nothing matches.
    """
    target = set(target)
    counts: Counter[str] = Counter()
    for key in state:
        for i in [-1] + [j for j, ch in enumerate(key) if ch == "."]:
            if key[i + 1:] in target:
                counts[key[: i + 1]] += 1
    if not counts:
        return ""
    return max(counts, key=lambda p: (counts[p], -len(p)))


def strip_prefix(state: Mapping, prefix: str) -> dict:
    """The entries of ``state`` under ``prefix``, with the prefix removed."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def select_parts(state: Mapping, parts: Iterable[str] | None) -> dict:
    """The entries named ``p`` or under ``p.`` for a part ``p`` of ``parts`` (all when None)."""
    if not parts:
        return dict(state)
    parts = [p.rstrip(".") for p in parts]
    return {k: v for k, v in state.items() if any(k == p or k.startswith(p + ".") for p in parts)}


def copy_matching(module, src: Mapping, path=None) -> tuple[list[str], list[str]]:
    """Copy into ``module`` every tensor of ``src`` whose name and shape match.

    Returns:
        ``(loaded, skipped)`` target names.

    Raises:
        DataError: nothing matched (naming ``path`` when given).
    """
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


def load_matching_weights(module, path: str | Path, prefix: str = "", strip: str = "") -> tuple[list[str], list[str]]:
    """Copy into ``module`` every tensor of checkpoint ``path`` (under ``prefix``, with ``strip``
    removed from the names) whose name and shape match; returns ``(loaded, skipped)``."""
    src = {k: v for k, v in state_dict_of(load_checkpoint(path)).items() if k.startswith(prefix)}
    return copy_matching(module, strip_prefix(src, strip) if strip else src, path)


def adapt_input_channels(weight, in_channels: int):
    """A first-layer conv weight ``(O, C_src, *k)`` for ``in_channels`` inputs.

    ``C_src -> 1``: sum over the input channels, so a grayscale image ``g`` gives the response
    the source network gave to ``g`` repeated on every channel (timm's ``adapt_input_conv``).
    ``1 -> C``: repeat divided by ``C``, so an image repeated on ``C`` channels gives the source's
    response again.

    Raises:
        ValueError: neither side has one channel (and they differ).
    """
    c = weight.shape[1]
    if c == in_channels:
        return weight
    if in_channels == 1:
        return weight.sum(dim=1, keepdim=True)
    if c == 1:
        return weight.repeat(1, in_channels, *([1] * (weight.ndim - 2))) / in_channels
    raise ValueError(f"cannot adapt a {c}-channel input layer to {in_channels} channels")


def init_from_checkpoint(net, path: str | Path, parts: list[str] | None = None):
    """Initialise ``net`` from the network weights of a checkpoint (``init_from`` of a config).

    Keys are taken under the prefix that matches most of ``net``'s names (a medssl run stores its
    network under ``net.``). Only names under ``parts`` (prefixes such as ``"encoder"`` or
    ``"decoder.0"``) are used; by default the parts the checkpoint's run recorded as trained (a
    contrastive stage stores them under ``checkpoint["medssl"]["trained_parts"]``), else all. A
    network with a ``load_foreign_state(state) -> (loaded, skipped)`` method decides itself how
    the source fills it; any other takes every tensor whose name and shape match.

    Returns:
        ``(loaded, skipped, parts)``: target names set, target names kept, the prefixes used.

    Raises:
        DataError: unreadable file, nothing under ``parts``, or nothing matched (naming the file).
    """
    ckpt = load_checkpoint(path)
    src = state_dict_of(ckpt)
    target = net.state_dict()
    src = strip_prefix(src, best_prefix(src, target))
    if parts is None:
        parts = (ckpt.get("medssl") or {}).get("trained_parts") if isinstance(ckpt, Mapping) else None
    if parts:
        src = select_parts(src, parts)
        if not src:
            raise DataError(f"has no network weights under {list(parts)}", path)
    loader = getattr(net, "load_foreign_state", None)
    if loader is None:
        loaded, skipped = copy_matching(net, src, path)
    else:
        try:
            loaded, skipped = loader(src)
        except DataError as exc:
            raise DataError(exc.args[0] if exc.args else str(exc), path) from None
    return loaded, skipped, parts
