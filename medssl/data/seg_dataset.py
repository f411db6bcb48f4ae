"""Torch datasets for segmentation: random training patches and whole validation volumes.

Training patches are a pure function of ``(seed, index)``, and the sampler derives indices from
the optimiser step (and DDP rank), so a run resumed from a checkpoint draws exactly the patches
the uninterrupted run would have drawn, whatever the number of DataLoader workers.
Volumes are read through the memory-mapped :class:`~medssl.data.cache.VolumeCache`, never by
decoding the source files per sample.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from medssl.data.cache import VolumeCache
from medssl.data.dataset import Case
from medssl.data.intensity import IntensityNorm, fit_intensity
from medssl.data.patches import crop_patch, sample_patch_start


class _CaseVolumes:
    """Per-case arrays (one per channel, on channel 0's grid), intensity statistics (one per
    channel) and foreground locations, computed once per process.

    Args:
        cases: the cases (``case.images``: channel 0 first).
        cache_dir: volume cache folder.
        intensity: one mode for every channel or a list with one per channel
            (:func:`medssl.data.intensity.channel_modes` resolves ``"auto"`` beforehand).
        ct_window: HU window of ``"ct"`` channels.
        resample_channels: resample a channel on another grid than channel 0 (else refuse it).
    """

    def __init__(self, cases: Sequence[Case], cache_dir: Path, intensity: str | Sequence[str], ct_window: tuple[float, float],
                 resample_channels: bool = False, plan=None):
        self.cases = list(cases)
        self.cache_dir = Path(cache_dir)
        self.intensity = intensity if isinstance(intensity, str) else tuple(intensity)
        self.ct_window = tuple(ct_window)
        self.resample_channels = bool(resample_channels)
        self.plan = plan  # a DatasetPlan: volumes on its grid, its CT windows (medssl.data.plan)
        self._cache: VolumeCache | None = None
        self._label_cache: VolumeCache | None = None
        self._norms: dict[int, list[IntensityNorm]] = {}
        self._fg: dict[int, dict] = {}
        self._arrays: dict[tuple[int, str], object] = {}

    @property
    def cache(self) -> VolumeCache:
        """The image cache (planned images in a folder of their own when there is a plan)."""
        if self._cache is None:  # created lazily so the object pickles cheaply into workers
            self._cache = self._make_cache(order=1)
        return self._cache

    @property
    def label_cache(self) -> VolumeCache:
        if self._label_cache is None:
            self._label_cache = self._make_cache(order=0)
        return self._label_cache

    def _make_cache(self, order: int) -> VolumeCache:
        if self.plan is None:
            return VolumeCache(self.cache_dir)
        kind = "img" if order else "lab"
        return VolumeCache(self.cache_dir.with_name(f"{self.cache_dir.name}.plan-{self.plan.key}-{kind}"),
                           transform=self.plan.grid(order))

    def native_label(self, i: int):
        """The label map on the scan's own grid (for metrics in native geometry)."""
        return VolumeCache(self.cache_dir).get(self.cases[i].label)

    def num_channels(self, i: int) -> int:
        return len(self.cases[i].images)

    def image(self, i: int) -> np.ndarray:
        """Channel 0 (the reference grid)."""
        return self.images(i)[0]

    def images(self, i: int) -> list[np.ndarray]:
        """Every channel's array, on channel 0's grid (memory maps unless resampled)."""
        key = (i, "image")
        if key not in self._arrays:
            # the memory maps are opened once per case and process: VolumeCache.get checks the
            # source file and maps the array each call, which costs more than cropping a patch
            case = self.cases[i]
            vols = [self.cache.get(p) for p in case.images]
            if len(vols) == 1:
                self._arrays[key] = [vols[0].array]
            else:
                from medssl.data.channels import align_channels

                self._arrays[key] = align_channels([v.volume() for v in vols], case=case.name,
                                                   resample=self.resample_channels, paths=case.images)
        return self._arrays[key]

    def label(self, i: int) -> np.ndarray:
        key = (i, "label")
        if key not in self._arrays:
            self._arrays[key] = self.label_cache.get(self.cases[i].label).array
        return self._arrays[key]

    def norms(self, i: int) -> list[IntensityNorm]:
        """One normalisation per channel."""
        if i not in self._norms:
            arrays = self.images(i)
            modes = [self.intensity] * len(arrays) if isinstance(self.intensity, str) else list(self.intensity)
            if len(modes) != len(arrays):
                raise ValueError(f"{len(modes)} intensity modes for {len(arrays)} channels of case {self.cases[i].name!r}")
            fixed = [self.plan.norm_for(k) if self.plan is not None else None for k in range(len(arrays))]
            self._norms[i] = [f or fit_intensity(a, m, self.ct_window) for a, m, f in zip(arrays, modes, fixed)]
        return self._norms[i]

    def norm(self, i: int) -> IntensityNorm:
        """Channel 0's normalisation."""
        return self.norms(i)[0]

    def patch(self, i: int, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
        """The normalised patch ``(C, *size)`` float32 of every channel (padding: each channel's
        lower clip value, i.e. its background after normalisation)."""
        out = []
        for arr, norm in zip(self.images(i), self.norms(i)):
            pad = norm.lo if np.isfinite(norm.lo) else 0.0
            out.append(norm(crop_patch(arr, start, size, pad_value=pad)))
        return np.stack(out)

    def volume(self, i: int) -> np.ndarray:
        """The whole normalised volume ``(C, X, Y, Z)`` float32."""
        return np.stack([norm(arr) for arr, norm in zip(self.images(i), self.norms(i))])

    def fg_locations(self, i: int) -> dict:
        if i not in self._fg:
            self._fg[i] = self.label_cache.foreground_locations(self.cases[i].label)
        return self._fg[i]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = state["_label_cache"] = None
        state["_arrays"] = {}  # memory maps are reopened in the worker, never pickled as data
        return state


class PatchDataset(Dataset):
    """Random patches for training.

    Each item is a dict with ``image`` ``(C, *patch_size)`` float32 (C input channels) and, when
    the cases carry labels, ``label`` ``(1, *patch_size)`` int64.

    Args:
        cases: cases to sample from (uniformly).
        cache_dir: volume cache folder.
        patch_size: patch size ``(X, Y, Z)``.
        length: nominal number of items (the sampler decides which global indices are drawn).
        seed: base seed; item ``index`` uses ``np.random.default_rng([seed, index])``.
        fg_fraction: share of patches centred on a random foreground voxel (labeled cases only).
        intensity: ``"zscore"`` or ``"ct"`` for every channel, or one per channel, see
            :func:`medssl.data.intensity.fit_intensity`.
        ct_window: HU window for ``"ct"``.
        labeled: whether to return labels (False for unlabeled pools).
        resample_channels: resample channels on another grid onto channel 0's (else refuse them).
    """

    def __init__(
        self,
        cases: Sequence[Case],
        cache_dir: Path,
        patch_size: Sequence[int],
        length: int,
        seed: int = 0,
        fg_fraction: float = 0.5,
        intensity: str = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        labeled: bool = True,
        resample_channels: bool = False,
        plan=None,
    ):
        if not cases:
            raise ValueError("PatchDataset needs at least one case")
        self.vols = _CaseVolumes(cases, cache_dir, intensity, ct_window, resample_channels, plan)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.length = int(length)
        self.seed = int(seed)
        self.fg_fraction = float(fg_fraction)
        self.labeled = labeled

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        rng = np.random.default_rng([self.seed, int(index)])
        i = int(rng.integers(len(self.vols.cases)))
        img = self.vols.image(i)
        fg = self.vols.fg_locations(i) if self.labeled else None
        start = sample_patch_start(img.shape, self.patch_size, rng, fg_locations=fg, fg_fraction=self.fg_fraction if fg else 0.0)
        item = {"image": torch.from_numpy(self.vols.patch(i, start, self.patch_size))}
        if self.labeled:
            lab = crop_patch(self.vols.label(i), start, self.patch_size, pad_value=0)
            item["label"] = torch.from_numpy(lab.astype(np.int64))[None]
        return item


class PairedPatchDataset(Dataset):
    """A labeled and an unlabeled :class:`PatchDataset` read at the same index: items are the
    labeled item plus ``u_image`` (the unlabeled patch)."""

    def __init__(self, labeled: PatchDataset, unlabeled: PatchDataset):
        self.labeled, self.unlabeled = labeled, unlabeled

    def __len__(self) -> int:
        return len(self.labeled)

    def __getitem__(self, index: int) -> dict:
        return {**self.labeled[index], "u_image": self.unlabeled[index]["image"]}


class VolumeDataset(Dataset):
    """Whole normalised volumes (for sliding-window validation and inference).

    Items: ``image`` ``(C, X, Y, Z)`` float32, ``label`` ``(1, X, Y, Z)`` int64 when present,
    ``name`` the case name, ``spacing`` ``(3,)`` in mm (for HD95). With a plan, ``image`` is on the
    planned grid while ``label`` and ``spacing`` are the scan's own, and ``grid_map`` / ``grid``
    (JSON strings) say how to map scores back (:func:`medssl.data.resample.from_grid`).
    """

    def __init__(self, cases: Sequence[Case], cache_dir: Path, intensity: str | Sequence[str] = "zscore",
                 ct_window=(-1000.0, 1000.0), resample_channels: bool = False, plan=None):
        self.vols = _CaseVolumes(cases, cache_dir, intensity, ct_window, resample_channels, plan)

    def __len__(self) -> int:
        return len(self.vols.cases)

    def __getitem__(self, i: int) -> dict:
        case = self.vols.cases[i]
        cached = self.vols.cache.get(case.image)
        item = {
            "image": torch.from_numpy(self.vols.volume(i)),
            "name": case.name,
            "spacing": torch.tensor(cached.spacing, dtype=torch.float64),
        }
        if case.label is not None and self.vols.plan is not None:
            # metrics in the scan's own geometry: the native label, and how to map scores back to it
            import json

            native = self.vols.native_label(i)
            item["label"] = torch.from_numpy(np.asarray(native.array).astype(np.int64))[None]
            item["spacing"] = torch.tensor(native.spacing, dtype=torch.float64)
            item["grid_map"] = json.dumps(cached.meta["grid_map"])
            item["grid"] = json.dumps(cached.geometry)
        elif case.label is not None:
            item["label"] = torch.from_numpy(np.asarray(self.vols.label(i)).astype(np.int64))[None]
        return item


class StepSampler(Sampler[int]):
    """Patch indices for optimiser steps ``start .. total_steps - 1`` of one rank.

    Step ``t`` of rank ``r`` uses global indices ``(t * world_size + r) * batch_size + b``.
    ``start_step`` is asked when iteration begins, i.e. after a checkpoint is restored, so a
    resumed run continues with exactly the patches the uninterrupted run would have drawn
    (Lightning does not fast-forward plain DataLoaders on a mid-epoch restart).

    Args:
        total_steps: optimiser steps of the whole run (the run is one long epoch).
        batch_size: patches per step and rank.
        rank, world_size: DDP position.
        start_step: callable returning the first step to draw (the trainer's global step).
    """

    def __init__(self, total_steps: int, batch_size: int, rank: int = 0, world_size: int = 1, start_step=lambda: 0):
        self.total_steps, self.batch_size = int(total_steps), int(batch_size)
        self.rank, self.world_size = int(rank), int(world_size)
        self.start_step = start_step

    def __iter__(self):
        for t in range(int(self.start_step()), self.total_steps):
            base = (t * self.world_size + self.rank) * self.batch_size
            yield from range(base, base + self.batch_size)

    def __len__(self) -> int:
        return self.total_steps * self.batch_size
