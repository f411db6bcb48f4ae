"""The small base of the image-level self-supervised methods: a backbone, one hook, declared needs.

A method composes ``backbone + heads + loss`` (``medssl.nets.heads``, ``medssl.losses.image_ssl``)
and overrides :meth:`SSLMethod.training_loss`. What it needs from the pretraining loop
(:mod:`medssl.engines.image_ssl`) is declared on the class, and the loop reads it without ever
looking at a method's name (GUIDE item 14):

* ``aug_preset``: the augmentation recipe (a key of ``medssl.transforms.image_ssl_augment.PRESETS``),
  and :meth:`~SSLMethod.augmented_views`: the views it trains on (two views; DINO: multi-crop;
  the supervised baseline: one), and :meth:`~SSLMethod.augment_defaults` (DINO's local-crop size);
* ``base_lr`` / ``vit_base_lr``: the AdamW rate per 256 images (:meth:`~SSLMethod.default_lr`);
* ``grad_clip``: the gradient-norm clip of ``grad_clip="auto"`` (:meth:`~SSLMethod.default_grad_clip`);
* :meth:`~SSLMethod.default_kwargs`: constructor keywords that depend on the architecture or the
  labels (DINO's BatchNorm head on ResNets, the baseline's class count);
* ``uses_labels`` and :meth:`~SSLMethod.label_settings`: whether it trains on labels.

Methods with a momentum (EMA) encoder only *declare* which attributes are EMA copies of which
(``momentum_pairs``); :meth:`SSLMethod.momentum_update` does the update with the cosine schedule
of BYOL / MoCo v3 / DINO. There is no training loop here: the engine calls ``training_loss`` on
the augmented views, steps the optimiser over the parameters that require grad, then calls
``momentum_update(progress)``; before each epoch it calls :meth:`SSLMethod.schedule` (DINO's
teacher-temperature warm-up and last-layer freeze).

The backbone contract: ``backbone(x) -> (B, backbone.out_dim)`` features.
"""

from __future__ import annotations

import copy
import math
from typing import Any, ClassVar, Sequence

import torch
from torch import nn

#: gradient-norm clip of ViT backbones with ``grad_clip="auto"`` (DINO's ``clip_grad 3.0``, which
#: MoCo v3 also found to stabilise ViTs)
VIT_GRAD_CLIP = 3.0


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
    """Base of the self-supervised (and the supervised-baseline) image methods.

    Args:
        backbone: module mapping ``(B, C, *spatial) -> (B, backbone.out_dim)``.

    Class attributes:
        aug_preset: the key of ``medssl.transforms.image_ssl_augment.PRESETS`` whose views the
            method expects (the paper's recipe; ``"dino"`` is multi-crop, ``"light"`` the
            supervised baseline's crop + flip).
        base_lr: AdamW learning rate per 256 images (the linear scaling rule of Goyal et al. 2017,
            as SimCLR, BYOL, DINO and MoCo v3 state their rates). 1e-3 is Adam's usual rate and the
            MedMNIST v2 reference scripts' (Adam, batch 128); a starting point for small images,
            not tuned per dataset.
        vit_base_lr: the rate per 256 images on a ViT backbone when the paper gives another one.
        grad_clip: max gradient norm of ``grad_clip="auto"`` on any backbone (``None``: only ViTs
            are clipped, at :data:`VIT_GRAD_CLIP`).
        uses_labels: the method trains on labels (the loop then requires them).
        momentum_pairs: ``(online attribute, EMA attribute)`` names updated by
            :meth:`momentum_update`; empty for methods without a momentum encoder.
    """

    aug_preset: ClassVar[str] = "simclr"
    base_lr: ClassVar[float] = 1e-3
    vit_base_lr: ClassVar[float | None] = None
    grad_clip: ClassVar[float | None] = None
    uses_labels: ClassVar[bool] = False
    momentum_pairs: ClassVar[tuple[tuple[str, str], ...]] = ()
    base_momentum: float = 0.99

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        out_dim = getattr(backbone, "out_dim", None)
        if not isinstance(out_dim, int) or out_dim < 1:
            raise ValueError(f"backbone must have a positive int attribute `out_dim`, got {out_dim!r}")
        self.backbone = backbone
        self.feature_dim = out_dim

    # -- what the loop reads before it builds the method
    @classmethod
    def default_lr(cls, arch: str, batch_size: int) -> float:
        """AdamW peak rate: ``base_lr`` (``vit_base_lr`` on a ViT, if set) times ``batch_size / 256``."""
        base = cls.vit_base_lr if (cls.vit_base_lr is not None and arch.startswith("vit")) else cls.base_lr
        return base * batch_size / 256

    @classmethod
    def default_grad_clip(cls, arch: str) -> float | None:
        """The clip of ``grad_clip="auto"``: the method's ``grad_clip``, else :data:`VIT_GRAD_CLIP` on a ViT."""
        return cls.grad_clip if cls.grad_clip is not None else (VIT_GRAD_CLIP if arch.startswith("vit") else None)

    @classmethod
    def default_kwargs(cls, arch: str, num_classes: int | None = None) -> dict[str, Any]:
        """Constructor keywords that depend on the run (explicit ``method_kwargs`` win). Default: none."""
        return {}

    @classmethod
    def label_settings(cls, labels: torch.Tensor, num_classes: int | None) -> tuple[int | None, dict[str, Any]]:
        """For a method that ``uses_labels``: the class count to build it with and the keywords the
        labels imply (recorded with the run). Default: ``(num_classes, {})``."""
        return num_classes, {}

    @classmethod
    def augment_defaults(cls, image_size: int, arch_kwargs: dict) -> dict[str, Any]:
        """Keywords of the augmentation the run's images imply (explicit ``augment_kwargs`` win). Default: none."""
        return {}

    # -- what the loop calls per step
    def augmented_views(self, augment: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
                        ) -> list[torch.Tensor]:
        """The augmented views of a uint8 batch ``x`` ``(B, C, *spatial)``, on ``x``'s device: two
        independently augmented views (``augment.two_views``). Override for other view sets.

        Args:
            augment: :class:`~medssl.transforms.image_ssl_augment.SSLAugment` of the method's preset.
            x: uint8 batch, already on the training device.
            generator: random generator (on a CUDA batch a CUDA generator avoids host draws).

        Returns:
            List of float32 ``(B, C, *spatial_v)`` views.
        """
        return list(augment.two_views(x, generator))

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


class PredictorMomentumMethod(SSLMethod):
    """BYOL and MoCo v3: the online ``predictor(projector(backbone(x)))`` of one view against the
    EMA ``projector(backbone(x))`` of the other, symmetrised: ``L(q1, k2) + L(q2, k1)``.

    A subclass builds ``projector``, ``predictor``, the two EMA copies named in
    ``momentum_pairs`` (backbone's first, projector's second) and ``criterion``.
    """

    def _target(self, x: torch.Tensor) -> torch.Tensor:
        (_, backbone), (_, projector) = self.momentum_pairs
        return getattr(self, projector)(getattr(self, backbone)(x))

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        x1, x2 = two_views(views, type(self).__name__)
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1, k2 = self._target(x1), self._target(x2)
        loss = self.criterion(q1, k2) + self.criterion(q2, k1)
        return loss, {"loss": loss.detach()}
