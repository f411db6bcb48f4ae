"""What the image-SSL loop writes (``pretrain.pt``, ``pretrain_log.jsonl``) and how a backbone is
read back from it, or from a foreign weights file.

``pretrain.pt`` (format :data:`FORMAT`) holds only tensors and plain values, so it loads with
``torch.load(weights_only=True)`` (:func:`medssl.core.weights.load_checkpoint`): ``model`` (the
whole method: backbone, heads, EMA targets, DINO's centre, NNCLR's queue), ``optimizer``,
``scheduler``, ``epoch`` (completed epochs), ``global_step``, ``rng`` (the global torch RNG
states), ``backbone`` (the backbone's state_dict, sharing storage with ``model`` in the file),
``meta`` (method, arch, arch_kwargs, spatial_dims, in_channels, out_dim, epochs, seed) and
``config`` (the other settings, checked on resume).

Networks are built by :mod:`medssl.nets.backbones` and weights are read by
:mod:`medssl.core.weights` (one key matcher, :func:`~medssl.core.weights.best_prefix`; input-layer
channel adaptation); :func:`load_backbone` combines the two.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from medssl.core.atomic import save_torch_atomic, write_atomic_text
from medssl.core.weights import (
    adapt_input_channels,
    best_prefix,
    copy_matching,
    load_checkpoint,
    state_dict_of,
    strip_prefix,
)
from medssl.errors import DataError
from medssl.nets.backbones import build_backbone, input_layer

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "pretrain.pt"
LOG_NAME = "pretrain_log.jsonl"
FORMAT = "medssl-ssl-pretrain/1"


# ------------------------------------------------------------------------------- writing
def save_checkpoint(path: Path, state: dict) -> None:
    """``torch.save(state)`` atomically: a job killed while saving keeps the previous epoch's file."""
    save_torch_atomic(state, path)


def truncate_log(path: Path, step: int) -> None:
    """Drop the log lines after ``step`` (a resumed run rewrites them)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if line.strip() and json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:
            continue  # a line cut by a kill
    write_atomic_text(path, "".join(k + "\n" for k in keep))


def check_resume(ckpt: dict, meta: dict, config: dict, path: Path) -> None:
    """Refuse to resume from a checkpoint of another format or made with other settings.

    Raises:
        DataError: naming the settings that differ (was, now).
    """
    if ckpt.get("format") != FORMAT:
        raise DataError(
            f"not a medssl pretraining checkpoint (format {ckpt.get('format')!r}); use resume=False or another out_dir",
            path,
        )
    diff = [k for k in meta if ckpt["meta"].get(k) != meta[k]]
    diff += [k for k in config if ckpt["config"].get(k) != config[k]]
    if diff:
        was = {k: ckpt["meta"].get(k, ckpt["config"].get(k)) for k in diff}
        now = {k: meta.get(k, config.get(k)) for k in diff}
        raise DataError(
            f"cannot resume: the checkpoint was made with other settings ({was} now {now}); the schedule and data "
            "order depend on them. Use resume=False to start over, or another out_dir",
            path,
        )


def jsonable(value: Any) -> Any:
    """``value`` if it survives a JSON round trip unchanged in kind (so weights_only can load it), else its repr."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


# ------------------------------------------------------------------------------- reading
@dataclass
class WeightsReport:
    """What :func:`init_backbone_weights` copied: target state_dict names (parameters and buffers)."""

    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    strip: str = ""

    @property
    def total(self) -> int:
        return len(self.loaded) + len(self.adapted) + len(self.skipped)

    def __str__(self) -> str:
        s = f"{len(self.loaded) + len(self.adapted)}/{self.total} tensors matched"
        if self.adapted:
            s += f" ({len(self.adapted)} with input channels adapted: {', '.join(self.adapted)})"
        if self.strip:
            s += f", source prefix {self.strip!r} stripped"
        if self.skipped:
            more = ", ..." if len(self.skipped) > 5 else ""
            s += f"; {len(self.skipped)} left at their initialisation ({', '.join(self.skipped[:5])}{more})"
        return s


def _init_from_state(backbone: nn.Module, src: dict, path: Path, strip: str | None) -> WeightsReport:
    target = backbone.state_dict()
    strip = best_prefix(src, target) if strip is None else strip
    src = strip_prefix(src, strip)
    stem = input_layer(backbone)
    adapted = {}
    if stem is not None and stem in src:
        s, t = src[stem], target[stem]
        if s.ndim == t.ndim and s.shape != t.shape and s.shape[:1] + s.shape[2:] == t.shape[:1] + t.shape[2:]:
            try:
                adapted[stem] = adapt_input_channels(s, t.shape[1])
            except ValueError:
                pass  # neither side has one channel: the input layer keeps its initialisation
    loaded, skipped = copy_matching(backbone, {**src, **adapted}, path)
    report = WeightsReport(loaded=[k for k in loaded if k not in adapted], adapted=list(adapted), skipped=skipped,
                           strip=strip)
    log.info("initialised %s from %s: %s", type(backbone).__name__, path, report)
    return report


