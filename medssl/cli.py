"""The ``medssl`` command: a thin typer layer over importable functions.

Every command parses its options, loads what it needs and calls one function; heavy imports
(torch, MONAI, SimpleITK) happen inside the command bodies so that ``medssl --help`` is instant.
User errors print one line and exit 1 (:class:`medssl.errors.MedsslError`, and ``OSError`` on
a path the user gave: missing, not writable, a file where a folder is expected); usage errors
(a bad option value) exit 2, as typer does; Ctrl-C exits 130 and says how to continue.
``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from medssl import __version__
from medssl.errors import MedsslError, describe_os_error

app = typer.Typer(
    name="medssl",
    help="Semi- and self-supervised learning for 3D medical imaging with scarce labels.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
data_app = typer.Typer(help="Inspect, check and cache data.", no_args_is_help=True)
app.add_typer(data_app, name="data")
eval_app = typer.Typer(help="Evaluate pretrained representations (MedMNIST SSL benchmark).", no_args_is_help=True)
app.add_typer(eval_app, name="eval")

_STATE = {"debug": bool(os.environ.get("MEDSSL_DEBUG"))}


def _version(value: bool) -> None:
    if value:
        typer.echo(f"medssl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        Optional[bool], typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    if debug:
        _STATE["debug"] = True


# --------------------------------------------------------------------------------------- data
@data_app.command("info")
def data_info(
    path: Annotated[Path, typer.Argument(help="NIfTI/NRRD/MHA file, DICOM series folder or dataset folder.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    series: Annotated[
        Optional[str], typer.Option(help="DICOM folder with several series: the series key (or a prefix) to read.")
    ] = None,
) -> None:
    """Shape, spacing, origin, direction, orientation, dtype and intensity range of a volume
    (or, for a dataset folder, its channels, labels and cases per split).

    Arrays are in (x, y, z) order everywhere in medssl; spacing is in the same order, in mm;
    origin/direction are LPS (as ITK/DICOM); orientation is the RAS+ axis code (as nibabel).
    """
    from medssl.data.io import read_volume
    from medssl.data.volume import volume_info

    if path.is_dir() and (path / "dataset.json").is_file():
        from medssl.data.dataset_info import dataset_info, format_dataset_info

        dinfo = dataset_info(path)
        typer.echo(json.dumps(dinfo) if as_json else format_dataset_info(dinfo))
        return

    info = volume_info(read_volume(path, series=series))
    info = {"path": str(path), **info}
    if as_json:
        typer.echo(json.dumps(info))
        return
    fmt = lambda v: ", ".join(f"{x:.4g}" for x in v)  # noqa: E731
    d = info["direction"]
    lines = [
        f"path         {info['path']}",
        f"format       {info.get('format', '?')}" + (f" ({info['modality']})" if info.get("modality") else ""),
        f"shape        {' x '.join(map(str, info['shape']))}   (x, y, z)",
        f"spacing      {fmt(info['spacing'])} mm",
        f"origin       {fmt(info['origin'])} mm (LPS)",
        f"direction    [{fmt(d[0:3])}] [{fmt(d[3:6])}] [{fmt(d[6:9])}]",
        f"orientation  {info['orientation']} (RAS+ code)",
        f"dtype        {info['dtype']}",
        f"range        {info['min']:.6g} .. {info['max']:.6g}   (mean {info['mean']:.4g})",
    ]
    if info.get("nonfinite_voxels"):
        lines.append(f"non-finite   {info['nonfinite_voxels']} voxels (NaN/inf)")
    typer.echo("\n".join(lines))


@data_app.command("check")
def data_check(
    root: Annotated[Path, typer.Argument(help="Dataset folder (medssl / nnU-Net v2 layout).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print problems as JSON.")] = False,
    resample_channels: Annotated[bool, typer.Option(
        help="Channels on another grid than channel 0 are resampled by the run (data.resample_channels): warn, don't fail.")] = False,
) -> None:
    """Report every problem per case (geometry mismatch, missing channels, undeclared labels, NaNs, empty or unreadable files)."""
    from medssl.core.runtime import interactive
    from medssl.data.check import check_dataset

    report = check_dataset(root, progress=not as_json and interactive(), resample_channels=resample_channels)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        typer.echo(report.format())
    if not report.ok:
        raise typer.Exit(1)


@data_app.command("plan")
def data_plan(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    out: Annotated[Optional[Path], typer.Option(help="Write the plan here (plan.json); use it with --set data.plan=PATH.")] = None,
    anisotropic: Annotated[bool, typer.Option(help="Target the median spacing instead of an isotropic one.")] = False,
) -> None:
    """The preprocessing plan of a dataset (target spacing, orientation, CT windows), from its training cases."""
    from medssl.data.dataset import list_cases, read_dataset_json
    from medssl.data.plan import make_plan, write_plan

    spec = read_dataset_json(root)
    plan = make_plan(list_cases(root, "train", spec), spec.modalities, isotropic=not anisotropic)
    if out is not None:
        write_plan(plan, out)
    fmt = lambda v: " x ".join(f"{x:g}" for x in v)  # noqa: E731
    typer.echo(f"{plan.n_cases} training cases: median spacing {fmt(plan.median_spacing)} mm, median shape "
               f"{fmt(plan.median_shape)}\ntarget spacing {fmt(plan.spacing)} mm, orientation LPS\nintensity "
               + ", ".join(f"{m}: {d['mode']}" + (f" window {d['window'][0]:.4g}..{d['window'][1]:.4g}" if d['mode'] == 'ct' else "")
                           for m, d in zip(spec.modalities, plan.intensity))
               + (f"\nwritten to {out}" if out else ""))


@data_app.command("cache")
def data_cache(
    root: Annotated[Path, typer.Argument(help="Dataset folder.")],
    cache_dir: Annotated[Optional[Path], typer.Option(help="Cache folder (default $MEDSSL_CACHE/volumes/<dataset>-<hash>, never inside the dataset).")] = None,
) -> None:
    """Convert every volume of a dataset once into the memory-mapped cache used for training."""
    from medssl.core.runtime import interactive
    from medssl.data.cache import cache_dataset

    out = cache_dataset(root, cache_dir=cache_dir, progress=interactive())
    typer.echo(f"cache ready: {out}")


@data_app.command("import-msd")
def data_import_msd(
    src: Annotated[Path, typer.Argument(help="A Decathlon task folder (dataset.json, imagesTr/, labelsTr/).")],
    dst: Annotated[Path, typer.Argument(help="New medssl dataset folder.")],
    seed: Annotated[int, typer.Option(help="Seed of the train / val / test split of the labeled cases.")] = 0,
    val: Annotated[Optional[int], typer.Option(min=1, help="Validation cases (default 10%).")] = None,
    test: Annotated[Optional[int], typer.Option(min=1, help="Test cases (default 20%).")] = None,
) -> None:
    """Import a Medical Segmentation Decathlon task as a medssl dataset with a seeded val/test split."""
    from medssl.core.runtime import interactive
    from medssl.data.msd import import_msd

    out = import_msd(src, dst, seed=seed, n_val=val, n_test=test, progress=interactive())
    typer.echo(f"dataset written to {out} (split recorded in its dataset.json; check it with `medssl data check {out}`)")


@data_app.command("medmnist")
def data_medmnist(
    flag: Annotated[str, typer.Argument(help="Dataset flag, e.g. breastmnist, adrenalmnist3d.")],
    size: Annotated[int, typer.Option(help="Image size: 28, 64, 128, 224 (2D) or 28, 64 (3D).")] = 28,
    root: Annotated[
        Optional[Path], typer.Option(help="Folder with the official .npz files (default $MEDMNIST_ROOT).")
    ] = None,
    download: Annotated[bool, typer.Option(help="Download the file if it is missing (needs internet).")] = False,
) -> None:
    """Verify a local MedMNIST file against the official md5 and print its splits."""
    from medssl.medmnist.data import medmnist_summary

    typer.echo(json.dumps(medmnist_summary(flag, size=size, root=root, download=download), indent=2))


# ------------------------------------------------------------------------------ sample data
@app.command("sample-data")
def sample_data(
    out: Annotated[Path, typer.Argument(help="Folder to create the dataset in.")] = Path("sample_data/phantoms"),
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same data.")] = 0,
    labeled: Annotated[int, typer.Option(min=0, help="Labeled training cases.")] = 4,
    unlabeled: Annotated[int, typer.Option(min=0, help="Unlabeled cases.")] = 36,
    val: Annotated[int, typer.Option(min=0, help="Labeled validation cases (imagesVal/): checkpoint selection.")] = 4,
    test: Annotated[int, typer.Option(min=0, help="Labeled test cases (imagesTs/): read once, for the final figures.")] = 8,
    force: Annotated[bool, typer.Option(help="Overwrite an existing dataset in OUT.")] = False,
    channels: Annotated[int, typer.Option(
        min=1, max=2, help="1: abdominal MRI-like phantoms; 2: two-channel phantoms whose classes need both channels.")] = 1,
) -> None:
    """Generate a small 3D segmentation dataset of phantoms (organ-like shapes, noise, bias field)."""
    from medssl.core.runtime import interactive
    from medssl.data.phantoms import generate_sample_data

    path = generate_sample_data(out, seed=seed, n_labeled=labeled, n_unlabeled=unlabeled, n_val=val, n_test=test,
                                force=force, progress=interactive(), channels=channels)
    typer.echo(f"sample data written to {path}")


# ---------------------------------------------------------------------------------- training
@app.command("train")
def train(
    config: Annotated[Path, typer.Argument(help="YAML recipe, e.g. configs/supervised/phantoms.yaml.")],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="Override a config key: --set trainer.max_steps=100.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder (default runs/<name>).")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from its last checkpoint.")] = False,
    skip_checks: Annotated[bool, typer.Option(help="Do not check the cases before training (they are checked once per file version anyway).")] = False,
) -> None:
    """Train a model from a recipe; writes config, checkpoints, metrics log and metrics.json."""
    from medssl.config import load_config
    from medssl.engines.train import run_training

    cfg = load_config(config, set_)
    result = run_training(cfg, out=out, resume=resume, skip_checks=skip_checks)
    if result.get("rank", 0) == 0:
        typer.echo(result["summary"])


class _Split(str, Enum):
    unlabeled = "unlabeled"
    train = "train"
    val = "val"
    test = "test"


@app.command("pseudo-label")
def pseudo_label(
    checkpoint: Annotated[Path, typer.Option(help="A segmentation run's checkpoint (best.ckpt); UMCT runs add views and MC uncertainty.")],
    data: Annotated[Path, typer.Option(help="Dataset folder whose unlabeled images to label.")],
    out: Annotated[Path, typer.Option(help="Output folder (labels/, views/, uncertainty/, manifest.json).")],
    split: Annotated[_Split, typer.Option(help="Which images.")] = _Split.unlabeled,
    mc_samples: Annotated[Optional[int], typer.Option(min=1, help="MC-dropout passes (default: the run's).")] = None,
    force: Annotated[bool, typer.Option(help="Start over when OUT holds another checkpoint's or dataset's export.")] = False,
    skip_checks: Annotated[bool, typer.Option(help="Do not check the images before predicting.")] = False,
) -> None:
    """Fused pseudo-labels, each view's prediction, uncertainty and confidence per case, with a review manifest."""
    from medssl.inference.pseudo_label import export_pseudo_labels

    path = export_pseudo_labels(checkpoint, data, out, split=split.value, mc_samples=mc_samples, force=force,
                                skip_checks=skip_checks)
    typer.echo(f"manifest: {path}")


