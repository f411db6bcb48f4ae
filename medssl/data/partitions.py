"""Partition-structured batches for global contrastive pretraining (Chaitanya et al., 2020).

Chaitanya, Erdil, Karani & Konukoglu, "Contrastive learning of global and local features for
medical image segmentation with limited annotations", NeurIPS 2020, Sec. 3.1: the
*domain-specific* strategies split every volume into ``S`` partitions of consecutive slices
along the slice axis and build each batch from ``M`` volumes x ``S`` partitions, one image per
partition per volume. Because volumes of one dataset are roughly aligned, images from the same
partition of different volumes show similar anatomy, and the loss treats them as positives
(strategy ``G_D``) or at least not as negatives (``G_D-``). The loss therefore needs to know, for
every image of a batch, which volume and which partition it comes from; this module provides
exactly that, in 2D (one axial slice per item, as in the paper) and in 3D (a patch centred on a
slice of the partition).

Volumes are ``(x, y, z)`` arrays; the slice axis is ``z`` (the last axis).

Indexing. Items are read by global index from a :class:`~medssl.data.seg_dataset.StepSampler`
with ``batch_size = B = M * S``. For an index::

    step_key, b = divmod(index, B)   # one batch of one rank of one step
    m, s = divmod(b, S)              # volume-major within the batch

The ``M`` volumes of the batch are drawn without replacement with
``np.random.default_rng([seed, step_key]).choice(num_cases, M, replace=False)`` and item ``b``
takes volume ``m`` of that draw and partition ``s`` of it. The position inside the partition
(and, in 3D, in-plane) comes from ``np.random.default_rng([seed, step_key, m, s, 1])``: the
trailing stream tag ``1`` keeps item ``(0, 0)`` off the volume-choice stream, since numpy's
``SeedSequence`` pads short entropy with zeros (``[seed, k]`` and ``[seed, k, 0, 0]`` seed the
same generator).

Determinism. Every item is a pure function of ``(seed, index)``: no state is kept between
items, so a run resumed at step ``t`` (the sampler restarts at ``t``) draws exactly the batches
of the uninterrupted run, whatever the number of DataLoader workers, and B consecutive indices
of one step always form one complete ``M x S`` batch.

Default DataLoader collation of the items gives ``image`` ``(B, 1, ...)`` and ``volume``,
``partition``, ``slice`` of shape ``(B,)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medssl.data.dataset import Case
from medssl.data.patches import random_patch_start
from medssl.data.seg_dataset import _CaseVolumes

__all__ = ["PartitionDataset", "partition_bounds"]

_POSITION_STREAM = 1  # tag appended to the per-item seed, see the module docstring


def partition_bounds(depth: int, num_partitions: int) -> list[tuple[int, int]]:
    """``[start, stop)`` slice ranges of ``S`` nearly equal consecutive partitions of ``depth``.

    Like ``np.array_split``: the first ``depth % S`` partitions have one slice more than the
    others, the ranges are consecutive and cover ``0 .. depth`` exactly.

    Raises:
        ValueError: ``S < 1`` or ``depth < S`` (some partition would be empty).
    """
    depth, s = int(depth), int(num_partitions)
    if s < 1:
        raise ValueError(f"number of partitions S must be at least 1, got S={s} (depth {depth})")
    if depth < s:
        raise ValueError(f"cannot split depth {depth} into S={s} partitions: the depth must be at least S")
    q, r = divmod(depth, s)
    bounds, start = [], 0
    for k in range(s):
        stop = start + q + (1 if k < r else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def _centre_start(dim: int, size: int) -> int:
    """Start of a centred box of ``size`` on an axis of length ``dim`` (padded when larger),
    with the same convention as :func:`~medssl.data.patches.random_patch_start`."""
    return (dim - size) // 2 if dim >= size else -((size - dim) // 2)


class PartitionDataset(Dataset):
    """Items of ``M`` volumes x ``S`` partitions batches (see the module docstring).

    Each item is a dict:

    - ``image``: float32, 2D ``(C, H, W)`` with ``(H, W) = size``; 3D ``(C, X, Y, Z) = size`` (C input channels).
    - ``volume``: int64 scalar, index of the case in ``cases``.
    - ``partition``: int64 scalar, the partition ``s``.
    - ``slice``: int64 scalar, the slice ``z``: 2D, the slice shown; 3D, the centre slice drawn
      in partition ``s``. The 3D patch always contains it; its start along ``z`` is
      ``slice - Z // 2``, clamped so that the patch stays inside the volume when the volume has
      at least ``Z`` slices, and so that it contains the whole depth (padded) when it has fewer.

    2D: ``z`` is uniform within the partition, the in-plane slice ``image[:, :, z]`` is
    centre-cropped / padded to ``size``. 3D: the centre ``z`` is uniform within the partition,
    the ``x, y`` start is uniform over the positions inside the volume (centred and padded along
    an axis smaller than the patch). Intensities are normalised per case as in
    :class:`~medssl.data.seg_dataset.PatchDataset`, padding with the normalisation's lower
    clipping bound (0 without one) before normalising.

    Args:
        cases: volumes to sample from (each needs at least ``num_partitions`` slices).
        cache_dir: volume cache folder.
        spatial_dims: 2 (slices) or 3 (patches).
        size: ``(H, W)`` for 2D, ``(X, Y, Z)`` for 3D.
        num_volumes: ``M``, distinct volumes per batch (at most ``len(cases)``).
        num_partitions: ``S``, partitions per volume.
        length: nominal number of items (the sampler decides which global indices are drawn).
        seed: base seed.
        intensity: ``"zscore"`` or ``"ct"``, see :func:`medssl.data.intensity.fit_intensity`.
        ct_window: HU window for ``"ct"``.

    Raises:
        ValueError: bad ``spatial_dims``/``size``/``M``/``S``, no cases, ``M`` larger than the
            number of cases, or a volume that is not 3D or has fewer than ``S`` slices (naming
            its file).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        cache_dir: Path,
        spatial_dims: int,
        size: Sequence[int],
        num_volumes: int,
        num_partitions: int,
        length: int,
        seed: int = 0,
        intensity: str | Sequence[str] = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        plan=None,
    ):
        cases = list(cases)
        if not cases:
            raise ValueError("PartitionDataset needs at least one case")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 (slices) or 3 (patches), got {spatial_dims!r}")
        size_t = tuple(int(v) for v in size)
        if len(size_t) != spatial_dims:
            raise ValueError(f"size {size_t} must have {spatial_dims} values for spatial_dims={spatial_dims}")
        if any(v < 1 for v in size_t):
            raise ValueError(f"size must be positive along every axis, got {size_t}")
        m, s = int(num_volumes), int(num_partitions)
        if m < 1 or s < 1:
            raise ValueError(f"num_volumes (M={m}) and num_partitions (S={s}) must be at least 1")
        if m > len(cases):
            raise ValueError(
                f"num_volumes M={m} exceeds the {len(cases)} cases: each batch needs M distinct volumes"
            )
        self.vols = _CaseVolumes(cases, cache_dir, intensity, ct_window, plan=plan)
        self.spatial_dims = int(spatial_dims)
        self.size = size_t
        self.num_volumes, self.num_partitions = m, s
        self.batch_size = m * s
        self.length = int(length)
        self.seed = int(seed)
        self.bounds: list[list[tuple[int, int]]] = []
        for i, case in enumerate(cases):
            shape = tuple(self.vols.image(i).shape)
            if len(shape) != 3:
                raise ValueError(f"{case.image}: expected a 3D (x, y, z) volume, got shape {shape}")
            if shape[2] < s:
                raise ValueError(
                    f"{case.image}: depth {shape[2]} (slices along z) is smaller than the number of partitions S={s}"
                )
            self.bounds.append(partition_bounds(shape[2], s))

    def __len__(self) -> int:
        return self.length

    def locate(self, index: int) -> tuple[int, int, int]:
        """``(volume, partition, step_key)`` of a global ``index``."""
        step_key, b = divmod(int(index), self.batch_size)
        m, s = divmod(b, self.num_partitions)
        chosen = np.random.default_rng([self.seed, step_key]).choice(len(self.vols.cases), self.num_volumes, replace=False)
        return int(chosen[m]), s, step_key

    def __getitem__(self, index: int) -> dict:
        i, s, step_key = self.locate(index)
        m = (int(index) % self.batch_size) // self.num_partitions
        rng = np.random.default_rng([self.seed, step_key, m, s, _POSITION_STREAM])
        lo, hi = self.bounds[i][s]
        z = int(rng.integers(lo, hi))
        img = self.vols.image(i)
        if self.spatial_dims == 2:
            h, w = self.size
            start = (_centre_start(img.shape[0], h), _centre_start(img.shape[1], w), z)
            patch = self.vols.patch(i, start, (h, w, 1))[..., 0]  # (C, h, w): every channel
        else:
            sx, sy, sz = self.size
            x0, y0 = random_patch_start(img.shape[:2], (sx, sy), rng)
            depth = img.shape[2]
            z0 = min(max(z - sz // 2, min(0, depth - sz)), max(0, depth - sz))
            patch = self.vols.patch(i, (x0, y0, z0), self.size)
        return {
            "image": torch.from_numpy(patch),
            "volume": torch.tensor(i, dtype=torch.int64),
            "partition": torch.tensor(s, dtype=torch.int64),
            "slice": torch.tensor(z, dtype=torch.int64),
        }
