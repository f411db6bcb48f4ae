"""Lightning data module for segmentation datasets in the medssl folder format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from medssl.data.dataset import Case
from medssl.data.seg_dataset import PairedPatchDataset, PatchDataset, StepSampler, VolumeDataset


class SegDataModule(pl.LightningDataModule):
    """Random training patches from ``train_cases``; whole ``val_cases`` for validation (checkpoint
    selection) and whole ``test_cases`` for the one final test.

    With ``unlabeled_cases``, every training item also has ``u_image``: a patch of an unlabeled
    case drawn with its own seed stream (same batch size as the labeled patches).

    The whole run is one epoch of ``max_steps`` optimiser steps (validation every N steps is the
    trainer's business); the sampler shards patch indices over DDP ranks itself (Lightning's
    ``DistributedSampler`` is disabled) and starts at the trainer's step after a resume.
    """

    def __init__(
        self,
        train_cases: Sequence[Case],
        val_cases: Sequence[Case],
        cache_dir: Path,
        patch_size: Sequence[int],
        batch_size: int,
        max_steps: int,
        seed: int = 0,
        fg_fraction: float = 0.5,
        intensity: str | Sequence[str] = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        num_workers: int = 0,
        unlabeled_cases: Sequence[Case] = (),
        test_cases: Sequence[Case] = (),
        resample_channels: bool = False,
        plan=None,
    ):
        super().__init__()
        self.unlabeled_cases, self.test_cases = list(unlabeled_cases), list(test_cases)
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.cache_dir = Path(cache_dir)
        self.patch_size, self.batch_size = tuple(patch_size), batch_size
        self.max_steps, self.seed = max_steps, seed
        self.fg_fraction, self.intensity, self.ct_window = fg_fraction, intensity, tuple(ct_window)
        self.num_workers, self.resample_channels, self.plan = num_workers, resample_channels, plan

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer else 1
        ds = PatchDataset(
            self.train_cases, self.cache_dir, self.patch_size, self.max_steps * self.batch_size * world,
            seed=self.seed, fg_fraction=self.fg_fraction, intensity=self.intensity, ct_window=self.ct_window,
            resample_channels=self.resample_channels, plan=self.plan,
        )
        if self.unlabeled_cases:  # semi-supervised: each item also carries an unlabeled patch
            unl = PatchDataset(
                self.unlabeled_cases, self.cache_dir, self.patch_size, len(ds), seed=self.seed + 7919,
                intensity=self.intensity, ct_window=self.ct_window, labeled=False,
                resample_channels=self.resample_channels, plan=self.plan,
            )
            ds = PairedPatchDataset(ds, unl)
        return _step_loader(self, ds, self.batch_size, self.num_workers)

    def _volumes(self, cases: Sequence[Case]) -> DataLoader:
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        ds = VolumeDataset(list(cases)[rank::world], self.cache_dir, self.intensity, self.ct_window,
                           self.resample_channels, self.plan)
        return DataLoader(ds, batch_size=1, shuffle=False, num_workers=0, generator=_own_generator())

    def val_dataloader(self) -> DataLoader:
        return self._volumes(self.val_cases)

    def test_dataloader(self) -> DataLoader:
        return self._volumes(self.test_cases)


class PartitionDataModule(pl.LightningDataModule):
    """Batches of ``num_volumes x num_partitions`` unlabeled images, one per partition per volume
    (:class:`~medssl.data.partitions.PartitionDataset`), for the contrastive pretraining stages.

    Like :class:`SegDataModule`, the run is one epoch of ``max_steps`` steps whose items are a
    function of (seed, step), so a resumed run continues with the batches it would have drawn.
    There is no validation loader.

    Args:
        max_steps: optimiser steps of the run.
        num_workers: DataLoader worker processes.
        **dataset_kwargs: :class:`~medssl.data.partitions.PartitionDataset`'s arguments (cases,
            cache_dir, spatial_dims, size, num_volumes, num_partitions, seed, intensity,
            ct_window) except ``length``, which follows from the steps.
    """

    def __init__(self, max_steps: int, num_workers: int = 0, **dataset_kwargs):
        super().__init__()
        self.max_steps, self.num_workers, self.dataset_kwargs = max_steps, num_workers, dataset_kwargs

    @property
    def batch_size(self) -> int:
        return self.dataset_kwargs["num_volumes"] * self.dataset_kwargs["num_partitions"]

    def train_dataloader(self) -> DataLoader:
        from medssl.data.partitions import PartitionDataset

        world = self.trainer.world_size if self.trainer else 1
        ds = PartitionDataset(length=self.max_steps * self.batch_size * world, **self.dataset_kwargs)
        return _step_loader(self, ds, self.batch_size, self.num_workers)


def _step_loader(dm: pl.LightningDataModule, ds, batch_size: int, num_workers: int) -> DataLoader:
    """A loader whose :class:`StepSampler` shards over DDP ranks and restarts at the trainer's step."""
    trainer = dm.trainer
    world = trainer.world_size if trainer else 1
    rank = trainer.global_rank if trainer else 0
    sampler = StepSampler(dm.max_steps, batch_size, rank=rank, world_size=world,
                          start_step=lambda: trainer.global_step if trainer else 0)
    return DataLoader(ds, batch_size=batch_size, sampler=sampler, drop_last=True, num_workers=num_workers,
                      persistent_workers=num_workers > 0, generator=_own_generator())


def _own_generator() -> torch.Generator:
    """A generator of the loader's own. Without one, every new iterator of a DataLoader draws its
    base seed from the GLOBAL torch RNG, so a run resumed from a checkpoint (which restores that
    RNG and then makes a new train iterator) would draw other dropout / MC-dropout masks than the
    uninterrupted run. Items never use this seed (patches are a function of seed and index)."""
    return torch.Generator().manual_seed(0)