def init_backbone_weights(backbone: nn.Module, checkpoint: str | Path, strip: str | None = None) -> WeightsReport:
    """Initialise ``backbone`` from a foreign checkpoint: every tensor whose name and shape match.

    For ``init: checkpoint`` with weights a user has, e.g. an ImageNet ResNet-18/50 state_dict
    (MONAI's ResNet uses torchvision's parameter names), a Lightning checkpoint or a DDP
    ``module.``-prefixed dict. The file is read once, weights-only; tensors are matched under the
    key prefix that fits most of the backbone's names (:func:`medssl.core.weights.best_prefix`) and
    copied where name and shape match (:func:`~medssl.core.weights.copy_matching`); the input
    layer (the backbone's first conv weight) is adapted if only its input-channel count differs
    (:func:`~medssl.core.weights.adapt_input_channels`: a 3-channel conv1 into a 1-channel backbone
    is summed over the input channels).

    Args:
        backbone: the module to initialise.
        checkpoint: a ``.pt``/``.pth``/``.ckpt`` file (bare state_dict or ``{"state_dict": ...}``).
        strip: key prefix to remove from the source; ``None``: the best-matching one.

    Returns:
        A :class:`WeightsReport` (also logged at INFO level).

    Raises:
        DataError: unreadable file, or no tensor matched.
    """
    path = Path(checkpoint)
    return _init_from_state(backbone, state_dict_of(load_checkpoint(path)), path, strip)


def load_backbone(
    checkpoint: str | Path,
    arch: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    arch_kwargs: dict | None = None,
    strict: bool = True,
) -> nn.Module:
    """The backbone of a pretraining checkpoint, or a fresh one initialised from a foreign file.

    * A :func:`~medssl.engines.image_ssl.pretrain_ssl` checkpoint: the backbone is rebuilt from its
      ``meta`` (arch, its keywords, spatial_dims, in_channels) and its ``"backbone"`` weights are
      loaded; ``arch`` etc. must then be ``None`` or agree.
    * Any other file (bare state_dict, Lightning or DDP checkpoint, ImageNet weights): give
      ``arch``, ``spatial_dims`` and ``in_channels``; the backbone is built with
      :func:`~medssl.nets.backbones.build_backbone` and initialised as :func:`init_backbone_weights`
      does (matching names and shapes, input-channel adaptation of the first conv).

    The file is read once, weights-only. The returned module has ``out_dim`` and an
    ``init_report`` (:class:`WeightsReport`).

    Args:
        checkpoint: the file.
        arch, spatial_dims, in_channels, arch_kwargs: the backbone to build for a foreign file
            (``arch_kwargs`` default: ``small_input=True`` for ResNets, 28 px / patch 4 for the ViT).
        strict: for a pretraining checkpoint, require every backbone tensor (``load_state_dict(strict=True)``).

    Raises:
        DataError: unreadable file, missing settings for a foreign file, settings that contradict
            the checkpoint's, or no tensor matched.
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and isinstance(ckpt.get("meta"), dict) and isinstance(ckpt.get("backbone"), dict):
        meta = ckpt["meta"]
        given = {"arch": arch, "spatial_dims": spatial_dims, "in_channels": in_channels}
        clash = {k: (v, meta[k]) for k, v in given.items() if v is not None and v != meta[k]}
        if clash:
            raise DataError(f"the checkpoint's backbone differs from the one asked for ({clash}: asked, stored)", path)
        arch_kw = meta.get("arch_kwargs", {})
        backbone = build_backbone(meta["arch"], meta["spatial_dims"], meta["in_channels"], **arch_kw)
        result = backbone.load_state_dict(ckpt["backbone"], strict=strict)
        missing = list(getattr(result, "missing_keys", []))
        loaded = [k for k in backbone.state_dict() if k not in missing]
        backbone.init_report = WeightsReport(loaded=loaded, skipped=missing)
        return backbone
    if arch is None or spatial_dims is None or in_channels is None:
        raise DataError(
            "not a medssl pretraining checkpoint (no 'meta'/'backbone'): give arch, spatial_dims and in_channels "
            "to initialise a backbone from its matching weights",
            path,
        )
    backbone = build_backbone(arch, spatial_dims, in_channels, **(arch_kwargs or {}))
    backbone.init_report = _init_from_state(backbone, state_dict_of(ckpt), path, None)
    return backbone