@app.command("review")
def review(
    export: Annotated[Path, typer.Argument(help="A pseudo-label export folder of `medssl pseudo-label` (or its manifest.json).")],
    reviewer: Annotated[Optional[str], typer.Option(help="Name recorded with each decision (default: $MEDSSL_REVIEWER or the login name).")] = None,
) -> None:
    """Review pseudo-labels in napari: least confident cases first, accept / reject / edit, saved to reviewed/.

    Needs napari and the plugin: pip install -e "plugins/napari-medssl" "napari>=0.5" PySide6-Essentials
    (`make test` installs them). Decisions go to manifest.json and review_log.jsonl in EXPORT.
    """
    import importlib.util

    missing = [m for m in ("napari", "napari_medssl") if importlib.util.find_spec(m) is None]
    if missing:
        raise MedsslError(f"{' and '.join(missing)} not installed: pip install -e plugins/napari-medssl "
                          "'napari>=0.5' PySide6-Essentials (from the medssl repository)")
    from medssl.inference.review_manifest import ReviewManifest
    from napari_medssl.session import find_manifest

    ReviewManifest.read(find_manifest(export))  # one clear line for a folder that is not an export
    from napari_medssl._launch import run

    run(export, reviewer=reviewer)


class _MapDtype(str, Enum):
    uint8 = "uint8"
    float16 = "float16"
    float32 = "float32"


