"""Lightning data module for segmentation datasets in the medssl folder format."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pytorch_lightning as pl
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
        intensity: str = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        num_workers: int = 0,
        unlabeled_cases: Sequence[Case] = (),
        test_cases: Sequence[Case] = (),
    ):
        super().__init__()
        self.unlabeled_cases, self.test_cases = list(unlabeled_cases), list(test_cases)
        self.train_cases, self.val_cases = list(train_cases), list(val_cases)
        self.cache_dir = Path(cache_dir)
        self.patch_size, self.batch_size = tuple(patch_size), batch_size
        self.max_steps, self.seed = max_steps, seed
        self.fg_fraction, self.intensity, self.ct_window = fg_fraction, intensity, tuple(ct_window)
        self.num_workers = num_workers

    def _loader_kwargs(self) -> dict:
        return dict(num_workers=self.num_workers, persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        ds = PatchDataset(
            self.train_cases, self.cache_dir, self.patch_size, self.max_steps * self.batch_size * world,
            seed=self.seed, fg_fraction=self.fg_fraction, intensity=self.intensity, ct_window=self.ct_window,
        )
        if self.unlabeled_cases:  # semi-supervised: each item also carries an unlabeled patch
            unl = PatchDataset(
                self.unlabeled_cases, self.cache_dir, self.patch_size, len(ds), seed=self.seed + 7919,
                intensity=self.intensity, ct_window=self.ct_window, labeled=False,
            )
            ds = PairedPatchDataset(ds, unl)
        trainer = self.trainer
        sampler = StepSampler(self.max_steps, self.batch_size, rank=rank, world_size=world,
                              start_step=lambda: trainer.global_step if trainer else 0)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=True, **self._loader_kwargs())

    def _volumes(self, cases: Sequence[Case]) -> DataLoader:
        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        ds = VolumeDataset(list(cases)[rank::world], self.cache_dir, self.intensity, self.ct_window)
        return DataLoader(ds, batch_size=1, shuffle=False, num_workers=0)

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
    """

    def __init__(
        self,
        cases: Sequence[Case],
        cache_dir: Path,
        spatial_dims: int,
        size: Sequence[int],
        num_volumes: int,
        num_partitions: int,
        max_steps: int,
        seed: int = 0,
        intensity: str = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        num_workers: int = 0,
    ):
        super().__init__()
        self.cases, self.cache_dir = list(cases), Path(cache_dir)
        self.spatial_dims, self.size = spatial_dims, tuple(size)
        self.num_volumes, self.num_partitions = num_volumes, num_partitions
        self.max_steps, self.seed = max_steps, seed
        self.intensity, self.ct_window, self.num_workers = intensity, tuple(ct_window), num_workers

    @property
    def batch_size(self) -> int:
        return self.num_volumes * self.num_partitions

    def train_dataloader(self) -> DataLoader:
        from medssl.data.partitions import PartitionDataset

        world = self.trainer.world_size if self.trainer else 1
        rank = self.trainer.global_rank if self.trainer else 0
        ds = PartitionDataset(
            self.cases, self.cache_dir, self.spatial_dims, self.size, self.num_volumes, self.num_partitions,
            length=self.max_steps * self.batch_size * world, seed=self.seed, intensity=self.intensity,
            ct_window=self.ct_window,
        )
        trainer = self.trainer
        sampler = StepSampler(self.max_steps, self.batch_size, rank=rank, world_size=world,
                              start_step=lambda: trainer.global_step if trainer else 0)
        return DataLoader(ds, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0)
