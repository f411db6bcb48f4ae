"""One preprocessing plan for training, pseudo-labels and inference (nnU-Net's fingerprint + plans).

Real scans differ in orientation and spacing (0.6-1 mm in-plane, 0.6-5 mm slices); a network
trained at one voxel size sees another at inference, and UMCT's views (axis permutations) assume
near-isotropic voxels. A :class:`DatasetPlan` fixes the grid every volume is brought to:

* ``orient``: reorient by permutation / flips to LPS (:data:`medssl.data.resample.CANONICAL`);
* ``spacing``: the target voxel size in mm, from the training cases' median spacing
  (:func:`make_plan`): isotropic at the geometric mean of the median spacing (the default, what
  multi-view recipes need) or the median spacing itself (``isotropic=False``);
* ``intensity``: per channel, ``{"mode": "zscore"}`` (per volume, MRI and other uncalibrated
  scans) or ``{"mode": "ct", "window": [p0.5, p99.5], "mean", "std"}`` from foreground voxels of
  the labeled training cases (nnU-Net's CT normalisation).

Images are resampled linearly, labels by nearest neighbour; outputs go back to each scan's own grid
by resampling the probabilities, then the argmax (:func:`medssl.data.resample.from_grid`). The plan
is written as ``plan.json`` in the run folder and stored in every checkpoint, so training,
validation, pseudo-labels and inference use the same grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from medssl.data.volume import Volume

PLAN_VERSION = 1


@dataclass(frozen=True)
class DatasetPlan:
    """The grid and intensity normalisation of a dataset (module docstring)."""

    spacing: tuple[float, float, float] | None
    orient: bool = True
    intensity: tuple[dict, ...] = ()
    median_spacing: tuple[float, float, float] | None = None
    median_shape: tuple[int, int, int] | None = None
    n_cases: int = 0
    version: int = PLAN_VERSION

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_json(cls, raw: dict) -> "DatasetPlan":
        from medssl.errors import DataError

        if not isinstance(raw, dict) or raw.get("version") != PLAN_VERSION:
            raise DataError(f"not a medssl plan of version {PLAN_VERSION}: {str(raw)[:80]}")
        tup = lambda v, t: None if v is None else tuple(t(x) for x in v)  # noqa: E731
        return cls(spacing=tup(raw.get("spacing"), float), orient=bool(raw.get("orient", True)),
                   intensity=tuple(dict(d) for d in raw.get("intensity", ())),
                   median_spacing=tup(raw.get("median_spacing"), float), median_shape=tup(raw.get("median_shape"), int),
                   n_cases=int(raw.get("n_cases", 0)))

    @property
    def key(self) -> str:
        """A short hash of what changes the stored voxels (spacing, orientation)."""
        blob = json.dumps([self.version, self.spacing, self.orient]).encode()
        return hashlib.sha1(blob).hexdigest()[:12]

    def grid(self, order: int) -> "ToPlanGrid":
        """The transform that brings a volume onto this plan's grid (order 0: labels)."""
        return ToPlanGrid(self.spacing, order, self.orient)

    def norm_for(self, channel: int):
        """The fixed :class:`~medssl.data.intensity.IntensityNorm` of a CT channel, or ``None``
        (the volume's own z-score)."""
        from medssl.data.intensity import IntensityNorm

        if channel >= len(self.intensity) or self.intensity[channel].get("mode") != "ct":
            return None
        d = self.intensity[channel]
        lo, hi = d["window"]
        return IntensityNorm(center=float(d["mean"]), scale=max(float(d["std"]), 1e-6), lo=float(lo), hi=float(hi))


@dataclass(frozen=True)
class ToPlanGrid:
    """Picklable ``Volume -> Volume``: :func:`medssl.data.resample.to_grid` with fixed settings;
    the way back (:class:`~medssl.data.resample.GridMap`) goes into ``meta["grid_map"]``."""

    spacing: tuple[float, float, float] | None
    order: int = 1
    orient: bool = True

    def __call__(self, vol: Volume) -> Volume:
        from medssl.data.resample import to_grid

        out, gm = to_grid(vol, self.spacing, order=self.order, orient=self.orient)
        out.meta = {**out.meta, "grid_map": dataclasses.asdict(gm)}
        return out


