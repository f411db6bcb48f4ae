"""Global and local contrastive losses of Chaitanya et al. (NeurIPS 2020): embeddings in, scalar out.

Chaitanya, Erdil, Karani & Konukoglu, "Contrastive learning of global and local features for
medical image segmentation with limited annotations", NeurIPS 2020; official TensorFlow code
krishnabits001/domain_specific_cl, ``models.py``.

Both losses are the same masked contrastive loss (paper Eq. 1, with the positive itself in the
denominator as in the official code). With ``s(a, b)`` the cosine similarity and ``T`` the
temperature::

    l(a, p) = -log( exp(s_ap / T) / ( exp(s_ap / T) + sum_{n in Neg(a)} exp(s_an / T) ) )
    L = mean of l(a, p) over all ordered positive pairs (a, p)

Other positives of ``a`` are *not* in its denominator for the pair ``(a, p)``. An anchor without
negatives contributes ``-log(1) = 0``. Only the positive/negative masks differ between the
strategies; they are built once per batch shape and applied to the full similarity matrix, so
the losses are vectorised (no loop over samples).

* Global loss (paper Sec. 3.1, strategies G^R, G^{D-}, G^D): one embedding per image, from the
  encoder and projection head g1.
* Local loss (paper Sec. 3.2, strategies L^R, L^D): regions of decoder feature maps (after the
  1x1-conv head g2), each region's features flattened into one vector.

All computations are in float32 (inputs are cast with ``.float()``, autocast is disabled) and use
``logsumexp`` / ``logaddexp``, so no ``exp`` overflows at small temperatures.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

GLOBAL_STRATEGIES = ("GR", "GD-", "GD")
LOCAL_STRATEGIES = ("LR", "LD")
_ALLOWED_REGIONS = {2: (9, 13), 3: (27, 35)}


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def _check_partition(partition: torch.Tensor | None, num_images: int, who: str) -> torch.Tensor:
    if partition is None:
        raise ValueError(f"{who} needs the partition index of each image (a ({num_images},) integer tensor)")
    if not isinstance(partition, torch.Tensor):
        partition = torch.as_tensor(partition)
    if partition.ndim != 1 or partition.shape[0] != num_images:
        raise ValueError(f"{who} expects a partition of shape ({num_images},), got {tuple(partition.shape)}")
    if partition.is_floating_point() or partition.is_complex():
        raise ValueError(f"{who} expects an integer partition tensor, got dtype {partition.dtype}")
    return partition


def masked_contrastive_loss(
    x: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Mean of ``l(a, p)`` (paper Eq. 1, positive in the denominator) over the positive pairs of a mask.

    ``x`` is l2-normalised along the last dimension; ``s = x x^T / T``. For every ``(a, p)`` with
    ``pos[a, p]``::

        l(a, p) = -s_ap + logaddexp(s_ap, logsumexp_{n : neg[a, n]} s_an)

    Anchors without negatives give ``l = 0`` (no NaN, also in the gradient).

    Args:
        x: ``(M, D)`` vectors (any float dtype; computed in float32).
        pos: ``(M, M)`` boolean, rows = anchors.
        neg: ``(M, M)`` boolean, rows = anchors.
        temperature: ``T > 0``.

    Returns:
        Scalar float32 tensor.

    Raises:
        ValueError: on bad shapes, a non-positive temperature, or a mask without any positive.
    """
    _check_temperature(temperature)
    if x.ndim != 2:
        raise ValueError(f"masked_contrastive_loss expects (M, D) vectors, got {tuple(x.shape)}")
    m = x.shape[0]
    if tuple(pos.shape) != (m, m) or tuple(neg.shape) != (m, m):
        raise ValueError(
            f"masked_contrastive_loss expects ({m}, {m}) masks, got {tuple(pos.shape)} and {tuple(neg.shape)}"
        )
    pos, neg = pos.to(device=x.device, dtype=torch.bool), neg.to(device=x.device, dtype=torch.bool)
    num_pos = int(pos.sum())
    if num_pos == 0:
        raise ValueError(f"masked_contrastive_loss: the batch of {m} vectors has no positive pair")
    with torch.autocast(x.device.type, enabled=False):
        x = F.normalize(x.float(), dim=-1)
        logits = x @ x.T / temperature
        has_neg = neg.any(dim=1, keepdim=True)
        # rows without negatives: a finite dummy row for logsumexp, then -inf (logaddexp(s, -inf) = s)
        neg_logits = logits.masked_fill(~neg, float("-inf")).masked_fill(~has_neg, 0.0)
        neg_lse = torch.logsumexp(neg_logits, dim=1, keepdim=True).masked_fill(~has_neg, float("-inf"))
        terms = torch.logaddexp(logits, neg_lse) - logits
        return torch.where(pos, terms, torch.zeros_like(terms)).sum() / num_pos


