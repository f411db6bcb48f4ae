"""One predictor for every consumer of a trained segmentation model.

In the manner of nnU-Net's ``nnUNetPredictor``: a :class:`Predictor` is built from a model (or
from a checkpoint, :func:`medssl.inference.load.load_predictor`) and does preprocessing (the run's
intensity normalisation), Gaussian-weighted sliding-window inference (MONAI's
``sliding_window_inference``), the model's own ensembling (UMCT's views, MC-dropout passes: the
method's :meth:`~medssl.methods.base.SegmentationMethod.predict_window`) and the mapping back to
the input's geometry. This module imports no method and no engine: a method's validation
builds a Predictor around itself (:meth:`~medssl.methods.base.SegmentationMethod.predictor`). Training validation and the final test (:meth:`Predictor.scores`),
pseudo-labelling (:meth:`Predictor.predict_volume`) and batch inference all call it, so they
cannot drift apart.

Geometry: with a preprocessing plan (:mod:`medssl.data.plan`) the volume is brought onto the
plan's grid (canonical orientation, target spacing), predicted there, and the class
probabilities are mapped back to the scan's own grid (:func:`medssl.data.resample.from_grid`)
before the argmax, one class at a time; without a plan the network runs on the input grid and the
mapping back is the identity. Either way the outputs carry the input's exact shape, spacing,
origin and direction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch



@dataclass
class Prediction:
    """What a predictor returns for one volume, on the input's voxel grid.

    Attributes:
        label: ``(X, Y, Z)`` uint8 argmax of the fused class probabilities.
        view_labels: ``(N, X, Y, Z)`` uint8 argmax of each view's probabilities (``N = 0`` for a
            single-view model).
        uncertainty: ``(X, Y, Z)`` float32 entropy of the fused distribution / log C, in [0, 1].
        confidence: ``1 - mean(uncertainty)`` over the voxels the fused label or any view calls
            foreground (all voxels when none does).
        volume: the input volume (its geometry is the output's).
        probabilities: ``(C, X, Y, Z)`` float32 fused class probabilities, kept only when
            :meth:`Predictor.predict_volume` is asked for them (``None`` otherwise: C float volumes
            of a large CT are gigabytes).
    """

    label: np.ndarray
    view_labels: np.ndarray
    uncertainty: np.ndarray
    confidence: float
    volume: object
    probabilities: np.ndarray | None = None

    def as_volume(self, array: np.ndarray):
        """``array`` in the input's geometry (a :class:`~medssl.data.volume.Volume`)."""
        return self.volume.with_array(array)


class Predictor:
    """Sliding-window prediction with a medssl segmentation model.

    Args:
        model: a :class:`~medssl.methods.base.SegmentationMethod` (its ``forward`` gives scores
            whose argmax is the label; its ``predict_window`` gives probabilities and, for
            multi-view / MC models, view probabilities and uncertainty).
        roi_size: sliding-window size (the training patch size).
        sw_batch_size: windows per forward pass.
        overlap: window overlap.
        intensity, ct_window: the run's intensity normalisation (:func:`medssl.data.intensity.fit_intensity`).
        precision: ``"bf16"`` runs the network under autocast in :meth:`predict_volume`.
        mc_samples: MC-dropout passes per window in :meth:`predict_volume`.
        device: where the network runs.
    """

    #: set by :func:`medssl.inference.load.load_predictor`: the run's config and dataset spec
    config = None
    spec = None

    def __init__(
        self,
        model,
        roi_size: Sequence[int],
        sw_batch_size: int = 2,
        overlap: float = 0.25,
        intensity: str | Sequence[str] = "zscore",
        ct_window: tuple[float, float] = (-1000.0, 1000.0),
        precision: str = "32",
        mc_samples: int = 1,
        device: str | torch.device = "cpu",
        resample_channels: bool = False,
        plan=None,
        max_stitch_bytes: int = 2**30,
    ):
        self.model = model
        self.roi_size = tuple(int(r) for r in roi_size)
        self.sw_batch_size, self.overlap = int(sw_batch_size), float(overlap)
        self.intensity = intensity if isinstance(intensity, str) else tuple(intensity)
        self.ct_window, self.resample_channels = tuple(ct_window), bool(resample_channels)
        self.plan = plan  # a DatasetPlan: predict on its grid, outputs mapped back to each scan's own
        self.max_stitch_bytes = int(max_stitch_bytes)
        self.precision, self.mc_samples = precision, int(mc_samples)
        self.device = torch.device(device)

    @property
    def class_names(self) -> list[str]:
        return list(self.model.class_names)

    @property
    def num_views(self) -> int:
        """Views whose own predictions :meth:`window_outputs` returns (0 for a single network)."""
        n = getattr(self.model, "num_views", 1)
        return n if n > 1 else 0

    # ------------------------------------------------------------------ tensors
    def scores(self, image: torch.Tensor) -> torch.Tensor:
        """Scores ``(B, K, *spatial)`` of whole volumes ``(B, C, *spatial)`` (argmax = label):
        the Gaussian-weighted sliding window over the model's forward, as validation uses it.
        Precision is the caller's (inside Lightning, the trainer's autocast)."""
        from monai.inferers import sliding_window_inference

        return sliding_window_inference(
            image, self.roi_size, self.sw_batch_size, self.model, overlap=self.overlap, mode="gaussian"
        )

    @torch.no_grad()
    def window_outputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The model's :meth:`predict_window` outputs stitched over whole volumes.

        Args:
            image: ``(B, C, *spatial)`` normalised volumes (C input channels).

        Returns:
            ``{"probs": (B, C, ...), "uncertainty": (B, 1, ...)}`` plus ``"views"``
            ``(B, N, C, ...)`` for multi-view models; ``uncertainty`` is the normalised entropy
            of the stitched window-level fused distribution.
        """
        from monai.inferers import sliding_window_inference

        from medssl.losses.umct import normalised_entropy

        c = len(self.class_names)
        n = self.num_views

        def window(x: torch.Tensor) -> torch.Tensor:
            out = self.model.predict_window(x, self.mc_samples, self.precision)
            probs = out["probs"]
            parts = [probs] + ([out["views"]] if n else []) + [normalised_entropy(probs)]
            return torch.cat(parts, 1)  # one tensor: every channel stitched with the same weights

        y = sliding_window_inference(image.to(self.device), self.roi_size, self.sw_batch_size, window,
                                     overlap=self.overlap, mode="gaussian")
        result = {"probs": y[:, :c], "uncertainty": y[:, -1:]}
        if n:
            result["views"] = y[:, c: c + n * c].reshape(y.shape[0], n, c, *y.shape[2:])
        return result

    # ------------------------------------------------------------------ volumes
    def normalise(self, array: np.ndarray, channel: int = 0) -> np.ndarray:
        """The run's intensity normalisation of one channel's volume."""
        from medssl.data.intensity import fit_intensity

        fixed = self.plan.norm_for(channel) if self.plan is not None else None
        if fixed is not None:
            return fixed(np.asarray(array))
        mode = self.intensity if isinstance(self.intensity, str) else self.intensity[channel]
        return fit_intensity(array, mode, self.ct_window)(np.asarray(array))

    def channels_input(self, volume, name: str = "") -> torch.Tensor:
        """The normalised network input ``(1, C, X, Y, Z)`` of one case.

        Args:
            volume: a :class:`~medssl.data.volume.Volume`, or a sequence of them (one per input
                channel, channel 0 first: the reference grid).
            name: the case, for messages.

        Raises:
            DataError: a channel count the model was not trained with, or a channel on another
                grid than channel 0 (unless the run resamples channels).
        """
        from medssl.data.channels import align_channels
        from medssl.errors import DataError

        volumes = list(volume) if isinstance(volume, (list, tuple)) else [volume]
        want = getattr(self.model, "in_channels", None)
        if want is not None and len(volumes) != want:
            raise DataError(f"case {name!r}: {len(volumes)} input channel(s) given, the model takes {want}")
        arrays = align_channels(volumes, case=name, resample=self.resample_channels)
        return torch.from_numpy(np.stack([self.normalise(a, k) for k, a in enumerate(arrays)]))[None]

    def predict_volume(self, volume, seed: int | str | None = None, keep_probabilities: bool = False) -> Prediction:
        """Predict one case; outputs on the grid and geometry of its (first) volume.

        Args:
            volume: the input :class:`~medssl.data.volume.Volume`, or one per channel (channel 0
                first), as :meth:`channels_input`.
            seed: MC-dropout masks are drawn from a generator seeded with this (an int, or a
                string such as the case name, hashed), so a case's prediction does not depend on
                which cases came before it (a resumed job gives what an uninterrupted one gives).
                ``None`` draws from the global RNG.
            keep_probabilities: return the fused class probabilities too (:attr:`Prediction.probabilities`).
        """
        import contextlib
        import hashlib

        volumes = list(volume) if isinstance(volume, (list, tuple)) else [volume]
        volume = volumes[0]
        if self.plan is not None:  # the network sees the plan's grid; the outputs go back below
            volumes = [self.plan.grid(1)(v) for v in volumes]
        x = self.channels_input(volumes, name=seed if isinstance(seed, str) else "")
        if isinstance(seed, str):
            seed = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "little") >> 1
        ctx = contextlib.nullcontext() if seed is None else torch.random.fork_rng(devices=[])
        planned = self.plan is not None
        with ctx:
            if seed is not None:
                torch.manual_seed(int(seed))
            # on a planned grid the probabilities are kept whole (they are mapped back below)
            out = self.stitch(x, keep_probabilities=keep_probabilities or planned)
        del x
        label, view_labels, unc, probs = out["label"], out["view_labels"], out["uncertainty"], out["probabilities"]
        if planned:  # probabilities back to the scan's own grid, THEN the argmax (one class at a time)
            from medssl.data.resample import GridMap, back_mapper

            grid, gm = volumes[0], GridMap(**volumes[0].meta["grid_map"])
            back = back_mapper(grid, gm, order=1)
            label, probs = _argmax_back(probs, back, keep_probabilities)
            unc = back(unc).copy()
            if len(view_labels):  # each view's label map, nearest neighbour (its probabilities are not kept)
                nearest = back_mapper(grid, gm, order=0)
                view_labels = np.stack([nearest(v) for v in view_labels])
            else:
                view_labels = np.zeros((0, *label.shape), np.uint8)
        unc = np.clip(unc, 0, 1).astype(np.float32, copy=False)
        fg = (label > 0) | (view_labels > 0).any(0)
        confidence = float(1.0 - (unc[fg].mean() if fg.any() else unc.mean()))
        return Prediction(label=label, view_labels=view_labels, uncertainty=unc, confidence=confidence, volume=volume,
                          probabilities=probs if keep_probabilities else None)

    def stitch(self, x: torch.Tensor, keep_probabilities: bool = False) -> dict:
        """:meth:`window_outputs` of one volume ``(1, C, X, Y, Z)``, reduced as it goes, in memory
        bounded by ``max_stitch_bytes``.

        A large volume is cut into slabs along z; each slab is stitched with ``roi_z // 4``
        slices of context on either side (windows then never end at a slab border inside the
        volume), and only its centre is kept, reduced at once to the fused label (uint8), each
        view's label (uint8) and the uncertainty (float32); the fused probabilities are kept
        (float32) only when asked. So a 512 x 512 x 600 CT never holds the float output of every
        class and view at once. A volume whose stitched output fits in the budget is one slab:
        exactly what :meth:`window_outputs` gives.

        Returns:
            ``{"label": (X, Y, Z) uint8, "view_labels": (N, X, Y, Z) uint8, "uncertainty":
            (X, Y, Z) float32, "probabilities": (K, X, Y, Z) float32 or None}``.
        """
        k, n = len(self.class_names), self.num_views
        spatial = tuple(int(v) for v in x.shape[2:])
        depth_total = spatial[-1]
        channels = k + n * k + 1
        # MONAI's stitching holds the output and a count map of the slab, float32 each
        per_slice = (channels + 1) * 4 * int(np.prod(spatial[:-1]))
        margin = max(1, self.roi_size[-1] // 4)
        if per_slice * depth_total <= self.max_stitch_bytes:
            depth = depth_total
        else:
            depth = max(self.roi_size[-1], self.max_stitch_bytes // per_slice - 2 * margin)
        label = np.zeros(spatial, np.uint8)
        views = np.zeros((n, *spatial), np.uint8)
        unc = np.zeros(spatial, np.float32)
        probs = np.zeros((k, *spatial), np.float32) if keep_probabilities else None
        for z0 in range(0, depth_total, depth):
            z1 = min(depth_total, z0 + depth)
            a, b = (0, depth_total) if depth >= depth_total else (max(0, z0 - margin), min(depth_total, z1 + margin))
            out = self.window_outputs(x[..., a:b])
            keep = slice(z0 - a, z1 - a)
            p = out["probs"][0, ..., keep].float()
            label[..., z0:z1] = p.argmax(0).cpu().numpy()
            if probs is not None:
                probs[..., z0:z1] = p.cpu().numpy()
            if n:
                views[..., z0:z1] = out["views"][0, ..., keep].argmax(1).cpu().numpy()
            unc[..., z0:z1] = out["uncertainty"][0, 0, ..., keep].clamp(0, 1).float().cpu().numpy()
            del out, p
        return {"label": label, "view_labels": views, "uncertainty": unc, "probabilities": probs}


def _argmax_back(probs: np.ndarray, back, keep: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The label on the scan's own grid from class probabilities on the planned grid: each class
    is resampled back in turn (``back``: :func:`medssl.data.resample.back_mapper`, linear) and a
    running maximum kept, so the native grid never holds more than two float volumes besides the
    resampler's buffers (plus all K when ``keep``, for the probability output)."""
    best = label = None
    kept = [] if keep else None
    for c in range(probs.shape[0]):
        pc = back(probs[c])  # valid until the next call
        if kept is not None:
            kept.append(pc.astype(np.float32, copy=True))
        if best is None:
            best, label = pc.astype(np.float32, copy=True), np.zeros(pc.shape, np.uint8)
        else:
            better = pc > best
            label[better] = c
            np.maximum(best, pc, out=best)
    return label, (np.stack(kept) if kept is not None else None)
