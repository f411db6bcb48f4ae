"""Losses of the image-level self-supervised methods (``medssl.methods.image_ssl``): embeddings in, scalar out.

Each loss is a small ``nn.Module`` that checks its input shapes and raises ``ValueError`` with the
shapes it got. Which networks produce the embeddings (projector, predictor, momentum encoder) is
the method's business; a loss only sees tensors. Targets that must not receive gradients
(momentum keys, stop-gradient branches, nearest neighbours) are detached *inside* the loss, so a
caller cannot forget it.

Equation numbers refer to the papers' arXiv versions; where the authors' code and the paper
differ, we follow the code and say so.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def _check_pair(a: torch.Tensor, b: torch.Tensor, loss: str, min_batch: int = 1) -> None:
    if a.ndim != 2 or b.ndim != 2:
        raise ValueError(f"{loss} expects two (B, D) tensors, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape != b.shape:
        raise ValueError(f"{loss} expects tensors of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[0] < min_batch:
        raise ValueError(f"{loss} needs a batch of at least {min_batch}, got {a.shape[0]}")


class _TemperatureLoss(nn.Module):
    """A contrastive loss with a softmax temperature ``T > 0``."""

    def __init__(self, temperature: float) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature


class NTXentLoss(_TemperatureLoss):
    """Normalised temperature-scaled cross-entropy (SimCLR).

    Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
    ICML 2020, Eq. (1) and Algorithm 1. With ``z = [z_a; z_b]`` (2N rows, l2-normalised) and
    ``s_ij = z_i . z_j``::

        l(i, j) = -log( exp(s_ij / T) / sum_{k != i} exp(s_ik / T) )
        L = 1 / (2N) * sum_k [ l(k, k+N) + l(k+N, k) ]

    so every anchor has one positive (its other view) and 2N - 2 negatives; symmetric in
    ``(z_a, z_b)``.

    Args:
        temperature: ``T`` (0.5, SimCLR's choice for small batches such as CIFAR, App. B.9).

    Shapes:
        ``z_a, z_b: (N, D)`` -> scalar.
    """

    def __init__(self, temperature: float = 0.5) -> None:
        super().__init__(temperature)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _check_pair(z_a, z_b, "NTXentLoss")
        n = z_a.shape[0]
        z = F.normalize(torch.cat([z_a, z_b]), dim=1)
        logits = z @ z.T / self.temperature
        logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
        idx = torch.arange(n, device=z.device)
        targets = torch.cat([idx + n, idx])
        return F.cross_entropy(logits, targets)


class InfoNCELoss(_TemperatureLoss):
    """InfoNCE of MoCo v3 between queries and momentum keys, scaled by ``2T``.

    Chen, Xie & He, "An Empirical Study of Training Self-Supervised Vision Transformers",
    ICCV 2021, Eq. (1) and Algorithm 1; facebookresearch/moco-v3 ``MoCo.contrastive_loss``::

        L = 2T * CE( q k^T / T, arange(N) ),   q, k l2-normalised

    The key of sample ``i`` is the positive of query ``i``; the other N - 1 keys of the batch
    are negatives (no queue). The ``2T`` factor is the authors' (it keeps the gradient scale
    independent of ``T``). Keys are detached. One direction only: MoCo v3 symmetrises by
    ``L(q1, k2) + L(q2, k1)`` in the method.

    Args:
        temperature: ``T``. MoCo v3 uses 1.0 on ResNets (``--moco-t`` default) and 0.2 on ViTs;
            :class:`~medssl.methods.image_ssl.MoCoV3` chooses by backbone.

    Shapes:
        ``q, k: (N, D)`` -> scalar.
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__(temperature)

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        _check_pair(q, k, "InfoNCELoss")
        q = F.normalize(q, dim=1)
        k = F.normalize(k.detach(), dim=1)
        logits = q @ k.T / self.temperature
        labels = torch.arange(q.shape[0], device=q.device)
        return F.cross_entropy(logits, labels) * (2 * self.temperature)


