"""How a case looks: image contrast limits and the class colours of the label.

CT gets a soft-tissue window (W 400 / L 40 HU), anything else (MRI, phantoms) the 0.5-99.5th
percentiles of its voxels (of a strided subsample, so a 512^3 volume costs milliseconds).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

CT_WINDOW = (-160.0, 240.0)

#: RGBA per label value (0 transparent), then cycled for more classes
PALETTE = [
    (0.0, 0.0, 0.0, 0.0),
    (0.95, 0.26, 0.21, 1.0),  # red
    (0.30, 0.69, 0.31, 1.0),  # green
    (0.13, 0.59, 0.95, 1.0),  # blue
    (1.00, 0.76, 0.03, 1.0),  # amber
    (0.61, 0.15, 0.69, 1.0),  # purple
    (0.00, 0.74, 0.83, 1.0),  # cyan
    (1.00, 0.34, 0.13, 1.0),  # deep orange
]


def modality(dataset_dir: str | Path | None) -> str | None:
    """Channel 0's name in the dataset's ``dataset.json`` (e.g. ``"CT"``, ``"MRI"``), if readable."""
    if dataset_dir is None:
        return None
    try:
        spec = json.loads((Path(dataset_dir) / "dataset.json").read_text())
        return str((spec.get("channel_names") or spec.get("modality") or {}).get("0"))
    except (OSError, ValueError, AttributeError):
        return None


def contrast_limits(image: np.ndarray, modality_name: str | None = None) -> tuple[float, float]:
    """Display window of ``image``: the CT soft-tissue window for CT, else robust percentiles."""
    if modality_name is not None and modality_name.strip().upper() == "CT":
        return CT_WINDOW
    step = max(1, round((image.size / 2_000_000) ** (1 / 3)))
    sample = np.asarray(image[::step, ::step, ::step], dtype=np.float32)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return (0.0, 1.0)
    lo, hi = np.percentile(sample, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return (float(lo), float(hi))


def class_colors(n_classes: int) -> dict[int, tuple[float, float, float, float]]:
    """Label value -> RGBA for ``n_classes`` classes (background transparent)."""
    return {i: PALETTE[0] if i == 0 else PALETTE[1 + (i - 1) % (len(PALETTE) - 1)] for i in range(n_classes)}
