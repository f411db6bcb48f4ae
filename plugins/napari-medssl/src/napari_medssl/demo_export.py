"""A pseudo-label export built from phantoms without a model: for the screenshot, the open-time
benchmark and trying the plugin out.

Each case is a :func:`medssl.data.phantoms.make_phantom` abdomen; its "pseudo-label" is the
phantom's true label with the organ boundaries perturbed per view (three views, each dilating or
eroding other organs), the fused label is the views' majority, and the uncertainty is high where
the views disagree and near boundaries. The layout and the manifest are those of
``medssl pseudo-label``, so everything the plugin does with a real export it does here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.data.io import write_volume
from medssl.data.phantoms import LABELS, case_rng, make_phantom
from medssl.inference.review_manifest import ReviewCase, ReviewManifest


def _views(label: np.ndarray, n_classes: int, rng: np.random.Generator) -> list[np.ndarray]:
    from scipy import ndimage

    views = []
    for v in range(3):
        out = label.copy()
        for cls in range(1, n_classes):
            if rng.random() < 0.5:
                continue
            mask = label == cls
            grown = ndimage.binary_dilation(mask, iterations=1 + v % 2) if rng.random() < 0.5 else \
                ndimage.binary_erosion(mask, iterations=1)
            out[mask & ~grown] = 0
            out[grown & (out == 0)] = cls
        views.append(out)
    return views


def _uncertainty(label: np.ndarray, views: list[np.ndarray]) -> np.ndarray:
    from scipy import ndimage

    stack = np.stack(views)
    agree = (stack == stack[0]).all(axis=0)
    edges = ndimage.morphological_gradient(label, size=3) > 0
    unc = np.where(agree, 0.0, 0.7).astype(np.float32) + 0.25 * edges.astype(np.float32)
    unc = ndimage.gaussian_filter(unc, 1.0)
    return np.clip(unc, 0.0, 1.0).astype(np.float32)


def make_demo_export(out: str | Path, n_cases: int = 4, shape: tuple[int, int, int] = (96, 96, 48),
                     seed: int = 0) -> Path:
    """Write an export of ``n_cases`` phantom cases of ``shape`` into ``out``; returns the manifest path."""
    out = Path(out)
    classes = [name for name, _ in sorted(LABELS.items(), key=lambda kv: kv[1])]
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    (out / "dataset" / "dataset.json").write_text('{"channel_names": {"0": "MRI"}}')
    manifest = ReviewManifest.new(out / "manifest.json", out / "demo.ckpt", out / "dataset", classes)
    for i in range(n_cases):
        name = f"phantom_ul_{i:03d}"
        rng = case_rng(seed, "unlabeled", i)
        case = make_phantom(rng, shape)
        truth = case.label.array.astype(np.uint8)
        views = _views(truth, len(classes), np.random.default_rng(seed * 1000 + i))
        stack = np.stack(views)
        fused = _majority(stack, len(classes)).astype(np.uint8)
        unc = _uncertainty(fused, views)
        write_volume(case.image, out / "dataset" / "imagesUnlabeled" / f"{name}_0000.nii.gz")
        write_volume(case.label.with_array(fused), out / "labels" / f"{name}.nii.gz")
        for k, v in enumerate(views):
            write_volume(case.label.with_array(v), out / "views" / f"{name}_view{k}.nii.gz")
        write_volume(case.label.with_array(unc), out / "uncertainty" / f"{name}.nii.gz")
        fg = fused > 0
        conf = float(1.0 - unc[fg | (stack > 0).any(axis=0)].mean()) if fg.any() else float(1.0 - unc.mean())
        manifest.put(ReviewCase(
            name=name, image=str((out / "dataset" / "imagesUnlabeled" / f"{name}_0000.nii.gz").resolve()),
            label=f"labels/{name}.nii.gz", views=[f"views/{name}_view{k}.nii.gz" for k in range(3)],
            uncertainty=f"uncertainty/{name}.nii.gz", confidence=round(conf, 4),
            mean_uncertainty=round(float(unc.mean()), 4),
            foreground_ml=round(float(fg.sum()) * float(np.prod(case.label.spacing)) / 1000, 2)))
    return manifest.write()


def _majority(stack: np.ndarray, n_classes: int) -> np.ndarray:
    counts = np.stack([(stack == c).sum(axis=0) for c in range(n_classes)])
    return counts.argmax(axis=0)