class NegativeCosineLoss(nn.Module):
    """Negative cosine similarity between predictions and (detached) targets: BYOL / SimSiam.

    * ``mode="byol"``: Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020, Eq. (2):
      ``||p/||p|| - z/||z||||^2 = 2 - 2 cos(p, z)``, range [0, 4].
    * ``mode="simsiam"``: Chen & He, "Exploring Simple Siamese Representation Learning",
      CVPR 2021, Eq. (1) with the stop-gradient of Eq. (3): ``D(p, z) = -cos(p, stopgrad(z))``,
      range [-1, 1].

    Averaged over the batch. One direction only; both methods symmetrise in the method
    (BYOL Sec. 3.1: ``L(p1, z2) + L(p2, z1)``; SimSiam Eq. (4): the same with a factor 1/2).

    Args:
        mode: ``"byol"`` or ``"simsiam"``.

    Shapes:
        ``p, z: (N, D)`` -> scalar.
    """

    def __init__(self, mode: str = "byol") -> None:
        super().__init__()
        if mode not in ("byol", "simsiam"):
            raise ValueError(f"mode must be 'byol' or 'simsiam', got {mode!r}")
        self.mode = mode

    def forward(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        _check_pair(p, z, "NegativeCosineLoss")
        cos = F.cosine_similarity(p, z.detach(), dim=1)
        return (2 - 2 * cos).mean() if self.mode == "byol" else -cos.mean()


class DINOLoss(nn.Module):
    """Self-distillation cross-entropy with a centred, sharpened teacher (DINO).

    Caron et al., "Emerging Properties in Self-Supervised Vision Transformers", ICCV 2021,
    Eq. (2)-(4); facebookresearch/dino ``main_dino.py`` ``DINOLoss``::

        P_t(x) = softmax((g_t(x) - c) / T_t)        (teacher: centred, sharpened, detached)
        P_s(x) = softmax(g_s(x) / T_s)
        L = mean over pairs (teacher crop i, student crop v), v != i, of
            mean_b sum_k -P_t(x_i)[b, k] log P_s(x_v)[b, k]                     (Eq. 3)
        c <- m c + (1 - m) * mean over all teacher rows of g_t(x)              (Eq. 4)

    Teacher outputs are the global crops, in the same order as the first student outputs (the
    pair "same crop" is skipped). The centre is a buffer updated on every forward, after the
    loss is computed, from the *raw* teacher logits. DINO's warm-up of ``T_t`` is left to the
    caller: set ``loss.teacher_temp`` per epoch.

    Args:
        out_dim: softmax dimension (the DINO head's ``out_dim``).
        teacher_temp: ``T_t``.
        student_temp: ``T_s``.
        center_momentum: ``m``.

    Shapes:
        ``student_outputs``: sequence of V tensors ``(B, out_dim)`` (global crops first);
        ``teacher_outputs``: sequence of G <= V tensors ``(B, out_dim)`` -> scalar.
    """

    center: torch.Tensor

    def __init__(
        self, out_dim: int, teacher_temp: float = 0.04, student_temp: float = 0.1, center_momentum: float = 0.9
    ) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.teacher_temp = teacher_temp
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(
        self, student_outputs: Sequence[torch.Tensor], teacher_outputs: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        if len(teacher_outputs) < 1 or len(student_outputs) < 1:
            raise ValueError("DINOLoss needs at least one student and one teacher output")
        if len(student_outputs) < 2:
            raise ValueError("DINOLoss needs at least two student crops (the same-crop pair is skipped)")
        shape = tuple(teacher_outputs[0].shape)
        if len(shape) != 2 or shape[1] != self.out_dim:
            raise ValueError(f"DINOLoss expects (B, {self.out_dim}) outputs, got teacher {shape}")
        for i, t in enumerate(list(student_outputs) + list(teacher_outputs)):
            if tuple(t.shape) != shape:
                raise ValueError(f"DINOLoss: all outputs must have shape {shape}, got {tuple(t.shape)} at {i}")
        teacher = torch.cat(list(teacher_outputs)).detach()
        probs_t = F.softmax((teacher - self.center) / self.teacher_temp, dim=-1).chunk(len(teacher_outputs))
        total, terms = 0.0, 0
        for i, p_t in enumerate(probs_t):
            for v, s in enumerate(student_outputs):
                if v == i:
                    continue
                total = total + torch.sum(-p_t * F.log_softmax(s / self.student_temp, dim=-1), dim=-1).mean()
                terms += 1
        self.update_center(teacher)
        return total / terms

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """``c <- m c + (1 - m) mean_b teacher[b]`` (DINO Eq. 4); ``teacher: (B', out_dim)``."""
        batch_center = teacher.mean(dim=0, keepdim=True)
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


class BarlowTwinsLoss(nn.Module):
    """Redundancy reduction of Barlow Twins.

    Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction",
    ICML 2021, Eq. (1)-(2) and Algorithm 1::

        C_ij = sum_b za[b, i] zb[b, j] / (N)        (za, zb batch-normalised per dimension)
        L    = sum_i (1 - C_ii)^2 + lambda * sum_i sum_{j != i} C_ij^2

    Batch normalisation uses the biased standard deviation (as ``BatchNorm1d(affine=False)``
    in the authors' code), which makes ``C`` exactly the cross-correlation of Eq. (2). Computed
    in float32 even under autocast (a sum of D^2 terms is too coarse in bfloat16).

    Args:
        lambd: weight of the off-diagonal (redundancy) term, 5e-3 as in the paper.
        eps: added to the variance in the batch normalisation.

    Shapes:
        ``z_a, z_b: (N, D)``, N >= 2 -> scalar.
    """

    def __init__(self, lambd: float = 5e-3, eps: float = 1e-5) -> None:
        super().__init__()
        self.lambd = lambd
        self.eps = eps

    def _standardise(self, z: torch.Tensor) -> torch.Tensor:
        return (z - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + self.eps)

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _check_pair(z_a, z_b, "BarlowTwinsLoss", min_batch=2)
        n, d = z_a.shape
        with torch.autocast(z_a.device.type, enabled=False):  # D x D batch statistics in float32
            c = self._standardise(z_a.float()).T @ self._standardise(z_b.float()) / n
            eye = torch.eye(d, dtype=torch.bool, device=c.device)
            on_diag = (1 - c[eye]).pow(2).sum()
            off_diag = c[~eye].pow(2).sum()
        return on_diag + self.lambd * off_diag


class VICRegLoss(nn.Module):
    """Variance-Invariance-Covariance regularisation.

    Bardes, Ponce & LeCun, "VICReg", ICLR 2022, Eq. (1)-(6); facebookresearch/vicreg
    ``main_vicreg.py``. With ``gamma = 1``::

        s(Z, Z') = mean over (n, d) of (z - z')^2                          (invariance)
        v(Z)     = 1/d sum_j max(0, 1 - sqrt(Var(z^j) + eps))             (variance hinge)
        c(Z)     = 1/d sum_{i != j} Cov(Z)_ij^2,  Cov with 1/(n - 1)      (covariance)
        L = sim * s + var * (v(Z) + v(Z')) / 2 + cov * (c(Z) + c(Z'))

    As in the authors' code (and lightly), not the paper: the invariance term is a mean over
    dimensions too (the paper's Eq. 5 sums them) and the two variance terms are averaged
    (Eq. 6 sums them). The default coefficients (25, 25, 1) were tuned with these scalings.

    Args:
        sim, var, cov: weights ``lambda, mu, nu``.
        eps: inside the square root of the variance.

    Shapes:
        ``z_a, z_b: (N, D)``, N >= 2 -> scalar.
    """

    def __init__(self, sim: float = 25.0, var: float = 25.0, cov: float = 1.0, eps: float = 1e-4) -> None:
        super().__init__()
        self.sim, self.var, self.cov, self.eps = sim, var, cov, eps

    def _variance(self, z: torch.Tensor) -> torch.Tensor:
        return F.relu(1 - torch.sqrt(z.var(0) + self.eps)).mean()

    @staticmethod
    def _covariance(z: torch.Tensor) -> torch.Tensor:
        n, d = z.shape
        z = z - z.mean(0)
        cov = z.T @ z / (n - 1)
        off = ~torch.eye(d, dtype=torch.bool, device=z.device)
        return cov[off].pow(2).sum() / d

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        _check_pair(z_a, z_b, "VICRegLoss", min_batch=2)
        with torch.autocast(z_a.device.type, enabled=False):  # batch statistics in float32
            z_a, z_b = z_a.float(), z_b.float()
            inv = F.mse_loss(z_a, z_b)
            var = (self._variance(z_a) + self._variance(z_b)) / 2
            cov = self._covariance(z_a) + self._covariance(z_b)
        return self.sim * inv + self.var * var + self.cov * cov


class NNMemoryBank(nn.Module):
    """FIFO support set of l2-normalised embeddings with nearest-neighbour look-up (NNCLR).

    Dwibedi et al., "With a Little Help from My Friends: Nearest-Neighbor Contrastive Learning
    of Visual Representations", ICCV 2021, Sec. 3.1: ``NN(z, Q) = argmin_{q in Q} ||z - q||``
    over the support set ``Q``; on l2-normalised vectors this is the maximum cosine.

    Only filled slots are searched. While the bank is empty, :meth:`nearest` returns the
    (detached) query itself, so the first step degenerates to a SimCLR-style positive.
    Buffers, so the queue is saved in checkpoints and moves with ``.to(device)``.

    Args:
        size: number of slots (NNCLR: 98304 on ImageNet; a few thousand for MedMNIST).
        dim: embedding size.
    """

    bank: torch.Tensor
    ptr: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1 or dim < 1:
            raise ValueError(f"NNMemoryBank needs size >= 1 and dim >= 1, got {size}, {dim}")
        self.size, self.dim = size, dim
        self.register_buffer("bank", torch.zeros(size, dim))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))
        self.register_buffer("filled", torch.zeros((), dtype=torch.long))

    def _check(self, z: torch.Tensor) -> None:
        if z.ndim != 2 or z.shape[1] != self.dim:
            raise ValueError(f"NNMemoryBank expects (B, {self.dim}) embeddings, got {tuple(z.shape)}")

    @torch.no_grad()
    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """For each row of ``z: (B, dim)``, the most cosine-similar stored embedding, ``(B, dim)``."""
        self._check(z)
        n = int(self.filled)
        if n == 0:
            return F.normalize(z.detach(), dim=1)
        support = self.bank[:n]
        idx = (F.normalize(z.to(support.dtype), dim=1) @ support.T).argmax(dim=1)
        return support[idx].to(z.dtype)

    @torch.no_grad()
    def update(self, z: torch.Tensor) -> None:
        """Enqueue ``z: (B, dim)`` (normalised, detached), overwriting the oldest slots."""
        self._check(z)
        z = F.normalize(z.detach(), dim=1)[-self.size :]
        idx = (int(self.ptr) + torch.arange(z.shape[0], device=z.device)) % self.size
        self.bank[idx] = z.to(self.bank.dtype)
        self.ptr.fill_((int(self.ptr) + z.shape[0]) % self.size)
        self.filled.fill_(min(self.size, int(self.filled) + z.shape[0]))


