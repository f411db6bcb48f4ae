"""Global and local contrastive pretraining of a U-Net (Chaitanya et al., NeurIPS 2020).

"Contrastive learning of global and local features for medical image segmentation with limited
annotations" (arXiv 2006.10511; official TensorFlow code krishnabits001/domain_specific_cl).
Three stages, each one ``medssl train`` run whose config names the previous run's checkpoint
(``init_from``):

1. ``contrastive.stage: global``: encoder ``e`` + projection head ``g1`` trained with the global
   loss (:class:`~medssl.losses.contrastive.GlobalContrastiveLoss`, strategies G^R, G^D-, G^D) on
   batches of ``num_volumes x num_partitions`` images, one per partition per volume
   (:class:`~medssl.data.partitions.PartitionDataset`), two augmented copies each.
2. ``contrastive.stage: local``: encoder frozen, the first ``decoder_blocks`` decoder stages +
   a 1x1-conv head ``g2`` trained with the local loss
   (:class:`~medssl.losses.contrastive.LocalContrastiveLoss`, L^R or L^D) on pixel-aligned
   copies (intensity augmentation only).
3. fine-tuning: ``method: supervised`` (or ``umct``) with ``model.name: multiview_asym_unet``
   and ``init_from`` the stage-2 (or stage-1) checkpoint: only the parts the stage trained are
   loaded (``trained_parts`` in the checkpoint). A 2D-pretrained network initialises the 3D
   asymmetric network's in-plane kernels (:func:`~medssl.nets.multiview_unet.init_inplane_from_2d`).

The network is :class:`~medssl.nets.multiview_unet.MultiViewAsymUNet` with one view: in 2D the
plain U-Net of the paper's setting (3x3 convs), in 3D the asymmetric 3x3x1 + 1x1x3 network.
``g2`` is Conv1x1-BN-ReLU-Conv1x1 as in the official code. The official code's choices and
medssl's are both available (``configs/hippocampus/contrastive_paper_*.yaml`` select the
official ones):

* ``global_head``: ``"flatten"`` (official ``encoder_pretrain_net``: the bottleneck flattened,
  ``dense(1024, relu, no bias) -> dense(128, no bias)``; needs a fixed input size) or ``"pool"``
  (medssl: global average pooling first, MLP with biases; any input size);
* ``region_proj_dim``: the official per-region linear layer ``seg_pred`` (``wgt_en=1``:
  flattened 3x3 region -> 128, no bias, shared by all regions) or none (medssl);
* ``local_negatives``: ``"neighbours"`` (official: 5 nearby regions) or ``"all"`` (medssl);
* ``region_grid``, ``augment``, ``keep_original_view``: see
  :func:`~medssl.losses.contrastive.local_region_starts` and
  :func:`~medssl.transforms.contrastive_augment.contrastive_views`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from medssl.methods.base import MedsslModule


class LocalHead(nn.Module):
    """``g2``: two 1x1 convolutions (Conv-BN-ReLU-Conv) on decoder features, shape-preserving."""

    def __init__(self, channels: int, spatial_dims: int):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        bn = nn.BatchNorm3d if spatial_dims == 3 else nn.BatchNorm2d
        self.net = nn.Sequential(conv(channels, channels, 1, bias=False), bn(channels), nn.ReLU(inplace=True),
                                 conv(channels, channels, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ContrastivePretraining(MedsslModule):
    """One pretraining stage (global or local) of Chaitanya et al.

    Declares ``is_pretraining`` (no labels, no validation) and ``data_kind = "partitions"``:
    batches of ``num_volumes x num_partitions`` images, one per partition per volume.

    Args:
        net: a one-view :class:`~medssl.nets.multiview_unet.MultiViewAsymUNet` (2D or 3D).
        stage: ``"global"`` (encoder) or ``"local"`` (decoder, encoder frozen).
        global_loss: ``"GR"``, ``"GD-"`` or ``"GD"``; local_loss: ``"LR"`` or ``"LD"``.
        temperature: of both losses (paper: 0.1).
        decoder_blocks: decoder stages trained in the local stage.
        num_regions, region_size: local regions per feature map and their side.
        proj_dim, proj_hidden: ``g1`` output and hidden sizes (paper: 128, 1024).
        augment_strength: scales the augmentations (0: identical copies).
        augment: ``"medssl"`` or ``"official"`` augmentation
            (:func:`~medssl.transforms.contrastive_augment.contrastive_views`).
        keep_original_view: global stage: copy 0 of every image is left unaugmented (official G^D).
        global_head: ``"pool"`` or ``"flatten"`` (see the module docstring).
        input_size: spatial input size; required by ``global_head="flatten"`` (the flattened
            bottleneck has ``channels[-1] * prod(input_size / 2 ** (levels - 1))`` values).
        local_negatives: ``"all"`` or ``"neighbours"``; region_grid: ``"fit"`` or ``"official"``.
        region_proj_dim: output size of the per-region linear projection (None: no projection).
        num_views: augmented copies per image (2).
        num_volumes, num_partitions: the batch layout the global loss relies on (read by the
            engine to build the partition batches).
        seed: augmentations of step t are drawn from a generator seeded with (seed, t, rank), so a
            resumed run augments exactly as the uninterrupted one (like its batches).
        **kwargs: optimiser and checkpoint settings, see :class:`~medssl.methods.base.MedsslModule`.

    Batches: ``image (B, 1, *spatial)``, ``partition (B,)`` (and ``volume (B,)``), from
    :class:`~medssl.data.partitions.PartitionDataset`.
    """

    def __init__(
        self,
        net: nn.Module,
        stage: str = "global",
        global_loss: str = "GD",
        local_loss: str = "LD",
        temperature: float = 0.1,
        decoder_blocks: int = 2,
        num_regions: int = 13,
        region_size: int = 3,
        proj_dim: int = 128,
        proj_hidden: int = 1024,
        augment_strength: float = 1.0,
        num_views: int = 2,
        seed: int = 0,
        num_volumes: int = 4,
        num_partitions: int = 4,
        augment: str = "medssl",
        keep_original_view: bool = False,
        global_head: str = "pool",
        input_size: tuple[int, ...] | None = None,
        local_negatives: str = "all",
        region_grid: str = "fit",
        region_proj_dim: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_volumes, self.num_partitions = int(num_volumes), int(num_partitions)
        from medssl.losses.contrastive import GlobalContrastiveLoss, LocalContrastiveLoss
        from medssl.nets.heads import MLPHead

        if stage not in ("global", "local"):
            raise ValueError(f"stage must be 'global' or 'local', got {stage!r}")
        if getattr(net, "num_views", 1) != 1:
            raise ValueError("contrastive pretraining needs a one-view network")
        self.net, self.stage = net, stage
        self.num_views, self.augment_strength, self.seed = num_views, augment_strength, int(seed)
        self.decoder_blocks = int(decoder_blocks)
        channels = net.channels
        if global_head not in ("pool", "flatten"):
            raise ValueError(f"global_head must be 'pool' or 'flatten', got {global_head!r}")
        self.augment, self.keep_original_view, self.global_head = augment, bool(keep_original_view), global_head
        if stage == "global":
            if global_head == "flatten":
                # official: flatten(bottleneck) -> dense 1024 (ReLU, no bias) -> dense 128 (no bias)
                in_dim = channels[-1] * self._bottleneck_numel(net, input_size)
                self.g1 = MLPHead(in_dim, proj_hidden, proj_dim, num_layers=2, bn=False, bias=False)
            else:  # medssl: global average pooling, then the MLP (with biases): any input size
                self.g1 = MLPHead(channels[-1], proj_hidden, proj_dim, num_layers=2, bn=False)
            self.loss = GlobalContrastiveLoss(temperature, global_loss)
            trained = ["encoder"]
        else:
            if not 1 <= self.decoder_blocks <= len(net.decoder):
                raise ValueError(f"decoder_blocks must be in 1..{len(net.decoder)}, got {decoder_blocks}")
            c_local = channels[len(channels) - 1 - self.decoder_blocks]
            self.g2 = LocalHead(c_local, net.spatial_dims)
            # official wgt_en=1: one linear map of every flattened region (shared by all regions), no bias
            self.region_proj = (None if region_proj_dim is None else
                                nn.Linear(c_local * region_size ** net.spatial_dims, int(region_proj_dim), bias=False))
            self.loss = LocalContrastiveLoss(temperature, local_loss, num_regions, region_size,
                                             negatives=local_negatives, grid=region_grid)
            for p in net.encoder.parameters():  # the paper keeps the pretrained encoder fixed
                p.requires_grad_(False)
            trained = ["encoder"] + [f"decoder.{i}" for i in range(self.decoder_blocks)]
        self.trained_parts = trained

    is_pretraining = True
    data_kind = "partitions"

    @staticmethod
    def _bottleneck_numel(net: nn.Module, input_size) -> int:
        """Voxels of the bottleneck for ``input_size`` (the flattened head's fixed input)."""
        from math import prod

        if input_size is None or len(input_size) != net.spatial_dims:
            raise ValueError(f"global_head='flatten' needs the {net.spatial_dims}D input size, got {input_size}")
        if any(int(s) % net.divisor for s in input_size):
            raise ValueError(f"input size {tuple(input_size)} must be divisible by {net.divisor} for the flattened head")
        return prod(int(s) // net.divisor for s in input_size)

    @classmethod
    def from_config(cls, cfg, spec) -> ContrastivePretraining:
        from medssl.errors import ConfigError
        from medssl.nets import build_network

        c = cfg.contrastive
        if cfg.model.name != "multiview_asym_unet":
            raise ConfigError("contrastive pretraining needs model.name: multiview_asym_unet (its encoder/decoder "
                              "initialise the supervised and UMCT networks)")
        if c.stage == "local" and cfg.init_from is None:
            raise ConfigError("contrastive.stage=local trains the decoder on a pretrained encoder: set init_from to the "
                              "global stage's checkpoint (runs/<global>/checkpoints/last.ckpt)")
        net = build_network("multiview_asym_unet", num_views=1, in_channels=spec.num_channels, out_channels=spec.num_classes,
                            channels=cfg.model.channels, dropout=cfg.model.dropout, spatial_dims=c.spatial_dims,
                            norm=cfg.model.norm)
        return cls(
            net=net, stage=c.stage, global_loss=c.global_loss, local_loss=c.local_loss, temperature=c.temperature,
            decoder_blocks=c.decoder_blocks,
            num_regions=c.num_regions or (13 if c.spatial_dims == 2 else 35), region_size=c.region_size,
            proj_dim=c.proj_dim, proj_hidden=c.proj_hidden, augment_strength=c.augment_strength, seed=cfg.trainer.seed,
            num_volumes=c.num_volumes, num_partitions=c.num_partitions, augment=c.augment,
            keep_original_view=c.keep_original_view, global_head=c.global_head,
            input_size=tuple(cfg.data.patch_size[: c.spatial_dims]), local_negatives=c.local_negatives,
            region_grid=c.region_grid, region_proj_dim=c.region_proj_dim, **cls.optim_kwargs(cfg, spec),
        )

    def summary(self) -> str:
        """One line for the end of the run."""
        return f"{self.stage} contrastive stage; trained {', '.join(self.trained_parts)}"

    def checkpoint_state(self) -> dict:
        # read by ``init_from`` so that the next stage loads exactly what this one produced
        return {**self.extra_state, "trained_parts": list(self.trained_parts), "stage": self.stage}

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        """Projections ``(V, N, D)`` (global) or head feature maps ``(V, N, C, *s)`` (local)."""
        v, n = views.shape[:2]
        flat = views.reshape(v * n, *views.shape[2:])
        if self.stage == "global":
            h = self.net.encode(flat)[-1]
            out = self.g1(h.flatten(1) if self.global_head == "flatten" else h.mean(dim=tuple(range(2, h.ndim))))
        else:
            with torch.no_grad():
                feats = self.net.encode(flat)
            out = self.g2(self.net.decode(feats, self.decoder_blocks))
        return out.reshape(v, n, *out.shape[1:])

    def _project(self, regions: torch.Tensor) -> torch.Tensor:
        """The per-region projection ``(..., C r^d) -> (..., region_proj_dim)`` (identity without one)."""
        return regions if self.region_proj is None else self.region_proj(regions)

    def training_step(self, batch: dict, batch_idx: int):
        from medssl.transforms.contrastive_augment import contrastive_views

        x = batch["image"]
        gen = torch.Generator(device=x.device)
        gen.manual_seed((self.seed * 1_000_003 + int(self.global_step)) * 1009 + int(self.global_rank))
        glob = self.stage == "global"
        views = contrastive_views(x, self.num_views, spatial=glob, strength=self.augment_strength, generator=gen,
                                  style=self.augment, keep_original=glob and self.keep_original_view)
        if glob:
            loss = self.loss(self.embed(views).float(), batch["partition"])
        else:
            loss = self.loss(self.embed(views).float(), batch["partition"], projection=self._project)
        self.log("train/loss", loss, prog_bar=True, batch_size=x.shape[0])
        return loss