def read_plan(path: str | Path) -> DatasetPlan:
    from medssl.core.jsonfile import read_json

    return DatasetPlan.from_json(read_json(path))


def write_plan(plan: DatasetPlan, path: str | Path) -> Path:
    from medssl.core.jsonfile import write_json

    return write_json(path, plan.to_json())


def make_plan(cases: Sequence, modalities: Sequence[str], isotropic: bool = True,
              spacing: Sequence[float] | None = None, read=None, max_fg_voxels: int = 200_000) -> DatasetPlan:
    """The plan of a dataset from its training cases.

    Args:
        cases: :class:`~medssl.data.dataset.Case` objects (labels used for CT statistics when set).
        modalities: channel names; a channel named CT gets the CT normalisation.
        isotropic: target spacing isotropic (geometric mean of the median spacing) or the
            median spacing itself.
        spacing: a fixed target spacing instead.
        read: how to read a file (default :func:`medssl.data.io.read_volume`).
        max_fg_voxels: foreground voxels sampled per case for the CT statistics.
    """
    from medssl.data.io import read_volume

    read = read or read_volume
    spacings, shapes = [], []
    fg: dict[int, list[np.ndarray]] = {k: [] for k, m in enumerate(modalities) if str(m).upper() == "CT"}
    rng = np.random.default_rng(0)
    for case in cases:
        vols = [read(p) for p in case.images]
        spacings.append(vols[0].spacing)
        shapes.append(vols[0].shape)
        if fg and case.label is not None:
            mask = np.asarray(read(case.label).array) > 0
            for k in fg:
                vals = np.asarray(vols[k].array)[mask]
                if vals.size > max_fg_voxels:
                    vals = rng.choice(vals, max_fg_voxels, replace=False)
                fg[k].append(vals.astype(np.float64))
    if not spacings:
        from medssl.errors import DataError

        raise DataError("no cases to plan from")
    median = tuple(round(float(v), 4) for v in np.median(np.asarray(spacings), 0))  # NIfTI stores float32
    if spacing is not None:
        target = tuple(float(s) for s in spacing)
    elif isotropic:
        iso = float(np.exp(np.mean(np.log(median))))
        target = (round(iso, 3),) * 3
    else:
        target = median
    intensity = []
    for k in range(len(modalities)):
        if k in fg and fg[k]:
            vals = np.concatenate(fg[k])
            lo, hi = np.percentile(vals, [0.5, 99.5])
            clipped = np.clip(vals, lo, hi)
            intensity.append({"mode": "ct", "window": [float(lo), float(hi)], "mean": float(clipped.mean()),
                              "std": float(clipped.std())})
        else:
            intensity.append({"mode": "zscore"})
    return DatasetPlan(spacing=target, orient=True, intensity=tuple(intensity), median_spacing=median,
                       median_shape=tuple(int(v) for v in np.median(np.asarray(shapes), 0)), n_cases=len(spacings))


def resolve_plan(setting, cases: Sequence, modalities: Sequence[str], run_dir: Path, cache_dir: Path,
                 isotropic: bool = True, spacing: Sequence[float] | None = None) -> DatasetPlan | None:
    """The plan of a run: ``"none"`` -> ``None``; ``"auto"`` -> made from ``cases`` (read through
    the native volume cache) unless the run folder already has one (a resumed run keeps its
    plan); a path -> that plan file. Written to ``run_dir/plan.json``."""
    if setting is None or str(setting) == "none":
        return None
    dest = Path(run_dir) / "plan.json"
    if str(setting) == "auto":
        if dest.is_file():
            return read_plan(dest)
        from medssl.data.cache import VolumeCache

        cache = VolumeCache(cache_dir)
        plan = make_plan(cases, modalities, isotropic=isotropic, spacing=spacing, read=lambda p: cache.get(p).volume())
    else:
        plan = read_plan(setting)
    write_plan(plan, dest)
    return plan
