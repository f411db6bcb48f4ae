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
  1x1-conv head g2), each region's features flattened into one vector (optionally mapped by the
  method's per-region projection). Negatives are every other region (medssl) or, as in the official
  code, the 5 regions neighbouring the anchor's region in the anchor's and the positive's image
  (:func:`neighbour_region_starts`, :func:`neighbour_contrastive_loss`).

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
LOCAL_NEGATIVES = ("all", "neighbours")
REGION_GRIDS = ("fit", "official")
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


def _last_starts(shape: tuple[int, ...], region_size: int, grid: str) -> list[int]:
    """``m`` per axis: the largest region start of the grid (see :func:`local_region_starts`)."""
    if grid not in REGION_GRIDS:
        raise ValueError(f"grid must be one of {REGION_GRIDS}, got {grid!r}")
    if region_size < 1:
        raise ValueError(f"region_size must be >= 1, got {region_size}")
    margin = 1 if grid == "official" and region_size > 1 else 0
    if min(shape) < region_size + margin:
        raise ValueError(f"feature map {shape} is smaller than region_size {region_size} on some side")
    return [s - region_size - margin for s in shape]


def local_region_starts(
    feature_shape: Sequence[int], num_regions: int = 13, region_size: int = 3, grid: str = "fit"
) -> torch.Tensor:
    """Start indices of the local regions on a 2D or 3D feature map.

    For a spatial side of length ``L`` the largest start is ``m``; the level grid is
    ``{0, m // 2, m}`` and the quarter grid is ``{m // 4, (3 * m) // 4}`` (integer floor
    division). The regions are the level grid over all axes (row-major: first axis slowest)
    followed, for 13 (2D) or 35 (3D) regions, by the quarter grid (also row-major):

    * 2D: 9 = the 3x3 level grid (corners, edge midpoints, centre); 13 = those + the 4 quarter points.
    * 3D: 27 = the 3x3x3 level grid; 35 = those + the 8 quarter points.

    This is the layout of the official code (``models.py``, ``decoder_pretrain_net``:
    ``pos_sample_indexes``). ``grid`` sets ``m``:

    * ``"fit"`` (medssl): ``m = L - region_size``, the last region touches the border;
    * ``"official"``: ``m = L - 4`` for regions wider than one pixel (``im_x = img_size_x / f - 4``
      with ``local_reg_size=1``, 3x3 regions) and ``L - 1`` for single pixels.

    Args:
        feature_shape: spatial shape ``S`` (2 or 3 sides).
        num_regions: ``K``, one of 9, 13 (2D) or 27, 35 (3D).
        region_size: side ``r`` of the (hyper)cubic regions.
        grid: ``"fit"`` or ``"official"``.

    Returns:
        ``(K, d)`` ``torch.long`` start indices.
    """
    shape = tuple(int(s) for s in feature_shape)
    d = len(shape)
    if d not in _ALLOWED_REGIONS:
        raise ValueError(f"local regions need a 2D or 3D spatial shape, got {shape}")
    if num_regions not in _ALLOWED_REGIONS[d]:
        raise ValueError(f"num_regions for {d}D feature maps must be one of {_ALLOWED_REGIONS[d]}, got {num_regions}")
    last = _last_starts(shape, region_size, grid)
    levels = [(0, m // 2, m) for m in last]
    starts = list(itertools.product(*levels))
    if num_regions == len(starts) + 2**d:
        starts += list(itertools.product(*[(m // 4, (3 * m) // 4) for m in last]))
    return torch.tensor(starts, dtype=torch.long)


# The official negatives of each local region (models.py, decoder_pretrain_net: neg_sample_indexes),
# written with the level names of the region grid: "0", "q" = m // 4, "h" = m // 2, "t" = (3 * m) // 4,
# "m" = m, one letter per axis (first axis first). Row k lists the 5 negatives of region k of
# local_region_starts' order. The 13-region table differs between 3x3 regions (local_reg_size=1)
# and single pixels (local_reg_size=0); the 9-region table is the same for both. Some negatives
# (e.g. "qh") are not themselves among the 13 anchor regions: they are cut at their own positions.
_NEIGHBOURS = {
    (9, "3x3"): (
        "0h h0 hh 0m m0", "00 0m h0 hh hm", "00 0h hh hm mm", "00 0h hh m0 mh", "00 0h h0 hm mh",
        "0h 0m hh mh mm", "00 h0 hh mh mm", "h0 hh hm m0 mm", "0m hh hm m0 mh",
    ),
    (13, "3x3"): (
        "0h qq qh h0 hq", "00 0m qq qt hh", "0h qh qt ht hm", "00 qq hh m0 tq", "qq qt tq tt h0",
        "0m hh mm qt tt", "h0 hq mh tq th", "hh m0 mm tq tt", "ht hm mh tt th", "00 0h h0 hh qt",
        "0h 0m qq hh hm", "h0 hh m0 mh tt", "hh hm mh mm tq",
    ),
    (13, "1x1"): (
        "0h h0 hh qq qt", "00 0m hh qq qt", "0h hh hm tq qt", "00 hh m0 qq tq", "qq qt tq tt h0",
        "0m hh mm qt tt", "h0 hh mh tq qq", "hh m0 mm tq tt", "hh hm mh tt tq", "00 0h h0 hh qt",
        "0h 0m hh hm tt", "h0 hh m0 0h qq", "hh hm mh mm qt",
    ),
}
NUM_NEIGHBOURS = 5


def neighbour_region_starts(
    feature_shape: Sequence[int], num_regions: int = 13, region_size: int = 3, grid: str = "official"
) -> torch.Tensor:
    """Start indices of the official *neighbouring* negatives of every local region (2D only).

    The official code contrasts a local region not with every other region but with 5 regions
    near it, taken from both augmented copies (``no_of_neg_local_regions=5``; the tables of
    ``neg_sample_indexes`` in ``models.py``, ``decoder_pretrain_net``). Coordinates use the
    same levels as :func:`local_region_starts` with the same ``grid``.

    Args:
        feature_shape: spatial shape ``(H, W)``.
        num_regions: ``K``, 9 or 13.
        region_size: ``r``; 1 selects the official single-pixel table, any larger size the
            3x3 table.
        grid: ``"fit"`` or ``"official"`` (see :func:`local_region_starts`).

    Returns:
        ``(K, 5, 2)`` ``torch.long`` start indices; row ``k`` are the negatives of region ``k``.
    """
    shape = tuple(int(s) for s in feature_shape)
    if len(shape) != 2:
        raise ValueError(f"neighbouring negatives are defined (by the official code) for 2D maps only, got {shape}")
    if num_regions not in _ALLOWED_REGIONS[2]:
        raise ValueError(f"num_regions for 2D feature maps must be one of {_ALLOWED_REGIONS[2]}, got {num_regions}")
    last = _last_starts(shape, region_size, grid)
    table = _NEIGHBOURS[(num_regions, "3x3" if num_regions == 9 or region_size > 1 else "1x1")]
    level = [{"0": 0, "q": m // 4, "h": m // 2, "t": (3 * m) // 4, "m": m} for m in last]
    starts = [[[level[a][c] for a, c in enumerate(pt)] for pt in row.split()] for row in table]
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


def neighbour_contrastive_loss(
    anchors: torch.Tensor, negatives: torch.Tensor, pos: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Local contrastive loss with the official *neighbouring* negatives, one set per positive pair.

    For an anchor region ``k`` of image ``g`` and a positive ``(h, k)`` (the same region of
    another copy or, for L^D, of another image), the negatives are the neighbouring regions of
    ``k`` in *both* images, ``negatives[g, k]`` and ``negatives[h, k]`` (official code: ``den_i1_ss``
    sums over the negatives of ``x_a1_i`` and ``x_a2_i``)::

        l(a, p) = -log( exp(s_ap / T) / ( exp(s_ap / T) + sum_{n in Nb(k, g) + Nb(k, h)} exp(s_an / T) ) )

    and the loss is the mean over all ordered positive pairs (for L^R with two copies: every
    anchor has one positive, so this is the official ``sum / no_of_local_regions / bs``).
    Computed in float32 with ``logsumexp`` (no overflow at small ``T``).

    Args:
        anchors: ``(G, K, D)``: region vectors of ``G`` images (copies x images, view-major).
        negatives: ``(G, K, J, D)``: the ``J`` neighbouring-region vectors of region ``k`` of image ``g``.
        pos: ``(G * K, G * K)`` boolean positives over anchors (index ``g * K + k``); positives must
            share the region (as :func:`local_pair_masks` gives).
        temperature: ``T > 0``.

    Returns:
        Scalar float32 tensor.
    """
    _check_temperature(temperature)
    if anchors.ndim != 3 or negatives.ndim != 4 or negatives.shape[:2] != anchors.shape[:2] \
            or negatives.shape[-1] != anchors.shape[-1]:
        raise ValueError(f"neighbour_contrastive_loss expects anchors (G, K, D) and negatives (G, K, J, D), got "
                         f"{tuple(anchors.shape)} and {tuple(negatives.shape)}")
    g, k = anchors.shape[:2]
    if tuple(pos.shape) != (g * k, g * k):
        raise ValueError(f"neighbour_contrastive_loss expects a ({g * k}, {g * k}) positive mask, got {tuple(pos.shape)}")
    pos4 = pos.to(device=anchors.device, dtype=torch.bool).reshape(g, k, g, k)
    same_region = torch.diagonal(pos4, dim1=1, dim2=3).permute(0, 2, 1)  # (G, K, G): pos[(g, k), (h, k)]
    if int(same_region.sum()) != int(pos4.sum()):
        raise ValueError("neighbour_contrastive_loss: positives must be the same region of two images")
    num_pos = int(same_region.sum())
    if num_pos == 0:
        raise ValueError("neighbour_contrastive_loss: the batch has no positive pair")
    with torch.autocast(anchors.device.type, enabled=False):
        a = F.normalize(anchors.float(), dim=-1)
        nb = F.normalize(negatives.float(), dim=-1)
        s_pos = torch.einsum("gkd,hkd->gkh", a, a) / temperature  # (G, K, G)
        lse = torch.logsumexp(torch.einsum("gkd,hkjd->gkhj", a, nb) / temperature, dim=-1)  # (G, K, G)
        own = torch.diagonal(lse, dim1=0, dim2=2).T[:, :, None]  # (G, K, 1): Nb(k) in the anchor's image
        neg_lse = torch.logaddexp(own, lse)  # + Nb(k) in the positive's image
        terms = torch.logaddexp(s_pos, neg_lse) - s_pos
        return torch.where(same_region, terms, torch.zeros_like(terms)).sum() / num_pos


class LocalContrastiveLoss(nn.Module):
    """Local contrastive loss of Chaitanya et al. 2020 (paper Sec. 3.2, Eq. 1; strategies L^R, L^D).

    ``f[v, i]`` is the feature map (output of the 1x1-conv head g2 on the decoder features) of
    copy ``v`` of image ``i``; the copies differ only by intensity augmentation, so the same
    position is the same anatomy. ``K`` regions of side ``r`` are cut at the positions of
    :func:`local_region_starts`, each flattened into one ``C * r**d`` vector
    (:func:`extract_regions`) and, when a ``projection`` is given, mapped by it (the official
    per-region linear layer, ``wgt_en=1``: ``dense(flat(region), 128, use_bias=False)``, owned
    by the method). Positives are those of :func:`local_pair_masks`. Negatives:

    * ``"all"`` (medssl): every other region of the anchor's group (:func:`local_pair_masks`),
      loss :func:`masked_contrastive_loss`; 2D and 3D;
    * ``"neighbours"`` (official): the 5 neighbouring regions of the anchor's region in the
      anchor's and the positive's image (:func:`neighbour_region_starts`,
      :func:`neighbour_contrastive_loss`); 2D only, as in the official code.

    The loss is the mean of Eq. 1 over all ordered positive pairs, positive in the denominator.

    Args:
        temperature: ``T`` (0.1 in the paper).
        strategy: ``"LR"`` or ``"LD"`` (the official pipeline's default: ``local_loss_exp_no=0``, L^R).
        num_regions: ``K``: 9 or 13 for 2D maps, 27 or 35 for 3D maps (13 in the paper, 2D).
        region_size: ``r`` (3 in the paper).
        negatives: ``"all"`` or ``"neighbours"``.
        grid: ``"fit"`` or ``"official"`` region positions (:func:`local_region_starts`).

    Shapes:
        ``f: (V, N, C, *S)``, ``V >= 2``, ``len(S)`` 2 or 3; ``partition: (N,)`` integers
        (required for LD, ignored for LR); ``projection``: ``(..., C * r**d) -> (..., D)`` ->
        float32 scalar.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        strategy: str = "LD",
        num_regions: int = 13,
        region_size: int = 3,
        negatives: str = "all",
        grid: str = "fit",
    ) -> None:
        super().__init__()
        _check_temperature(temperature)
        if strategy not in LOCAL_STRATEGIES:
            raise ValueError(f"strategy must be one of {LOCAL_STRATEGIES}, got {strategy!r}")
        if num_regions not in _ALLOWED_REGIONS[2] + _ALLOWED_REGIONS[3]:
            raise ValueError(f"num_regions must be one of 9, 13 (2D) or 27, 35 (3D), got {num_regions}")
        if region_size < 1:
            raise ValueError(f"region_size must be >= 1, got {region_size}")
        if negatives not in LOCAL_NEGATIVES:
            raise ValueError(f"negatives must be one of {LOCAL_NEGATIVES}, got {negatives!r}")
        if grid not in REGION_GRIDS:
            raise ValueError(f"grid must be one of {REGION_GRIDS}, got {grid!r}")
        if negatives == "neighbours" and num_regions not in _ALLOWED_REGIONS[2]:
            raise ValueError(f"neighbouring negatives are defined for 2D maps (9 or 13 regions), got {num_regions}")
        self.temperature = temperature
        self.strategy = strategy
        self.num_regions = num_regions
        self.region_size = region_size
        self.negatives = negatives
        self.grid = grid

    def forward(self, f: torch.Tensor, partition: torch.Tensor | None = None, projection=None) -> torch.Tensor:
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
        k = self.num_regions
        starts = local_region_starts(spatial, k, self.region_size, self.grid)
        if self.negatives == "neighbours":
            nb = neighbour_region_starts(spatial, k, self.region_size, self.grid)  # (K, J, 2)
            starts = torch.cat([starts, nb.reshape(-1, nb.shape[-1])])
        regions = extract_regions(f.reshape(v * n, c, *spatial), starts, self.region_size)  # (V*N, P, F)
        if projection is not None:
            regions = projection(regions)
        pos, neg = local_pair_masks(v, n, k, part, self.strategy)
        if self.negatives == "neighbours":
            anchors, others = regions[:, :k], regions[:, k:]
            return neighbour_contrastive_loss(
                anchors, others.reshape(v * n, k, -1, others.shape[-1]), pos.to(f.device), self.temperature
            )
        return masked_contrastive_loss(
            regions.reshape(v * n * k, -1), pos.to(f.device), neg.to(f.device), self.temperature
        )
