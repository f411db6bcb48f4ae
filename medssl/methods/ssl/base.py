"""The small base of the self-supervised methods: a backbone plus one hook.

A method composes ``backbone + heads + loss`` (``medssl.nets.heads``, ``medssl.losses.ssl``) and
overrides :meth:`SSLMethod.training_loss`. Methods with a momentum (EMA) encoder only *declare*
which attributes are EMA copies of which (``momentum_pairs``); :meth:`SSLMethod.momentum_update`
does the update with the cosine schedule of BYOL / MoCo v3 / DINO. There is no training loop
here: the engine calls ``training_loss`` on already-augmented views, steps the optimiser over
the parameters that require grad, then calls ``momentum_update(progress)``; before each epoch it
calls :meth:`SSLMethod.schedule` (DINO's teacher-temperature warm-up and last-layer freeze).

The backbone contract: ``backbone(x) -> (B, backbone.out_dim)`` features.
"""

from __future__ import annotations

import copy
import math
from typing import ClassVar, Sequence

import torch
from torch import nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A deep copy of ``module`` whose parameters receive no gradient (an EMA target)."""
    target = copy.deepcopy(module)
    target.requires_grad_(False)
    return target


def cosine_momentum(base: float, progress: float) -> float:
    """EMA coefficient rising from ``base`` at ``progress=0`` to 1 at ``progress=1``.

    ``m = 1 - (1 - base) * (cos(pi * progress) + 1) / 2`` (BYOL Sec. 3.2; moco-v3
    ``adjust_moco_momentum``; DINO's ``cosine_scheduler(momentum_teacher, 1, ...)``).
    ``progress`` (step / total steps) is clipped to [0, 1].
    """
    progress = min(max(float(progress), 0.0), 1.0)
    return 1.0 - (1.0 - base) * (math.cos(math.pi * progress) + 1.0) / 2.0


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """``target <- m * target + (1 - m) * online``, parameter by parameter."""
    for p_t, p_o in zip(target.parameters(), online.parameters(), strict=True):
        p_t.mul_(m).add_(p_o.detach(), alpha=1.0 - m)


def two_views(views: Sequence[torch.Tensor], method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The two views of a two-view method, checked: same shape, batch >= 2 (BatchNorm heads)."""
    if len(views) != 2:
        raise ValueError(f"{method} expects exactly 2 views, got {len(views)}")
    x1, x2 = views
    if x1.shape != x2.shape:
        raise ValueError(
            f"{method} expects two views of the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}"
        )
    if x1.shape[0] < 2:
        raise ValueError(f"{method} needs a batch of at least 2, got {x1.shape[0]}")
    return x1, x2


class SSLMethod(nn.Module):
    """Base of the self-supervised (and the supervised baseline) methods.

    Args:
        backbone: module mapping ``(B, C, *spatial) -> (B, backbone.out_dim)``.

    Class attributes:
        aug_preset: the key of ``medssl.transforms.ssl_augment.PRESETS`` whose views the
            method expects (the paper's recipe; ``"dino"`` is multi-crop, ``"light"`` the
            supervised baseline's crop + flip).
        momentum_pairs: ``(online attribute, EMA attribute)`` names updated by
            :meth:`momentum_update`; empty for methods without a momentum encoder.
    """

    aug_preset: ClassVar[str] = "simclr"
    momentum_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()
    base_momentum: float = 0.99

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        out_dim = getattr(backbone, "out_dim", None)
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"backbone must have a positive int attribute `out_dim`, got {out_dim!r}")
        self.backbone = backbone
        self.feature_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features ``(B, feature_dim)``: what linear / kNN evaluation uses."""
        return self.backbone(x)

    def training_loss(
        self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss on a list of augmented views ``(B, C, *spatial)`` and detached scalars to log."""
        raise NotImplementedError

    def schedule(self, epoch: int) -> None:
        """Settings that follow the epoch clock; the engine calls this before every epoch (also
        after a resume) with the 0-based epoch index. Default: nothing."""

    @torch.no_grad()
    def momentum_update(self, progress: float) -> None:
        """EMA of every declared ``momentum_pairs`` entry with :func:`cosine_momentum`.

        Call after each optimiser step with ``progress = step / total_steps``. A no-op for methods
        without a momentum encoder.
        """
        if not self.momentum_pairs:
            return
        m = cosine_momentum(self.base_momentum, progress)
        for online, target in self.momentum_pairs:
            ema_update(getattr(self, target), getattr(self, online), m)
