"""``medssl pseudo-label``: fused pseudo-labels, per-view predictions, uncertainty and a
per-case confidence for unlabeled cases, plus the manifest the napari review plugin edits.

For every sliding window, K MC-dropout passes of every view give each view's mean prediction
and predictive entropy; the views are fused with inverse-uncertainty weights (the UMCT fusion
of Xia et al. 2020 applied to all views, as at test time), and the window's outputs are stitched
with MONAI's Gaussian-weighted sliding window. Written in the input geometry:

* ``labels/<case>.nii.gz``: argmax of the fused distribution (uint8);
* ``views/<case>_view<i>.nii.gz``: each view's own prediction (uint8);
* ``uncertainty/<case>.nii.gz``: entropy of the fused distribution, normalised by log(C), in [0, 1];
* ``manifest.json``: see :mod:`medssl.data.manifest`. The per-case confidence is
  ``1 - mean(normalised entropy)`` over the voxels that the fused label or any view calls
  foreground (all voxels if none), i.e. how sure the models are where it matters.

The job resumes: cases already in the manifest with their files present are skipped, and the
manifest is rewritten atomically after every case.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from medssl.errors import DataError


def fuse_all_views(mean: torch.Tensor, unc: torch.Tensor, floor: float, weighting: str) -> torch.Tensor:
    """Fuse ``(N, B, C, ...)`` view predictions with weights ``1 / max(u, floor)`` (or equal)."""
    if weighting == "average":
        return mean.mean(0)
    w = 1.0 / unc.clamp_min(floor)
    return (w * mean).sum(0) / w.sum(0)


def _window_predictor(model, mc_samples: int, bf16: bool = False):
    """A sliding-window predictor returning ``[fused C | views N*C | entropy 1]`` channels."""
    from medssl.losses.umct import mc_statistics
    from medssl.nets.multiview_unet import enable_mc_dropout

    n = len(model.views)

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        if n > 1 or mc_samples > 1:
            enable_mc_dropout(model.net)
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model.view_logits(x.repeat(mc_samples, 1, 1, 1, 1))
        probs = torch.softmax(logits.float(), dim=2)
        model.net.eval()
        probs = probs.reshape(n, mc_samples, b, *probs.shape[2:])
        stats = [mc_statistics(p, kind=model.uncertainty_kind) for p in probs]
        mean = torch.stack([m for m, _ in stats])
        unc = torch.stack([u for _, u in stats])
        fused = fuse_all_views(mean, unc, model.floor, model.fusion) if n > 1 else mean[0]
        c = fused.shape[1]
        ent = -(fused.clamp_min(1e-8).log() * fused).sum(1, keepdim=True) / math.log(c)
        return torch.cat([fused, mean.permute(1, 0, 2, *range(3, mean.dim())).reshape(b, n * c, *mean.shape[3:]), ent], 1)

    return predict


def export_pseudo_labels(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "unlabeled",
    mc_samples: int | None = None,
    progress: bool = True,
) -> Path:
    """Write pseudo-labels for the cases of ``split`` of dataset ``data``; returns the manifest path."""
    from monai.inferers import sliding_window_inference
    from tqdm.auto import tqdm

    from medssl.data.cache import VolumeCache
    from medssl.data.dataset import list_cases, read_dataset_json
    from medssl.data.intensity import fit_intensity
    from medssl.data.io import write_volume
    from medssl.data.manifest import new_manifest, read_manifest, resolve, write_manifest
    from medssl.core.runtime import tune_allocator
    from medssl.inference.load import load_method

    tune_allocator()
    model, cfg, spec = load_method(checkpoint)
    if not hasattr(model, "views"):
        raise DataError("pseudo-labels need a multi-view (umct) checkpoint", checkpoint)
    data_spec = read_dataset_json(data)
    if data_spec.labels != spec.labels:
        raise DataError(f"its labels {data_spec.labels} differ from the checkpoint's {spec.labels}", data)
    cases = list_cases(data, split, data_spec)
    if not cases:
        raise DataError(f"no {split} images to pseudo-label", data)
    out = Path(out)
    manifest_path = out / "manifest.json"
    manifest = read_manifest(manifest_path) if manifest_path.exists() else new_manifest(checkpoint, data, spec.class_names)
    done = {c["name"] for c in manifest["cases"] if resolve(manifest_path, c["label"]).is_file()}
    manifest["cases"] = [c for c in manifest["cases"] if c["name"] in done]
    k = mc_samples or cfg.umct.mc_samples
    predictor = _window_predictor(model, k, bf16=cfg.trainer.precision == "bf16")
    cache = VolumeCache(Path(data) / ".medssl_cache" if cfg.data.cache_dir is None else cfg.data.cache_dir)
    n, c = len(model.views), spec.num_classes
    for case in tqdm([c for c in cases if c.name not in done], desc="pseudo-labels", disable=not progress):
        cached = cache.get(case.image)
        vol = cached.volume()
        norm = fit_intensity(cached.array, cfg.data.intensity, cfg.data.ct_window)
        x = torch.from_numpy(norm(np.asarray(cached.array)))[None, None]
        y = sliding_window_inference(x, model.roi_size, model.sw_batch_size, predictor, overlap=model.overlap, mode="gaussian")[0]
        fused, views, ent = y[:c], y[c : c + n * c].reshape(n, c, *y.shape[1:]), y[-1]
        label = fused.argmax(0).numpy().astype(np.uint8)
        view_labels = views.argmax(1).numpy().astype(np.uint8)
        fg = (label > 0) | (view_labels > 0).any(0)
        ent_np = ent.clamp(0, 1).numpy().astype(np.float32)
        confidence = float(1.0 - (ent_np[fg].mean() if fg.any() else ent_np.mean()))
        rel = {
            "label": f"labels/{case.name}.nii.gz",
            "views": [f"views/{case.name}_view{i}.nii.gz" for i in range(n)],
            "uncertainty": f"uncertainty/{case.name}.nii.gz",
        }
        write_volume(vol.with_array(label), out / rel["label"])
        for i in range(n):
            write_volume(vol.with_array(view_labels[i]), out / rel["views"][i])
        write_volume(vol.with_array(ent_np), out / rel["uncertainty"])
        manifest["cases"].append({
            "name": case.name, "image": str(case.image.resolve()), **rel,
            "confidence": round(confidence, 4), "status": "pending", "reviewed_label": None,
        })
        write_manifest(manifest_path, manifest)
    if not manifest_path.exists():
        write_manifest(manifest_path, manifest)
    return manifest_path