# --------------------------------------------------------------------------------------------- global


def global_pair_masks(
    num_views: int, partition: torch.Tensor | None, strategy: str, num_images: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks of the global loss (paper Sec. 3.1).

    Over the flattened index ``a = v * N + i`` (view ``v``, image ``i``); rows are anchors. An index
    is never paired with itself.

    * ``"GR"`` (SimCLR-like): positives of ``(v, i)`` are ``(v', i)``, ``v' != v``; negatives are all
      ``(v', j)``, ``j != i``.
    * ``"GD-"``: positives as GR; negatives are ``(v', j)`` with ``j != i`` and
      ``partition[j] != partition[i]`` (same-partition images of other volumes are dropped).
    * ``"GD"``: positives are all ``(v', j) != (v, i)`` with ``partition[j] == partition[i]``;
      negatives are all ``(v', j)`` with ``partition[j] != partition[i]``.

    Args:
        num_views: ``V``.
        partition: ``(N,)`` integer partition index per image; required for GD-/GD, optional for GR
            (where only its length is used, if given).
        strategy: ``"GR"``, ``"GD-"`` or ``"GD"``.
        num_images: ``N``; needed only for GR without a partition, must agree with it otherwise.

    Returns:
        ``(pos, neg)``, boolean ``(V * N, V * N)`` each, on the partition's device (CPU otherwise).
    """
    if strategy not in GLOBAL_STRATEGIES:
        raise ValueError(f"strategy must be one of {GLOBAL_STRATEGIES}, got {strategy!r}")
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}")
    if partition is None and strategy == "GR":
        if num_images is None or num_images < 1:
            raise ValueError(f"GR without a partition needs num_images >= 1, got {num_images}")
        n, device = num_images, torch.device("cpu")
        part = None
    else:
        if partition is None:
            raise ValueError(f"strategy {strategy!r} needs the partition index of each image")
        partition = torch.as_tensor(partition)
        if partition.ndim != 1 or (num_images is not None and partition.shape[0] != num_images):
            expected = "(N,)" if num_images is None else f"({num_images},)"
            raise ValueError(f"global_pair_masks expects a partition of shape {expected}, got {tuple(partition.shape)}")
        n = partition.shape[0]
        part = _check_partition(partition, n, "global_pair_masks")
        device = part.device
    idx = torch.arange(num_views * n, device=device)
    img = idx % n
    eye = idx[:, None] == idx[None, :]
    same_img = img[:, None] == img[None, :]
    if strategy == "GR":
        return same_img & ~eye, ~same_img
    assert part is not None
    p = part[img]
    same_part = p[:, None] == p[None, :]
    if strategy == "GD-":
        return same_img & ~eye, ~same_img & ~same_part
    return same_part & ~eye, ~same_part


class GlobalContrastiveLoss(nn.Module):
    """Global contrastive loss of Chaitanya et al. 2020 (paper Sec. 3.1, Eq. 1; strategies G^R, G^{D-}, G^D).

    ``z[v, i]`` is the projection-head output of view ``v`` of image ``i``. A volume is split into
    ``S`` partitions along the slice axis and a batch holds one image per partition per volume;
    ``partition[i]`` is the partition of image ``i``. The positives and negatives of each strategy
    are those of :func:`global_pair_masks`; the loss is :func:`masked_contrastive_loss`, i.e. the
    mean over all ordered positive pairs of::

        l(a, p) = -log( exp(s_ap / T) / ( exp(s_ap / T) + sum_{n in Neg(a)} exp(s_an / T) ) )

    with the positive in the denominator and the other positives of ``a`` not (official code).
    Symmetric in the views.

    Args:
        temperature: ``T`` (0.1 in the paper).
        strategy: ``"GR"``, ``"GD-"`` or ``"GD"`` (the paper's best: GD).

    Shapes:
        ``z: (V, N, D)``, ``V >= 2`` views, view-major; ``partition: (N,)`` integers (required for
        GD-/GD, ignored for GR) -> float32 scalar.
    """

    def __init__(self, temperature: float = 0.1, strategy: str = "GD") -> None:
        super().__init__()
        _check_temperature(temperature)
        if strategy not in GLOBAL_STRATEGIES:
            raise ValueError(f"strategy must be one of {GLOBAL_STRATEGIES}, got {strategy!r}")
        self.temperature = temperature
        self.strategy = strategy

    def forward(self, z: torch.Tensor, partition: torch.Tensor | None = None) -> torch.Tensor:
        if z.ndim != 3:
            raise ValueError(f"GlobalContrastiveLoss expects z of shape (V, N, D), got {tuple(z.shape)}")
        v, n, d = z.shape
        if v < 2 or n < 1 or d < 1:
            raise ValueError(f"GlobalContrastiveLoss needs V >= 2 views, N >= 1, D >= 1, got {tuple(z.shape)}")
        if self.strategy == "GR":
            pos, neg = global_pair_masks(v, None, "GR", num_images=n)
        else:
            part = _check_partition(partition, n, f"GlobalContrastiveLoss({self.strategy!r})")
            pos, neg = global_pair_masks(v, part.to(z.device), self.strategy)
        return masked_contrastive_loss(z.reshape(v * n, d), pos.to(z.device), neg.to(z.device), self.temperature)


# ---------------------------------------------------------------------------------------------- local


def local_region_starts(
    feature_shape: Sequence[int], num_regions: int = 13, region_size: int = 3
) -> torch.Tensor:
    """Start indices of the local regions on a 2D or 3D feature map.

    For a spatial side of length ``L`` the last valid start is ``m = L - region_size``; the level
    grid is ``{0, m // 2, m}`` and the quarter grid is ``{m // 4, (3 * m) // 4}`` (integer floor
    division). The regions are the level grid over all axes (row-major: first axis slowest)
    followed, for 13 (2D) or 35 (3D) regions, by the quarter grid (also row-major):

    * 2D: 9 = the 3x3 level grid (corners, edge midpoints, centre); 13 = those + the 4 quarter points.
    * 3D: 27 = the 3x3x3 level grid; 35 = those + the 8 quarter points.

    This is the layout of the official code (corners, edge midpoints, centre, quarter points),
    except that the official code uses ``m = L - 4`` for 3x3 regions; we use ``L - region_size``
    so that the last region touches the border. ``region_size = 1`` gives single feature pixels.

    Args:
        feature_shape: spatial shape ``S`` (2 or 3 sides).
        num_regions: ``K``, one of 9, 13 (2D) or 27, 35 (3D).
        region_size: side ``r`` of the (hyper)cubic regions.

    Returns:
        ``(K, d)`` ``torch.long`` start indices.
    """
    shape = tuple(int(s) for s in feature_shape)
    d = len(shape)
    if d not in _ALLOWED_REGIONS:
        raise ValueError(f"local regions need a 2D or 3D spatial shape, got {shape}")
    if num_regions not in _ALLOWED_REGIONS[d]:
        raise ValueError(f"num_regions for {d}D feature maps must be one of {_ALLOWED_REGIONS[d]}, got {num_regions}")
    if region_size < 1:
        raise ValueError(f"region_size must be >= 1, got {region_size}")
    if min(shape) < region_size:
        raise ValueError(f"feature map {shape} is smaller than region_size {region_size} on some side")
    last = [s - region_size for s in shape]
    levels = [(0, m // 2, m) for m in last]
    starts = list(itertools.product(*levels))
    if num_regions == len(starts) + 2**d:
        starts += list(itertools.product(*[(m // 4, (3 * m) // 4) for m in last]))
    return torch.tensor(starts, dtype=torch.long)


def extract_regions(f: torch.Tensor, starts: torch.Tensor, region_size: int) -> torch.Tensor:
    """Flattened features of cubic regions of a batch of feature maps (vectorised gather).

    Region ``k`` of sample ``b`` is ``f[b, :, s0:s0+r, s1:s1+r(, s2:s2+r)]`` with ``(s0, s1, ...) =
    starts[k]``, flattened channel-major then spatially row-major (as ``.reshape(-1)``).

    Args:
        f: ``(B, C, *S)`` feature maps, ``len(S) = d``.
        starts: ``(K, d)`` integer start indices (see :func:`local_region_starts`).
        region_size: side ``r``.

    Returns:
        ``(B, K, C * r**d)``, same dtype as ``f``.
    """
    if f.ndim < 3:
        raise ValueError(f"extract_regions expects (B, C, *S) feature maps, got {tuple(f.shape)}")
    spatial = tuple(f.shape[2:])
    d = len(spatial)
    if starts.ndim != 2 or starts.shape[1] != d:
        raise ValueError(
            f"extract_regions expects (K, {d}) starts for a map of shape {tuple(f.shape)}, got {tuple(starts.shape)}"
        )
    if region_size < 1:
        raise ValueError(f"region_size must be >= 1, got {region_size}")
    starts = starts.to(device=f.device, dtype=torch.long)
    upper = torch.tensor(spatial, device=f.device) - region_size
    if starts.numel() and (bool((starts < 0).any()) or bool((starts > upper).any())):
        raise ValueError(f"region starts out of range for spatial shape {spatial} and region_size {region_size}")
    b, c = f.shape[:2]
    k = starts.shape[0]
    offsets = torch.cartesian_prod(*[torch.arange(region_size, device=f.device)] * d).reshape(-1, d)
    positions = starts[:, None, :] + offsets[None]  # (K, r^d, d)
    strides = torch.tensor([int(torch.tensor(spatial[i + 1 :]).prod()) for i in range(d)], device=f.device)
    linear = (positions * strides).sum(-1).reshape(-1)  # (K * r^d,)
    vals = f.reshape(b, c, -1)[:, :, linear].reshape(b, c, k, -1)
    return vals.permute(0, 2, 1, 3).reshape(b, k, -1)


def local_pair_masks(
    num_views: int, num_images: int, num_regions: int, partition: torch.Tensor | None, strategy: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positive and negative masks of the local loss (paper Sec. 3.2).

    Over the flattened index ``(v * N + i) * K + k`` (view, image, region); rows are anchors; an
    index is never paired with itself.

    * ``"LR"``: positives of ``(v, i, k)`` are ``(v', i, k)``, ``v' != v``; negatives are the other
      regions of the same image in every view, ``(v'', i, k'')`` with ``k'' != k``.
    * ``"LD"``: positives also include ``(v', j, k)`` for every view and every ``j != i`` with
      ``partition[j] == partition[i]``; negatives are ``(v'', j, k'')``, ``k'' != k``, for the anchor
      image and those same-partition images.

    Args:
        num_views: ``V``; num_images: ``N``; num_regions: ``K``.
        partition: ``(N,)`` integers, required for LD, ignored for LR.
        strategy: ``"LR"`` or ``"LD"``.

    Returns:
        ``(pos, neg)``, boolean ``(V * N * K, V * N * K)`` each.
    """
    if strategy not in LOCAL_STRATEGIES:
        raise ValueError(f"strategy must be one of {LOCAL_STRATEGIES}, got {strategy!r}")
    if num_views < 1 or num_images < 1 or num_regions < 1:
        raise ValueError(f"local_pair_masks needs positive sizes, got V={num_views}, N={num_images}, K={num_regions}")
    device = torch.device("cpu")
    if strategy == "LD":
        partition = _check_partition(partition, num_images, "local_pair_masks('LD')")
        device = partition.device
    idx = torch.arange(num_views * num_images * num_regions, device=device)
    reg = idx % num_regions
    img = (idx // num_regions) % num_images
    eye = idx[:, None] == idx[None, :]
    same_reg = reg[:, None] == reg[None, :]
    if strategy == "LR":
        group = img[:, None] == img[None, :]
    else:
        assert partition is not None
        p = partition.to(device)[img]
        group = p[:, None] == p[None, :]
    return group & same_reg & ~eye, group & ~same_reg


class LocalContrastiveLoss(nn.Module):
    """Local contrastive loss of Chaitanya et al. 2020 (paper Sec. 3.2, Eq. 1; strategies L^R, L^D).

    ``f[v, i]`` is the feature map (output of the 1x1-conv head g2 on the decoder features) of
    copy ``v`` of image ``i``; the copies differ only by intensity augmentation, so the same
    position is the same anatomy. ``K`` regions of side ``r`` are cut at the positions of
    :func:`local_region_starts`, each flattened into one ``C * r**d`` vector
    (:func:`extract_regions`); positives and negatives are those of :func:`local_pair_masks`
    and the loss is :func:`masked_contrastive_loss` (mean of Eq. 1 over all ordered positive
    pairs, positive in the denominator). Works on 2D and 3D maps.

    Args:
        temperature: ``T`` (0.1 in the paper).
        strategy: ``"LR"`` or ``"LD"`` (the paper's best: LD).
        num_regions: ``K``: 9 or 13 for 2D maps, 27 or 35 for 3D maps (13 in the paper, 2D).
        region_size: ``r`` (3 in the paper).

    Shapes:
        ``f: (V, N, C, *S)``, ``V >= 2``, ``len(S)`` 2 or 3; ``partition: (N,)`` integers
        (required for LD, ignored for LR) -> float32 scalar.
    """

    def __init__(
        self, temperature: float = 0.1, strategy: str = "LD", num_regions: int = 13, region_size: int = 3
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        if strategy not in LOCAL_STRATEGIES:
            raise ValueError(f"strategy must be one of {LOCAL_STRATEGIES}, got {strategy!r}")
        if num_regions not in _ALLOWED_REGIONS[2] + _ALLOWED_REGIONS[3]:
            raise ValueError(f"num_regions must be one of 9, 13 (2D) or 27, 35 (3D), got {num_regions}")
        if region_size < 1:
            raise ValueError(f"region_size must be >= 1, got {region_size}")
        self.temperature = temperature
        self.strategy = strategy
        self.num_regions = num_regions
        self.region_size = region_size

    def forward(self, f: torch.Tensor, partition: torch.Tensor | None = None) -> torch.Tensor:
        if f.ndim not in (5, 6):
            raise ValueError(
                f"LocalContrastiveLoss expects f of shape (V, N, C, *S) with 2 or 3 spatial dims, got {tuple(f.shape)}"
            )
        v, n, c = f.shape[:3]
        spatial = tuple(f.shape[3:])
        if v < 2 or n < 1 or c < 1:
            raise ValueError(f"LocalContrastiveLoss needs V >= 2 views, N >= 1, C >= 1, got {tuple(f.shape)}")
        part = None
        if self.strategy == "LD":
            part = _check_partition(partition, n, "LocalContrastiveLoss('LD')").to(f.device)
        starts = local_region_starts(spatial, self.num_regions, self.region_size)
        regions = extract_regions(f.reshape(v * n, c, *spatial), starts, self.region_size)  # (V*N, K, F)
        k = regions.shape[1]
        pos, neg = local_pair_masks(v, n, k, part, self.strategy)
        return masked_contrastive_loss(
            regions.reshape(v * n * k, -1), pos.to(f.device), neg.to(f.device), self.temperature
        )
