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

The loop is the batch engine's (:func:`medssl.inference.infer.run_cases`: read-ahead and
write-behind threads, ``summary.csv`` / ``errors.csv``, a faulty case recorded and the others
done); this module adds the dataset's cases and a writer of the export layout and the manifest.
The job resumes: cases already in the manifest with their files present are skipped, and the
manifest is rewritten atomically after every case. It resumes only an export of the same
checkpoint (sha256) and the same dataset split (fingerprint of its labels and image names and
sizes); an export folder holding another one is refused unless ``force`` starts it over. MC-dropout masks are drawn from a generator
seeded by the case name, so a resumed job writes what an uninterrupted one writes. Volumes are read through the volume cache in
the cache folder (``$MEDSSL_CACHE``), never written into the dataset.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medssl.errors import DataError
from medssl.inference.case_outputs import CaseWriter
from medssl.inference.inputs import CaseInput, LoadedCase


def export_pseudo_labels(
    checkpoint: str | Path,
    data: str | Path,
    out: str | Path,
    split: str = "unlabeled",
    mc_samples: int | None = None,
    progress: bool = True,
    force: bool = False,
    skip_checks: bool = False,
) -> Path:
    """Write pseudo-labels for the cases of ``split`` of dataset ``data``; returns the manifest path.

    Raises:
        DataError: bad checkpoint or dataset, labels that differ, no cases, or ``out`` holding
            another checkpoint's or dataset's export (without ``force``).
    """
    from medssl.core.runtime import interactive, tune_allocator
    from medssl.data.cache import VolumeCache, default_cache_dir
    from medssl.data.dataset import list_cases, read_dataset_json
    from medssl.inference.load import load_predictor
    from medssl.inference.model_package import model_sha256
    from medssl.inference.review_manifest import ReviewManifest

    tune_allocator()
    predictor = load_predictor(checkpoint, mc_samples=mc_samples)
    cfg, spec = predictor.config, predictor.spec
    data_spec = read_dataset_json(data).select(cfg.data.channels)  # the channels the run trained on
    if data_spec.labels != spec.labels:
        raise DataError(f"its labels {data_spec.labels} differ from the checkpoint's {spec.labels}", data)
    if data_spec.num_channels != spec.num_channels:
        raise DataError(f"its {data_spec.num_channels} channel(s) ({', '.join(data_spec.modalities)}) differ from the "
                        f"checkpoint's {spec.num_channels} ({', '.join(spec.modalities)})", data)
    cases = list_cases(data, split, read_dataset_json(data))
    if cfg.data.channels is not None:
        cases = [c.select(cfg.data.channels) for c in cases]
    if not cases:
        raise DataError(f"no {split} images to pseudo-label", data)
    volume_cache = cfg.data.cache_dir if cfg.data.cache_dir is not None else default_cache_dir(data)
    if not skip_checks:  # broken images are refused before anything is written
        from medssl.data.preflight import preflight

        preflight(cases, data_spec, volume_cache=volume_cache, progress=interactive(progress),
                  resample_channels=cfg.data.resample_channels)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("--out must be a folder (or a path to create one), not a file", out)
    manifest_path = out / "manifest.json"
    ckpt_sha = model_sha256(checkpoint)
    fingerprint = dataset_fingerprint(data_spec, cases)
    manifest = ReviewManifest.read(manifest_path) if manifest_path.exists() else None
    if manifest is not None:
        other = _other_export(manifest, ckpt_sha, fingerprint, checkpoint, data)
        if other and not force:
            raise DataError(f"holds pseudo-labels of {other}: use another --out, or --force to start over "
                            "(its reviewed labels are kept, its manifest is replaced)", out)
        if other:
            _remove_outputs(manifest)
            manifest = None
    if manifest is None:
        manifest = ReviewManifest.new(manifest_path, checkpoint, data, spec.class_names)
    manifest.checkpoint_sha256, manifest.dataset_fingerprint = ckpt_sha, fingerprint
    manifest.cases = [c for c in manifest.cases if manifest.resolve(c.label).is_file()]
    done = {c.name for c in manifest.cases}
    from medssl.inference.infer import run_cases

    writer = _ManifestWriter(manifest, predictor.num_views, {c.name: c for c in cases})
    inputs = [_DatasetCase(name=c.name, sources=list(c.images), display=str(c.image), cache=VolumeCache(volume_cache))
              for c in cases]
    result = run_cases(predictor, inputs, out, writer, progress=progress)
    if not manifest_path.exists():
        manifest.write()
    if result.failed:
        raise DataError(f"{len(result.failed)} of {len(inputs)} case(s) failed (errors.csv lists them; the others "
                        f"are in the manifest): {result.failed[0][0]}: {result.failed[0][2]}", out)
    return manifest_path