class _ProbDtype(str, Enum):
    float16 = "float16"
    float32 = "float32"


class _Orientation(str, Enum):
    axial = "axial"
    coronal = "coronal"
    sagittal = "sagittal"


@app.command("infer")
def infer(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", "--model", help=(
        "A medssl segmentation checkpoint (best.ckpt of any method), or a model folder of `medssl export` "
        "(every file verified against its manifest)."))],
    input: Annotated[Path, typer.Option("--input", help=(
        "A volume file; a folder of NIfTI/NRRD/MHA files (<case>_0000, _0001... for several channels); a folder "
        "tree of DICOM files (every series is a case); or a CSV 'case,<channel>,...' of paths relative to it."))],
    output: Annotated[Path, typer.Option(help="Output folder: <case>.nii.gz, <case>_uncertainty.nii.gz, <case>.json, "
                                              "summary.csv, errors.csv.")],
    probabilities: Annotated[bool, typer.Option(help="Also write <case>_probs.nii.gz (X, Y, Z, classes).")] = False,
    probabilities_dtype: Annotated[_ProbDtype, typer.Option(
        help="float16 is stored as uint16 with scl_slope 1/65535 (NIfTI has no half float).")] = _ProbDtype.float16,
    uncertainty_dtype: Annotated[_MapDtype, typer.Option(
        help="uint8: normalised entropy x 255; float16: uint16 with scl_slope 1/65535; float32.")] = _MapDtype.uint8,
    preview: Annotated[bool, typer.Option(help="Also write <case>.png: mid-slices with label and uncertainty.")] = False,
    dicom_seg: Annotated[bool, typer.Option(help="DICOM input: also write <case>_seg.dcm referencing the series "
                                                 "(needs highdicom: pip install medssl[dicom]).")] = False,
    modality: Annotated[Optional[str], typer.Option(help="DICOM trees: only series of this Modality (CT, MR...).")] = None,
    min_slices: Annotated[Optional[int], typer.Option(min=1, help="DICOM trees: only series with at least N slices.")] = None,
    description: Annotated[Optional[str], typer.Option(
        help="DICOM trees: only series whose SeriesDescription matches this regular expression.")] = None,
    orientation: Annotated[Optional[_Orientation], typer.Option(
        help="DICOM trees: only axial, coronal or sagittal series (from ImageOrientationPatient).")] = None,
    channel_description: Annotated[Optional[list[str]], typer.Option(
        help="DICOM trees, multi-channel models: one SeriesDescription regex per channel, in channel order "
             "(--channel-description t1 --channel-description t2); each study becomes one case.")] = None,
    mc_samples: Annotated[Optional[int], typer.Option(min=1, help="MC-dropout passes (default: the run's).")] = None,
    device: Annotated[str, typer.Option(help="auto (this rank's GPU if any, else CPU), cpu, cuda:0...")] = "auto",
    force: Annotated[bool, typer.Option(help="Redo cases whose outputs are complete for the same input and model.")] = False,
    progress: Annotated[bool, typer.Option(help="Progress bar on a terminal (plain lines in a log either way).")] = True,
) -> None:
    """Segment every case of INPUT with a checkpoint, in each scan's own geometry, with uncertainty.

    Failed cases are listed in OUTPUT/errors.csv and the others go on; the exit code is 1 when any
    case failed. A rerun skips finished cases. Under torchrun each rank takes every W-th case.
    """
    from medssl.inference.case_outputs import OutputOptions
    from medssl.inference.infer import run_inference
    from medssl.inference.inputs import SeriesFilter

    options = OutputOptions(probabilities=probabilities, probabilities_dtype=probabilities_dtype.value,
                            uncertainty_dtype=uncertainty_dtype.value, preview=preview, dicom_seg=dicom_seg)
    if dicom_seg:
        try:
            import highdicom  # noqa: F401
        except ImportError as exc:
            raise typer.BadParameter("needs highdicom: pip install 'medssl[dicom]'", param_hint="--dicom-seg") from exc
    series = SeriesFilter(modality=modality, min_slices=min_slices, description=description,
                          orientation=orientation.value if orientation else None,
                          channels=tuple(channel_description or ()))
    result = run_inference(checkpoint, input, output, options=options, series=series, force=force,
                           mc_samples=mc_samples, device=device, progress=progress, debug=_STATE["debug"])
    if result.notes and result.rank == 0:
        more = f"; ... and {len(result.notes) - 3} more" if len(result.notes) > 3 else ""
        typer.echo(f"{len(result.notes)} DICOM series left out: " + "; ".join(result.notes[:3]) + more, err=True)
    typer.echo(result.line(), err=not result.ok)
    if not result.ok:
        raise typer.Exit(1)


