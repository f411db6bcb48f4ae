"""What ``medssl infer`` writes for one case, and how a rerun knows a case is finished.

Per case ``<name>`` in the output folder, all in the input's exact geometry (shape, spacing,
origin, direction of its channel 0):

* ``<name>.nii.gz``: the segmentation, uint8 class indices;
* ``<name>_uncertainty.nii.gz``: the normalised entropy of the fused class distribution, in [0, 1]
  (:attr:`~medssl.inference.predictor.Prediction.uncertainty`). ``uint8`` (default): the value
  times 255, rounded (divide by 255 to read it); ``float32``; or ``float16``: NIfTI has no
  half-float type (nibabel and SimpleITK refuse one), so it is stored as uint16 with
  ``scl_slope = 1/65535``: NIfTI readers return floats in [0, 1] at a step of 1.5e-5 (finer than
  float16's 4.9e-4 near 1) for the same 2 bytes per voxel;
* ``<name>_probs.nii.gz`` (``--probabilities``): a 4D NIfTI ``(X, Y, Z, C)``, one volume per class,
  float16 (stored as above) or float32;
* ``<name>.png`` (``--preview``): axial, coronal and sagittal mid-slices with the label, and the
  uncertainty, overlaid;
* ``<name>_seg.dcm`` (``--dicom-seg``, DICOM input): :mod:`medssl.inference.dicom_seg`;
* ``<name>.json``, written last: per-class volumes in mL, mean uncertainty inside the predicted
  foreground and over the whole volume, the out-of-distribution score (:data:`OOD_THRESHOLD`),
  input and model sha256, versions, the plan, timings, warnings, and the list of output files
  with their sizes.

Resume (:func:`finished_record`): a case is finished when its JSON exists, records the same input
sha256, model sha256 and output options, and every output file it lists exists with the size it
recorded. Each file is written atomically and the JSON only after all of them, so a killed run
never leaves a case that looks finished but is not.

Privacy: the JSON holds paths, series keys, descriptions and slice counts, never PatientName,
PatientID or birth date (:mod:`medssl.inference.inputs` keeps them out of names and paths).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: A voxel is "highly uncertain" above this normalised entropy. The out-of-distribution score of
#: a case is the fraction of its voxels above it: in-distribution scans are confidently
#: background almost everywhere and uncertain only along organ borders (a few per cent of the
#: voxels), while a scan unlike the training data (another modality, body part or intensity
#: range) spreads the model's probability over several classes in large regions. It is a
#: heuristic to rank cases for review within one model's outputs, not a calibrated probability.
OOD_THRESHOLD = 0.5

#: written into every JSON, to say what ``ood_score`` is
OOD_DEFINITION = (f"fraction of voxels whose normalised entropy of the fused class distribution exceeds {OOD_THRESHOLD} "
                  "(0: confident everywhere, 1: uncertain everywhere); rank cases for review, not a probability")

MAP_DTYPES = ("uint8", "float16", "float32")
PROB_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class OutputOptions:
    """What to write per case besides the segmentation, uncertainty map and JSON.

    Attributes:
        probabilities: write ``<case>_probs.nii.gz``.
        probabilities_dtype: ``"float16"`` or ``"float32"`` (module docstring for float16).
        uncertainty_dtype: ``"uint8"`` (0-255), ``"float16"`` or ``"float32"``.
        preview: write ``<case>.png``.
        dicom_seg: write ``<case>_seg.dcm`` for DICOM input.
    """

    probabilities: bool = False
    probabilities_dtype: str = "float16"
    uncertainty_dtype: str = "uint8"
    preview: bool = False
    dicom_seg: bool = False

    def __post_init__(self) -> None:
        if self.uncertainty_dtype not in MAP_DTYPES:
            raise ValueError(f"uncertainty_dtype must be one of {MAP_DTYPES}, got {self.uncertainty_dtype!r}")
        if self.probabilities_dtype not in PROB_DTYPES:
            raise ValueError(f"probabilities_dtype must be one of {PROB_DTYPES}, got {self.probabilities_dtype!r}")

    def key(self) -> dict:
        """The options that change the files: a finished case must have been written with them."""
        return asdict(self)


def planned_outputs(name: str, options: OutputOptions, dicom: bool) -> dict[str, str]:
    """``{kind: file name}`` of what a case writes under ``options`` (the JSON not included)."""
    out = {"segmentation": f"{name}.nii.gz", "uncertainty": f"{name}_uncertainty.nii.gz"}
    if options.probabilities:
        out["probabilities"] = f"{name}_probs.nii.gz"
    if options.preview:
        out["preview"] = f"{name}.png"
    if options.dicom_seg and dicom:
        out["dicom_seg"] = f"{name}_seg.dcm"
    return out


# ------------------------------------------------------------------------------ writers
def _scaled(array: np.ndarray, dtype: str) -> tuple[np.ndarray, float | None]:
    """Values in [0, 1] as stored for ``dtype``, and the scl_slope to set (module docstring)."""
    a = np.clip(array, 0.0, 1.0)
    if dtype == "uint8":
        return np.rint(a * 255.0).astype(np.uint8), None
    if dtype == "float16":
        return np.rint(a * 65535.0).astype(np.uint16), 1.0 / 65535.0
    return a.astype(np.float32), None


def write_map(dest: Path, volume, array: np.ndarray, dtype: str) -> Path:
    """Write a [0, 1] map (``(X, Y, Z)``, or ``(X, Y, Z, C)`` for one volume per class) in the
    geometry of ``volume`` as NIfTI, atomically.

    nibabel, not :func:`medssl.data.io.write_volume` (SimpleITK): that writer takes 3D scalar
    volumes only and cannot set ``scl_slope``, which the float16 form needs.
    """
    import nibabel as nib

    from medssl.core.atomic import write_atomic

    data, slope = _scaled(array, dtype)
    affine = volume.affine  # RAS, the NIfTI convention
    img = nib.Nifti1Image(data, affine)
    img.header.set_qform(affine, code=1)
    img.header.set_sform(affine, code=1)
    if slope is not None:
        img.header.set_slope_inter(slope, 0.0)
    return write_atomic(dest, write_path=lambda tmp: nib.save(img, str(tmp)))


def _canonical(array: np.ndarray, volume) -> tuple[np.ndarray, tuple[float, float, float]]:
    """``array`` with its axes permuted and flipped to the closest of LPS (index grows to the
    patient's left, posterior, superior), and the spacing in that order: mid-slices then show
    in the radiological convention whatever the file's orientation (nibabel's orientation tools,
    given the LPS affine, so that "canonical" means LPS+ rather than RAS+)."""
    import nibabel.orientations as nio

    ornt = nio.io_orientation(volume.affine_lps)  # row k: (world axis, flip) of array axis k
    out = nio.apply_orientation(array, ornt)
    spacing = [0.0, 0.0, 0.0]
    for axis, (world, _) in enumerate(ornt):
        spacing[int(world)] = volume.spacing[axis]
    return out, tuple(spacing)


def write_preview(dest: Path, image: np.ndarray, label: np.ndarray, uncertainty: np.ndarray, volume,
                  class_names: list[str], title: str) -> Path:
    """A PNG of the axial, coronal and sagittal mid-slices: the image with the label overlaid
    (top row) and with the uncertainty overlaid (bottom row), at the voxels' physical aspect."""
    import io

    import matplotlib
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colors import ListedColormap
    from matplotlib.figure import Figure

    from medssl.core.atomic import write_atomic_bytes

    img, sp = _canonical(np.asarray(image, dtype=np.float32), volume)
    lab, _ = _canonical(label, volume)
    unc, _ = _canonical(uncertainty, volume)
    finite = img[np.isfinite(img)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    mid = [s // 2 for s in img.shape]
    # (slice, aspect, origin): axial rows = posterior-going y; coronal / sagittal superior up
    views = [
        ("axial", lambda a: a[:, :, mid[2]].T, sp[1] / sp[0], "upper"),
        ("coronal", lambda a: a[:, mid[1], :].T, sp[2] / sp[0], "lower"),
        ("sagittal", lambda a: a[mid[0], :, :].T, sp[2] / sp[1], "lower"),
    ]
    n = max(len(class_names), 2)
    colors = matplotlib.colormaps["tab10"](np.arange(n) % 10)
    colors[0, 3] = 0.0  # background transparent
    label_cmap = ListedColormap(colors)
    # a Figure with its own Agg canvas, not pyplot: this runs in the writer thread, and pyplot's
    # global figure registry is not thread-safe
    fig = Figure(figsize=(10.5, 7.0), dpi=80)
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, 3)
    for col, (name, cut, aspect, origin) in enumerate(views):
        for row in range(2):
            ax = axes[row, col]
            ax.imshow(cut(img), cmap="gray", vmin=lo, vmax=hi, aspect=aspect, origin=origin, interpolation="nearest")
            if row == 0:
                ax.imshow(cut(lab), cmap=label_cmap, vmin=0, vmax=n - 1, alpha=0.45, aspect=aspect, origin=origin,
                          interpolation="nearest")
            else:
                shown = ax.imshow(cut(unc), cmap="magma", vmin=0, vmax=1, alpha=0.55, aspect=aspect, origin=origin,
                                  interpolation="nearest")
            ax.set_title(f"{name} {'label' if row == 0 else 'uncertainty'}", fontsize=9)
            ax.axis("off")
    fig.colorbar(shown, ax=axes.ravel().tolist(), shrink=0.5, label="uncertainty (normalised entropy)")
    fig.suptitle(title, fontsize=10)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic_bytes(dest, buf.getvalue())


# ------------------------------------------------------------------------------ figures
def case_figures(pred, class_names: list[str]) -> dict:
    """Volumes (mL), mean uncertainties and the OOD score of one prediction."""
    voxel_ml = float(np.prod(pred.volume.spacing)) / 1000.0
    counts = np.bincount(pred.label.ravel(), minlength=len(class_names))
    unc = pred.uncertainty
    fg = pred.label > 0
    return {
        "volumes_ml": {name: round(float(counts[k]) * voxel_ml, 4) for k, name in enumerate(class_names) if k > 0},
        "mean_uncertainty": {
            "foreground": round(float(unc[fg].mean()), 5) if fg.any() else None,
            "overall": round(float(unc.mean()), 5),
        },
        "ood_score": round(float((unc > OOD_THRESHOLD).mean()), 5),
        "confidence": round(float(pred.confidence), 5),
    }


# ------------------------------------------------------------------------------ resume
def read_record(path: Path) -> dict | None:
    """A case JSON, or ``None`` when absent or unreadable (then the case is redone)."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def finished_record(out: Path, name: str, input_sha256: str, model_sha256: str, options: OutputOptions,
                    dicom: bool) -> dict | None:
    """The JSON of case ``name`` when it is finished for this input, model and options (module
    docstring), else ``None``."""
    rec = read_record(out / f"{name}.json")
    if rec is None or rec.get("input_sha256") != input_sha256 or rec.get("model_sha256") != model_sha256:
        return None
    if rec.get("output_options") != options.key():
        return None
    files = rec.get("outputs") or {}
    want = planned_outputs(name, options, dicom)
    if rec.get("dicom_seg_skipped"):
        want.pop("dicom_seg", None)  # the source could not be referenced: nothing to redo
    for kind, fname in want.items():
        entry = files.get(kind)
        if not isinstance(entry, dict) or entry.get("file") != fname:
            return None
        path = out / fname
        if not path.is_file() or path.stat().st_size != entry.get("bytes"):
            return None
    return rec


def output_entry(path: Path) -> dict[str, Any]:
    return {"file": path.name, "bytes": path.stat().st_size}


def summary_row(rec: dict, status: str) -> dict:
    """One ``summary.csv`` row of a case JSON."""
    row = {"case": rec.get("case"), "status": status, "input": rec.get("input", {}).get("display")}
    for k, v in (rec.get("volumes_ml") or {}).items():
        row[f"volume_ml_{k}"] = v
    mu = rec.get("mean_uncertainty") or {}
    row["mean_uncertainty_foreground"] = mu.get("foreground")
    row["mean_uncertainty_overall"] = mu.get("overall")
    row["ood_score"] = rec.get("ood_score")
    row["seconds"] = (rec.get("timings_s") or {}).get("total")
    row["warnings"] = len(rec.get("warnings") or [])
    return row


# ------------------------------------------------------------------------------ one case
def versions() -> dict[str, str]:
    """Versions of what made the outputs."""
    import sys

    import monai
    import torch

    from medssl import __version__

    out = {"medssl": __version__, "torch": torch.__version__, "monai": monai.__version__, "numpy": np.__version__,
           "python": sys.version.split()[0]}
    if "highdicom" in sys.modules:
        out["highdicom"] = sys.modules["highdicom"].__version__
    return out


class CaseWriter:
    """Writes the outputs and the JSON of one case, and tells finished cases (module docstring).

    The batch engine (:mod:`medssl.inference.infer`) reads, predicts and calls
    :meth:`finished` / :meth:`write`; another export (pseudo-labels with a review manifest) can
    subclass this and override :meth:`write` without a second engine.

    Args:
        out: the output folder.
        options: what to write.
        model: facts of the model for the JSON (checkpoint, sha256, method, classes, ...); its
            ``"sha256"`` is the model hash that resume compares.
        class_names: the classes, index 0 the background.
        plan: the checkpoint's preprocessing plan as JSON, or ``None``.
    """

    def __init__(self, out: Path, options: OutputOptions, model: dict, class_names: list[str], plan: dict | None = None):
        self.out, self.options, self.model = Path(out), options, dict(model)
        self.class_names, self.plan = list(class_names), plan
        self._versions = versions()

    @property
    def keep_probabilities(self) -> bool:
        return self.options.probabilities

    def finished(self, case, input_sha256: str) -> dict | None:
        """The JSON of ``case`` when it is finished for this input, model and options."""
        return finished_record(self.out, case.name, input_sha256, self.model["sha256"], self.options, case.is_dicom)

    def write(self, case, loaded, pred, input_sha256: str, timings: dict, extra: dict | None = None) -> dict:
        """Write every output of ``case`` (atomically), then its JSON; returns the JSON record.

        Args:
            case: the :class:`~medssl.inference.inputs.CaseInput`.
            loaded: its :class:`~medssl.inference.inputs.LoadedCase`.
            pred: the :class:`~medssl.inference.predictor.Prediction`.
            input_sha256: :meth:`CaseInput.sha256`.
            timings: seconds so far (``hash``, ``read``, ``predict``); ``write`` and ``total`` are added.
            extra: more top-level JSON fields (the engine's rank).
        """
        import time

        from medssl.core.jsonfile import write_json
        from medssl.data.io import write_volume

        t0 = time.perf_counter()
        names = planned_outputs(case.name, self.options, loaded.dicom is not None)
        warnings = list(loaded.warnings)
        outputs: dict[str, dict] = {}
        path = write_volume(pred.as_volume(pred.label.astype(np.uint8)), self.out / names["segmentation"])
        outputs["segmentation"] = output_entry(path)
        path = write_map(self.out / names["uncertainty"], pred.volume, pred.uncertainty, self.options.uncertainty_dtype)
        outputs["uncertainty"] = output_entry(path)
        if "probabilities" in names:
            probs = np.moveaxis(pred.probabilities, 0, -1)  # (C, X, Y, Z) -> (X, Y, Z, C), NIfTI's 4th axis
            path = write_map(self.out / names["probabilities"], pred.volume, probs, self.options.probabilities_dtype)
            outputs["probabilities"] = output_entry(path)
        if "preview" in names:
            path = write_preview(self.out / names["preview"], loaded.volumes[0].array, pred.label, pred.uncertainty,
                                 pred.volume, self.class_names, case.name)
            outputs["preview"] = output_entry(path)
        seg_skipped = None
        if "dicom_seg" in names:
            from medssl.inference.dicom_seg import dicom_seg_blocker, write_dicom_seg

            seg_skipped = dicom_seg_blocker(loaded.dicom.headers)
            if seg_skipped:
                warnings.append(seg_skipped)
            else:
                path = write_dicom_seg(self.out / names["dicom_seg"], pred.label, loaded.dicom, self.class_names,
                                       self._versions["medssl"])
                outputs["dicom_seg"] = output_entry(path)
        vol = loaded.volumes[0]
        timings = {**timings, "write": time.perf_counter() - t0}
        timings["total"] = sum(timings.values())
        record = {
            "case": case.name,
            "input_sha256": input_sha256,
            "model_sha256": self.model["sha256"],
            "input": {
                "display": case.display,
                "kind": "dicom" if loaded.dicom is not None else "file",
                "channels": len(loaded.volumes),
                "files": len(case.files()),
                "geometry": vol.geometry_dict(),
                "dtype": str(vol.array.dtype),
                **case.info,
            },
            "model": self.model,
            "plan": self.plan,
            "classes": self.class_names,
            **case_figures(pred, self.class_names),
            "ood_definition": OOD_DEFINITION,
            "uncertainty_definition": "normalised entropy of the fused class distribution, in [0, 1]",
            "outputs": outputs,
            "output_options": self.options.key(),
            "dicom_seg_skipped": seg_skipped,
            "warnings": warnings,
            "timings_s": {k: round(v, 3) for k, v in timings.items()},
            "versions": self._versions,
            **(extra or {}),
        }
        write_json(self.out / f"{case.name}.json", record)
        return record
