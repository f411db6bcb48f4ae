"""Supervised baseline: the same backbone with a linear classifier, trained on labels.

Multi-class (MedMNIST ``multi-class``, ``binary-class``, ``ordinal-regression`` tasks): labels
``(B,)`` or ``(B, 1)`` class indices, cross-entropy. Multi-label (ChestMNIST): ``multi_label=True``,
labels ``(B, num_classes)`` in {0, 1}, binary cross-entropy with logits. Every given view is a
(differently augmented) copy of the batch with the same labels; the loss is averaged over views.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from medssl.methods.image_ssl.base import SSLMethod


class Supervised(SSLMethod):
    """Supervised baseline. Args: backbone; num_classes; multi_label: BCE instead of CE."""

    aug_preset = "light"
    uses_labels = True

    @classmethod
    def default_kwargs(cls, arch: str, num_classes: int | None = None) -> dict[str, Any]:
        """The class count, when the run knows it."""
        return {} if num_classes is None else {"num_classes": int(num_classes)}

    @classmethod
    def label_settings(cls, labels: torch.Tensor, num_classes: int | None) -> tuple[int | None, dict[str, Any]]:
        """``(N, K)`` 0/1 targets: ``K`` labels and ``multi_label=True``; ``(N,)`` class indices:
        ``labels.max() + 1`` classes (an explicit ``num_classes`` wins in both cases)."""
        if labels.ndim == 2 and labels.shape[1] > 1:
            return (int(labels.shape[1]) if num_classes is None else num_classes), {"multi_label": True}
        return (int(labels.max()) + 1 if num_classes is None else num_classes), {}

    def augmented_views(self, augment: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
                        ) -> list[torch.Tensor]:
        """ONE view (the preset's first): a supervised step sees each image once."""
        return [augment(x, 0, generator)]

    def __init__(self, backbone: nn.Module, num_classes: int, multi_label: bool = False) -> None:
        super().__init__(backbone)
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.multi_label = multi_label
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial) -> (B, num_classes)``."""
        return self.classifier(self.backbone(x))

    def _targets(self, labels: torch.Tensor, batch: int) -> torch.Tensor:
        if self.multi_label:
            if tuple(labels.shape) != (batch, self.num_classes):
                expected = (batch, self.num_classes)
                raise ValueError(f"multi-label targets must be {expected}, got {tuple(labels.shape)}")
            return labels.float()
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if tuple(labels.shape) != (batch,):
            got = tuple(labels.shape)
            raise ValueError(f"class-index targets must be ({batch},) or ({batch}, 1), got {got}")
        return labels.long()

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        if labels is None:
            raise ValueError("Supervised.training_loss needs labels")
        if len(views) < 1:
            raise ValueError("Supervised.training_loss needs at least one view")
        target = self._targets(labels, views[0].shape[0])
        losses, correct = [], []
        for x in views:
            logits = self.logits(x)
            if self.multi_label:
                losses.append(F.binary_cross_entropy_with_logits(logits, target))
                correct.append(((logits > 0).float() == target).float().mean())
            else:
                losses.append(F.cross_entropy(logits, target))
                correct.append((logits.argmax(1) == target).float().mean())
        loss = torch.stack(losses).mean()
        return loss, {"loss": loss.detach(), "acc": torch.stack(correct).mean().detach()}