class NNCLRLoss(_TemperatureLoss):
    """Contrastive loss of NNCLR: nearest neighbours as positives, the other view as candidates.

    Dwibedi et al. 2021 (see :class:`NNMemoryBank`), Sec. 3.1::

        L_i = -log( exp(NN(z_i, Q) . p_i^+ / T) / sum_k exp(NN(z_i, Q) . p_k^+ / T) )

    i.e. a cross-entropy over the N candidates of the other view, with ``NN(z_i, Q)`` (from
    :meth:`NNMemoryBank.nearest`, detached) in place of ``z_i``: an InfoNCE (not the 2N-2
    negatives of NT-Xent) as in the paper and solo-learn ``nnclr_loss_func``. ``p^+`` is the
    other view's projection or, with NNCLR's predictor, its prediction. One direction; the
    method symmetrises.

    Args:
        temperature: ``T`` (0.1 in the paper).

    Shapes:
        ``nn_a, p_b: (N, D)`` -> scalar.
    """

    def __init__(self, temperature: float = 0.1) -> None:
        super().__init__(temperature)

    def forward(self, nn_a: torch.Tensor, p_b: torch.Tensor) -> torch.Tensor:
        _check_pair(nn_a, p_b, "NNCLRLoss")
        logits = F.normalize(nn_a.detach(), dim=1) @ F.normalize(p_b, dim=1).T / self.temperature
        return F.cross_entropy(logits, torch.arange(p_b.shape[0], device=p_b.device))
