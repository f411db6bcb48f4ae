"""Two-channel phantoms whose classes can only be told apart using both channels (2D or 3D).

What a multi-sequence MRI dataset asks of a model, in its simplest form: every case holds random
ellipsoidal blobs of two classes on a noisy, smoothly shaded background.

* channel 0 ("T1"-like) shows every blob equally bright: it finds blobs but cannot tell the classes
  apart (they have the same intensity, size and shape distribution);
* channel 1 ("T2"-like) shows class 1 bright and class 2 at the background level: it tells the
  classes apart where a blob is, but cannot find class 2 blobs at all.

A model given only channel 0 can do no better than a coin flip between the classes (per-class Dice
about half of the two-channel model's), a model given only channel 1 misses class 2; with both it
segments both. ``medssl sample-data OUT --channels 2`` writes them as a dataset folder (channel k of
a case in ``<case>_000k.nii.gz``); :func:`make_channel_phantom` makes one 2D or 3D case in memory
(for 2D networks and tests).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

#: labels of the two-channel phantoms
CHANNEL_LABELS = {"background": 0, "bright_in_both": 1, "dark_in_t2": 2}
CHANNEL_NAMES = {"0": "T1", "1": "T2"}
DEFAULT_CHANNEL_SHAPE = (48, 48, 48)


@dataclass
class ChannelPhantom:
    """One case: ``images`` ``(2, *shape)`` float32 and ``label`` ``shape`` uint8."""

    images: np.ndarray
    label: np.ndarray


def make_channel_phantom(
    rng: np.random.Generator, shape: Sequence[int] = DEFAULT_CHANNEL_SHAPE, n_blobs: tuple[int, int] = (6, 10)
) -> ChannelPhantom:
    """One two-channel case (module docstring), 2D (``shape`` of 2 sizes) or 3D (3 sizes).

    Every case holds at least one blob of each class. Radii are 8-16 % of the smallest side.
    Intensities: background 0.2 (channel 0) / 0.5 (channel 1) with a smooth shading of ±10 % and
    Gaussian noise of sd 0.08; blobs 1.0 in channel 0; in channel 1, class 1 is 1.0 and class 2 is
    the background level.
    """
    shape = tuple(int(s) for s in shape)
    nd = len(shape)
    if nd not in (2, 3) or min(shape) < 16:
        raise ValueError(f"shape must be 2 or 3 sizes of at least 16, got {shape}")
    grid = np.stack(np.meshgrid(*[np.arange(s, dtype=np.float32) for s in shape], indexing="ij"))
    label = np.zeros(shape, np.uint8)
    n = int(rng.integers(n_blobs[0], n_blobs[1] + 1))
    classes = np.concatenate([[1, 2], rng.integers(1, 3, size=n - 2)])
    side = min(shape)
    for cls in rng.permutation(classes):
        radii = rng.uniform(0.08, 0.16, size=nd) * side
        centre = np.array([rng.uniform(r + 1, s - r - 1) for r, s in zip(radii, shape)], np.float32)
        d = sum(((grid[a] - centre[a]) / radii[a]) ** 2 for a in range(nd))
        label[d <= 1.0] = cls
    shade = sum(rng.uniform(-0.1, 0.1) * (grid[a] / shape[a] - 0.5) for a in range(nd))
    ch0 = 0.2 + shade + 0.8 * (label > 0)
    ch1 = 0.5 + shade + 0.5 * (label == 1)
    images = np.stack([ch0, ch1]).astype(np.float32)
    images += rng.normal(0.0, 0.08, size=images.shape).astype(np.float32)
    return ChannelPhantom(images=images, label=label)


def write_channel_case(case: ChannelPhantom, image_paths: Sequence, label_path=None, spacing=(1.5, 1.5, 1.5)) -> None:
    """Write a 3D case: channel ``k`` to ``image_paths[k]``, the label to ``label_path`` (if given)."""
    from medssl.data.io import write_volume
    from medssl.data.volume import Volume

    if case.label.ndim != 3:
        raise ValueError("only 3D cases are written as dataset files")
    for k, path in enumerate(image_paths):
        write_volume(Volume(case.images[k], spacing=spacing), path)
    if label_path is not None:
        write_volume(Volume(case.label, spacing=spacing), label_path)
