"""Intensity normalisation of whole volumes and patches.

Statistics are computed once per volume (on a strided subsample, so a 512^2 x 300 CT costs a few
ms) and then applied to every patch drawn from it: computing them per patch would make the
normalisation depend on where the patch lies.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: the normalisations :func:`fit_intensity` knows; ``"auto"`` picks one per channel by its name
MODES = ("zscore", "ct")


@dataclass(frozen=True)
class IntensityNorm:
    """``(x - center) / scale`` after optional clipping to ``[lo, hi]``."""

    center: float
    scale: float
    lo: float = -np.inf
    hi: float = np.inf

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if np.isfinite(self.lo) or np.isfinite(self.hi):
            x = np.clip(x, self.lo, self.hi)
        return (x - np.float32(self.center)) / np.float32(self.scale)


def fit_intensity(array: np.ndarray, mode: str = "zscore", ct_window: tuple[float, float] = (-1000.0, 1000.0)) -> IntensityNorm:
    """Normalisation for one volume.

    Args:
        array: the volume, ``(X, Y, Z)`` (a memmap is fine: only a strided subsample is read).
        mode: ``"zscore"`` (per-volume mean/std after clipping to the 0.5-99.5 percentiles, for
            MRI and other uncalibrated modalities) or ``"ct"`` (fixed HU window mapped to [-1, 1]).
        ct_window: HU window for ``"ct"``.
    """
    if mode == "ct":
        lo, hi = ct_window
        return IntensityNorm(center=(lo + hi) / 2, scale=max((hi - lo) / 2, 1e-6), lo=lo, hi=hi)
    if mode != "zscore":
        raise ValueError(f"unknown intensity mode {mode!r}")
    step = max(1, int(round((array.size / 2e6) ** (1 / 3))))
    sub = np.asarray(array[::step, ::step, ::step], dtype=np.float32)
    sub = sub[np.isfinite(sub)]
    if sub.size == 0:
        return IntensityNorm(0.0, 1.0)
    lo, hi = np.percentile(sub, [0.5, 99.5])
    sub = np.clip(sub, lo, hi)
    std = float(sub.std())
    return IntensityNorm(center=float(sub.mean()), scale=std if std > 1e-6 else 1.0, lo=float(lo), hi=float(hi))


def channel_modes(intensity: str | Sequence[str], modalities: Sequence[str]) -> list[str]:
    """One normalisation mode per channel.

    Args:
        intensity: a mode for every channel (``"zscore"``, ``"ct"``), ``"auto"`` (the CT window
            for channels named CT, z-score for the others: MRI sequences, PET, ...), or a list
            with one mode per channel.
        modalities: the channel names of ``dataset.json`` (channel order).

    Raises:
        ValueError: a list whose length is not the number of channels, or an unknown mode.
    """
    n = len(modalities)
    if isinstance(intensity, str):
        if intensity == "auto":
            return ["ct" if str(m).strip().upper() == "CT" else "zscore" for m in modalities]
        modes = [intensity] * n
    else:
        modes = [str(m) for m in intensity]
        if len(modes) != n:
            raise ValueError(f"data.intensity lists {len(modes)} modes for {n} channels ({', '.join(modalities)})")
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown intensity mode {bad[0]!r}; expected one of {', '.join(MODES)} or 'auto'")
    return modes
