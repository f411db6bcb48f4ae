"""DINO: self-distillation of a student onto an EMA teacher with centring and sharpening.

Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021;
facebookresearch/dino ``main_dino.py``. Multi-crop: ``views`` holds the global crops first
(``num_global_crops``, 2 in DINO), then any number of local crops, possibly smaller (the backbone
must then accept several input sizes, e.g. end with global pooling). The student sees every crop,
the teacher (EMA of backbone + head, cosine schedule from 0.996 to 1) only the global ones. Crops
of one size go through the networks together, as DINO's ``MultiCropWrapper``.

Defaults for MedMNIST: :class:`~medssl.nets.heads.DINOHead` with 2048 prototypes (paper 65536),
hidden 512, bottleneck 256; teacher / student temperatures 0.04 / 0.1, centre momentum 0.9.
Epoch-level, as ``main_dino.py`` (through :meth:`DINO.schedule`, which the engine calls before
every epoch): the teacher temperature warms up linearly from ``warmup_teacher_temp`` over
``warmup_teacher_temp_epochs`` (``np.linspace``, endpoint included; DINO's defaults 0.04 and 0
epochs, i.e. no warm-up; its README uses 0.04 -> 0.07 over 30 epochs for long runs), and the head's
last layer gets no update during the first ``freeze_last_layer`` epochs (DINO's default 1; DINO
drops those gradients, here the parameters stop requiring grad, so AdamW skips them alike).
What DINO needs from the pretraining loop is declared on the class: its AdamW rate (``base_lr``
5e-4 per 256 images, the paper's), gradient clipping (``grad_clip`` 3.0, DINO's ``clip_grad``),
multi-crop views (:meth:`DINO.augmented_views`, local crops of 3/7 of the side:
:meth:`DINO.augment_defaults`) and BatchNorm in the head on ResNet backbones
(:meth:`DINO.default_kwargs`; ``use_bn_in_head`` is off for ViTs, as in DINO).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from medssl.losses.image_ssl import DINOLoss
from medssl.methods.image_ssl.base import SSLMethod, momentum_copy
from medssl.nets.heads import DINOHead


def _forward_crops(backbone: nn.Module, head: nn.Module, crops: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """``head(backbone(crop))`` per crop, running consecutive crops of one shape as one batch."""
    outputs: list[torch.Tensor] = []
    start = 0
    while start < len(crops):
        end = start + 1
        while end < len(crops) and crops[end].shape == crops[start].shape:
            end += 1
        out = head(backbone(torch.cat(list(crops[start:end]))))
        outputs.extend(out.chunk(end - start))
        start = end
    return outputs


class DINO(SSLMethod):
    """DINO. Args: backbone; out_dim, hidden_dim, bottleneck_dim: head sizes; teacher_temp,
    student_temp, center_momentum: loss settings; base_momentum: teacher EMA start;
    num_global_crops: how many leading views are global crops; warmup_teacher_temp,
    warmup_teacher_temp_epochs: the teacher-temperature warm-up; freeze_last_layer: epochs without
    updates of the head's last layer; use_bn_in_head: BatchNorm in the head's MLP (DINO's flag)."""

    aug_preset = "dino"
    base_lr = 5e-4
    grad_clip = 3.0
    momentum_pairs = (("backbone", "teacher_backbone"), ("head", "teacher_head"))

    @classmethod
    def default_kwargs(cls, arch: str, num_classes: int | None = None) -> dict[str, Any]:
        """``use_bn_in_head=True`` on ResNet backbones (DINO's flag; off for ViTs, as in DINO).

        The reason is a training-side diagnostic, not a held-out number. A random-init ResNet's
        post-ReLU features share one direction (mean pairwise cosine of the head's bottleneck 0.91
        on the BreastMNIST training images), so the centred teacher starts almost uniform and DINO
        collapses (the loss stays at ln K); BatchNorm in the head removes that (cosine 0.17).
        Validation does not decide it: the selected probes' validation AUROC on BreastMNIST (78
        images, 10 seeds, mean ± 95 % t interval; reports/breastmnist_ssl/results.csv, rows dino /
        dino-bnhead, column val_auroc, the best grid point's and so optimistic) is 0.799 ± 0.041
        without and 0.795 ± 0.034 with for the linear probe at 10 % labels (100 %: 0.912 ± 0.006 /
        0.892 ± 0.005), 0.682 ± 0.021 / 0.704 ± 0.022 for kNN at 10 % (100 %: 0.835 / 0.872).
        """
        return {"use_bn_in_head": True} if arch.startswith("resnet") else {}

    @classmethod
    def augment_defaults(cls, image_size: int, arch_kwargs: dict) -> dict[str, Any]:
        """Local crops of 3/7 of the image side (DINO's 96 of 224; 12 px at 28), a multiple of the
        ViT patch (``arch_kwargs["patch_size"]``, 1 for a ResNet)."""
        patch = int(arch_kwargs.get("patch_size", 1))
        return {"local_size": max(patch, round(image_size * 3 / 7 / patch) * patch)}

    def augmented_views(self, augment: nn.Module, x: torch.Tensor, generator: torch.Generator | None = None
                        ) -> list[torch.Tensor]:
        """Multi-crop: the 2 global views first, then ``augment.n_local`` local crops."""
        return augment.multi_crop(x, generator)

    def __init__(
        self,
        backbone: nn.Module,
        out_dim: int = 2048,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        base_momentum: float = 0.996,
        num_global_crops: int = 2,
        warmup_teacher_temp: float | None = None,
        warmup_teacher_temp_epochs: int = 0,
        freeze_last_layer: int = 1,
        use_bn_in_head: bool = False,
    ) -> None:
        super().__init__(backbone)
        if num_global_crops < 1:
            raise ValueError(f"num_global_crops must be >= 1, got {num_global_crops}")
        if warmup_teacher_temp_epochs < 0 or freeze_last_layer < 0:
            raise ValueError("warmup_teacher_temp_epochs and freeze_last_layer must be >= 0 epochs")
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = teacher_temp if warmup_teacher_temp is None else warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.freeze_last_layer = freeze_last_layer
        self.head = DINOHead(self.feature_dim, out_dim, hidden_dim, bottleneck_dim, bn=use_bn_in_head)
        self.teacher_backbone = momentum_copy(self.backbone)
        self.teacher_head = momentum_copy(self.head)
        self.base_momentum = base_momentum
        self.num_global_crops = num_global_crops
        self.criterion = DINOLoss(out_dim, self.teacher_temp_at(0), student_temp, center_momentum)
        self._last_layer = [p for p in self.head.last_layer.parameters() if p.requires_grad]

    def teacher_temp_at(self, epoch: int) -> float:
        """``np.linspace(warmup_teacher_temp, teacher_temp, W)[epoch]`` for ``epoch < W``, else ``teacher_temp``."""
        w = self.warmup_teacher_temp_epochs
        if epoch >= w:
            return self.teacher_temp
        if w == 1:
            return self.warmup_teacher_temp
        return self.warmup_teacher_temp + (self.teacher_temp - self.warmup_teacher_temp) * epoch / (w - 1)

    def schedule(self, epoch: int) -> None:
        self.criterion.teacher_temp = self.teacher_temp_at(epoch)
        frozen = epoch < self.freeze_last_layer
        for p in self._last_layer:
            p.requires_grad_(not frozen)

    def training_loss(self, views: Sequence[torch.Tensor], labels: torch.Tensor | None = None):
        g = self.num_global_crops
        if len(views) < max(2, g):
            raise ValueError(f"DINO expects {g} global crops (+ local crops), at least 2 views, got {len(views)}")
        student = _forward_crops(self.backbone, self.head, views)
        with torch.no_grad():
            teacher = _forward_crops(self.teacher_backbone, self.teacher_head, views[:g])
        loss = self.criterion(student, teacher)
        return loss, {"loss": loss.detach()}
