"""``medssl pseudo-label``: fused pseudo-labels, per-view predictions, uncertainty and a per-case
confidence for unlabeled cases, plus the review manifest the napari review plugin edits.

Prediction is the :class:`~medssl.inference.predictor.Predictor`'s (the same code as validation
and batch inference): for every sliding window, K MC-dropout passes of every view give each
view's mean prediction and uncertainty; the views are fused with inverse-uncertainty weights
(UMCT's fusion of Xia et al. 2020 over all views, as at test time), and the windows' outputs are
stitched with MONAI's Gaussian-weighted sliding window. Written in the input geometry:

* ``labels/<case>.nii.gz``: argmax of the fused distribution (uint8);
* ``views/<case>_view<i>.nii.gz``: each view's own prediction (uint8; multi-view models only);
* ``uncertainty/<case>.nii.gz``: entropy of the fused distribution, normalised by log(C), in [0, 1];
* ``manifest.json``: :mod:`medssl.inference.review_manifest`. The per-case confidence is
  ``1 - mean(normalised entropy)`` over the voxels that the fused label or any view calls
  foreground (all voxels if none), i.e. how sure the models are where it matters.

The job resumes: cases already in the manifest with their files present are skipped, and the
manifest is rewritten atomically after every case. MC-dropout masks are drawn from a generator
seeded by the case name, so a resumed job writes what an uninterrupted one writes. Volumes are read through the volume cache in
the cache folder (``$MEDSSL_CACHE``), never written into the dataset.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medssl.errors import DataError


def export_pseudo_labels(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "unlabeled",
    mc_samples: int | None = None,
    progress: bool = True,
) -> Path:
    """Write pseudo-labels for the cases of ``split`` of dataset ``data``; returns the manifest path."""
    from tqdm.auto import tqdm

    from medssl.core.paths import cache_dir
    from medssl.core.runtime import tune_allocator
    from medssl.data.cache import VolumeCache
    from medssl.data.dataset import list_cases, read_dataset_json
    from medssl.data.io import write_volume
    from medssl.inference.load import load_predictor
    from medssl.inference.review_manifest import ReviewCase, ReviewManifest

    tune_allocator()
    predictor = load_predictor(checkpoint, mc_samples=mc_samples)
    cfg, spec = predictor.config, predictor.spec
    data_spec = read_dataset_json(data)
    if data_spec.labels != spec.labels:
        raise DataError(f"its labels {data_spec.labels} differ from the checkpoint's {spec.labels}", data)
    cases = list_cases(data, split, data_spec)
    if not cases:
        raise DataError(f"no {split} images to pseudo-label", data)
    out = Path(out)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest = ReviewManifest.read(manifest_path)
    else:
        manifest = ReviewManifest.new(manifest_path, checkpoint, data, spec.class_names)
    manifest.cases = [c for c in manifest.cases if manifest.resolve(c.label).is_file()]
    done = {c.name for c in manifest.cases}
    cache = VolumeCache(cfg.data.cache_dir if cfg.data.cache_dir is not None else cache_dir("volumes", data))
    n = predictor.num_views
    for case in tqdm([c for c in cases if c.name not in done], desc="pseudo-labels", disable=not progress):
        vol = cache.get(case.image).volume()
        pred = predictor.predict_volume(vol, seed=case.name)  # MC masks: a function of the case
        rel = {
            "label": f"labels/{case.name}.nii.gz",
            "views": [f"views/{case.name}_view{i}.nii.gz" for i in range(n)],
            "uncertainty": f"uncertainty/{case.name}.nii.gz",
        }
        write_volume(pred.as_volume(pred.label), out / rel["label"])
        for i in range(n):
            write_volume(pred.as_volume(pred.view_labels[i]), out / rel["views"][i])
        write_volume(pred.as_volume(pred.uncertainty), out / rel["uncertainty"])
        voxel_ml = float(np.prod(vol.spacing)) / 1000.0
        manifest.put(ReviewCase(
            name=case.name, image=str(case.image.resolve()), **rel, confidence=round(pred.confidence, 4),
            mean_uncertainty=round(float(pred.uncertainty.mean()), 4),
            foreground_ml=round(float((pred.label > 0).sum()) * voxel_ml, 3),
        ))
        manifest.write()
    if not manifest_path.exists():
        manifest.write()
    return manifest_path