@app.command("export")
def export(
    run: Annotated[Path, typer.Argument(help="A run folder (its checkpoints/best.ckpt is exported) or a checkpoint file.")],
    out: Annotated[Path, typer.Option(help="The model folder to create: weights.safetensors, config.yaml, dataset.json, "
                                          "plan.json, model.json, manifest.json.")],
    force: Annotated[bool, typer.Option(help="Replace OUT when it already holds files.")] = False,
) -> None:
    """A model folder that travels: what inference needs and nothing else, with the sha256 of every file.

    Use it with `medssl infer --model OUT`; a changed or truncated file is refused.
    """
    from medssl.inference.export import export_model

    result = export_model(run, out, force=force)
    typer.echo(f"model folder {result['out']} from {result['checkpoint']}: {len(result['files'])} files, "
               f"manifest sha256 {result['manifest_sha256'][:12]}...")


@app.command("doctor")
def doctor(
    model: Annotated[Optional[Path], typer.Option(envvar="MEDSSL_MODEL", help=(
        "Also verify this model folder (or checkpoint) and rebuild its network (default $MEDSSL_MODEL)."))] = None,
    require_cuda: Annotated[bool, typer.Option(help="Fail when no CUDA device is usable.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Versions, devices (CPU threads, CUDA, bf16), cache folder writable, offline mode, and the model.

    Exit code 1 when any check fails (the containers' HEALTHCHECK).
    """
    from medssl.doctor import format_checks, healthy, run_doctor, to_json

    checks = run_doctor(model, require_cuda=require_cuda)
    typer.echo(json.dumps(to_json(checks), indent=2) if as_json else format_checks(checks))
    if not healthy(checks):
        raise typer.Exit(1)


@app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Finished run folders (grouped by recipe name).")],
    out: Annotated[Optional[Path], typer.Option(help="Write the markdown table here.")] = None,
    baseline: Annotated[Optional[str], typer.Option(help="Recipe name to compare against.")] = None,
    title: Annotated[Optional[str], typer.Option(help="A heading above the table (markdown '# TITLE').")] = None,
    intro: Annotated[Optional[str], typer.Option(help="A paragraph between the heading and the table.")] = None,
) -> None:
    """Table of test Dice / HD95 per recipe (checkpoints selected on val): mean ± sd over seeds, difference to a baseline."""
    from medssl.core.atomic import write_atomic_text
    from medssl.eval.compare import compare_runs

    table, _ = compare_runs(runs, baseline=baseline)
    table = "".join([f"# {title}\n\n" if title else "", f"{intro}\n\n" if intro else "", table])
    if out is not None:
        write_atomic_text(out, table)
    typer.echo(table)


# -------------------------------------------------------------------------------- evaluation
@eval_app.command("medmnist")
def eval_medmnist(
    config: Annotated[Path, typer.Argument(help="YAML recipe, e.g. configs/medmnist/breastmnist_ssl.yaml.")],
    set_: Annotated[
        Optional[list[str]],
        typer.Option("--set", help="Override a key: --set eval.seeds=[0] or --set 'pretrain.*.epochs=1'."),
    ] = None,
    out: Annotated[
        Optional[Path], typer.Option(help="Run folder (default runs/<name>); an earlier run there resumes.")
    ] = None,
    progress: Annotated[
        bool, typer.Option(help="Progress bars on a terminal; without a terminal or with --no-progress, a plain "
                                "timestamped line per stage and at most one a minute in between.")
    ] = True,
    threads: Annotated[
        Optional[int], typer.Option(min=1, help="torch CPU threads (default: all cores), as trainer.threads of "
                                                "`medssl train`.")
    ] = None,
    root: Annotated[
        Optional[list[Path]], typer.Option(help="Folder of the MedMNIST .npz files; repeat for several, searched in "
                                                "order (replaces the config's root; default $MEDMNIST_ROOT, folders "
                                                "separated by ':').")
    ] = None,
) -> None:
    """SSL pretraining + linear / kNN / fine-tune evaluation on MedMNIST, with OOD and transfer.

    Writes results.json, results.csv, report.md and PNG plots into OUT, rewritten after every
    record: an interrupted run continues where it stopped when started again with the same OUT.
    """
    from medssl.medmnist.config import load_medmnist_eval_config
    from medssl.medmnist.run import run_medmnist_eval

    cfg = load_medmnist_eval_config(config, set_)
    if root:
        cfg = cfg.model_copy(update={"root": list(root)})
    out = out if out is not None else Path("runs") / cfg.name
    results = run_medmnist_eval(cfg, out, progress=progress, threads=threads)
    n = {k: len(results.get(k) or []) for k in ("records", "ood", "transfer")}
    typer.echo(f"{n['records']} records, {n['ood']} OOD, {n['transfer']} transfer results; report: {out / 'report.md'}")


def main() -> None:
    """Console entry point: runs the app and turns user errors into one-line messages.

    First, other libraries' caches follow ``MEDSSL_CACHE`` (:func:`medssl.core.paths.route_caches`),
    ``MEDSSL_OFFLINE=1`` blocks network access (:mod:`medssl.core.offline`), and a uid without a
    user name (``docker run --user 12345``) gets one (:func:`medssl.core.runtime.ensure_user_name`).
    """
    from medssl.core.offline import install_from_env
    from medssl.core.paths import route_caches
    from medssl.core.runtime import ensure_user_name

    route_caches()
    install_from_env()
    ensure_user_name()
    try:
        app()  # standalone: typer handles usage errors and exits itself
    except MedsslError as exc:
        if _STATE["debug"]:
            raise
        code = getattr(exc, "exit_code", 1)
        typer.echo(f"{'interrupted' if code == 130 else 'error'}: {exc}", err=True)
        sys.exit(code)
    except OSError as exc:  # a path the user gave: missing, not writable, a file instead of a folder
        if _STATE["debug"]:
            raise
        typer.echo(f"error: {describe_os_error(exc)}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("interrupted (a training run continues with --resume; `medssl eval` when run again)", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