@dataclass
class _DatasetCase(CaseInput):
    """A dataset case for the batch engine: read through the volume cache (memory maps), and
    recognised as finished by the manifest, so its key is the files' size and mtime (cheap)."""

    cache: object = None

    def read(self) -> LoadedCase:
        return LoadedCase([self.cache.get(p).volume() for p in self.sources])

    def sha256(self) -> str:
        import hashlib

        h = hashlib.sha256()
        for p in self.sources:
            st = Path(p).stat()
            h.update(f"{Path(p).name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


class _ManifestWriter(CaseWriter):
    """The pseudo-label export's outputs: labels/, views/, uncertainty/ and the review manifest,
    rewritten atomically after every case (the engine calls it from one writer thread)."""

    def __init__(self, manifest, num_views: int, cases: dict):
        self.manifest, self.num_views, self.cases = manifest, num_views, cases
        self.done = {c.name for c in manifest.cases}

    @property
    def keep_probabilities(self) -> bool:
        return False

    def finished(self, case, input_sha256: str) -> dict | None:
        return {"case": case.name} if case.name in self.done else None

    def write(self, case, loaded, pred, input_sha256: str, timings: dict, extra: dict | None = None) -> dict:
        from medssl.data.io import write_volume
        from medssl.inference.review_manifest import ReviewCase

        out, n, src = self.manifest.path.parent, self.num_views, self.cases[case.name]
        rel = {
            "label": f"labels/{case.name}.nii.gz",
            "views": [f"views/{case.name}_view{i}.nii.gz" for i in range(n)],
            "uncertainty": f"uncertainty/{case.name}.nii.gz",
        }
        write_volume(pred.as_volume(pred.label), out / rel["label"])
        for i in range(n):
            write_volume(pred.as_volume(pred.view_labels[i]), out / rel["views"][i])
        write_volume(pred.as_volume(pred.uncertainty), out / rel["uncertainty"])
        voxel_ml = float(np.prod(pred.volume.spacing)) / 1000.0
        self.manifest.put(ReviewCase(
            name=case.name, image=str(src.image.resolve()), channels=[str(p.resolve()) for p in src.channels],
            **rel, confidence=round(pred.confidence, 4),
            mean_uncertainty=round(float(pred.uncertainty.mean()), 4),
            foreground_ml=round(float((pred.label > 0).sum()) * voxel_ml, 3),
        ))
        self.manifest.write()
        self.done.add(case.name)
        return {"case": case.name, "confidence": round(pred.confidence, 4), "timings_s": timings}


def dataset_fingerprint(spec, cases) -> str:
    """sha256 of what defines an export's input: the dataset's labels and the split's image
    names and sizes (every channel's) (cheap; content changes that keep a file's size are not seen)."""
    import hashlib
    import json

    items = [[c.name, *[x for p in c.images for x in (p.name, p.stat().st_size)]] for c in cases]
    blob = json.dumps({"labels": spec.labels, "images": items}, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def _other_export(manifest, ckpt_sha: str, fingerprint: str, checkpoint, data) -> str | None:
    """What differs between an existing export and this one (None: the same, resume it)."""
    if manifest.checkpoint_sha256 is not None and manifest.checkpoint_sha256 != ckpt_sha:
        return f"another checkpoint ({manifest.checkpoint}, sha256 {manifest.checkpoint_sha256[:12]})"
    if manifest.checkpoint_sha256 is None and manifest.checkpoint != str(Path(checkpoint).resolve()):
        return f"another checkpoint ({manifest.checkpoint})"
    if manifest.dataset != str(Path(data).resolve()):
        return f"another dataset ({manifest.dataset})"
    if manifest.dataset_fingerprint is not None and manifest.dataset_fingerprint != fingerprint:
        return f"another version of the dataset's images ({manifest.dataset})"
    return None


def _remove_outputs(manifest) -> None:
    """Delete the pseudo-label, view and uncertainty files an export wrote (never reviewed labels)."""
    for c in manifest.cases:
        for rel in [c.label, c.uncertainty, *c.views]:
            if rel:
                manifest.resolve(rel).unlink(missing_ok=True)
