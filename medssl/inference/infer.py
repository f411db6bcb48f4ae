"""``medssl infer``: a trained segmentation model over a batch of scans, in each scan's own geometry.

The engine: :func:`run_inference` finds the cases (:mod:`medssl.inference.inputs`), takes this
process's share of them, and for each case hashes and reads it, predicts it with the checkpoint's
:class:`~medssl.inference.predictor.Predictor` (the same code as validation: the run's intensity
normalisation, its preprocessing plan, Gaussian sliding window, the model's ensembling and
uncertainty, probabilities mapped back to the input grid before the argmax) and writes its
outputs (:class:`~medssl.inference.case_outputs.CaseWriter`). Pseudo-labelling can use the same
loop through :func:`run_cases` with its own writer.

* **Overlap**: a reader thread hashes and reads the next case while the network runs, and a
  writer thread writes the previous case's files (at most one case waiting on each side, so at
  most three cases are in memory). numpy, zlib and torch release the GIL in their heavy parts,
  so a thread is enough; a process pool would copy every volume between processes.
* **Faults**: a case that cannot be listed, hashed, read, predicted or written goes to
  ``errors.csv`` (case, input, one-line reason) and the run goes on; :attr:`InferResult.ok` says
  whether every case succeeded (the command's exit code). Unexpected exceptions are caught per
  case too (a batch over hundreds of scans must not stop at one), unless ``debug``.
* **Resume**: a case whose JSON records the same input sha256, model sha256 and output options,
  and whose listed files all exist with their recorded sizes, is skipped (``force`` redoes it).
* **Tables**: ``summary.csv`` (one row per case: done, skipped or failed) and ``errors.csv``,
  rewritten atomically after every case. ``errors.csv`` is removed at the end of a run without
  failures, so it never describes an earlier run.
* **Sharding** (:func:`shard_of_env`): under ``torchrun`` (``RANK`` / ``WORLD_SIZE``, or
  ``LOCAL_RANK`` / ``LOCAL_WORLD_SIZE``), rank ``r`` of ``W`` takes ``cases[r::W]`` and writes its
  own case files and ``summary.rank<r>.csv`` / ``errors.rank<r>.csv``. No process group is needed:
  when a rank finishes it merges every rank's tables into ``summary.csv`` / ``errors.csv`` under
  an exclusive file lock; each rank writes its own tables before it takes the lock, so the last
  rank to finish writes the complete merge.
"""

from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from medssl.errors import DataError, MedsslError, describe_os_error
from medssl.inference.case_outputs import CaseWriter, OutputOptions, summary_row
from medssl.inference.inputs import SeriesFilter, find_cases

__all__ = ["InferResult", "run_cases", "run_inference", "shard_of_env"]

log = logging.getLogger(__name__)

SUMMARY_FIRST = ("case", "status", "input")
ERROR_FIELDS = ("case", "input", "reason")


def shard_of_env(env: dict | None = None) -> tuple[int, int]:
    """``(rank, world_size)`` of this process in a ``torchrun`` (or Lightning) launch; ``(0, 1)``
    when not launched so. ``RANK`` / ``WORLD_SIZE`` (global) win over ``LOCAL_RANK`` /
    ``LOCAL_WORLD_SIZE`` (one node).

    Raises:
        DataError: a rank outside ``0 .. world_size - 1``.
    """
    env = os.environ if env is None else env
    if "WORLD_SIZE" in env or "RANK" in env:
        rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    elif "LOCAL_RANK" in env:
        rank, world = int(env["LOCAL_RANK"]), int(env.get("LOCAL_WORLD_SIZE", 1))
    else:
        return 0, 1
    if world < 1 or not 0 <= rank < world:
        raise DataError(f"rank {rank} of world size {world} in the environment is not a valid shard")
    return rank, world


@dataclass
class InferResult:
    """What a run did, for this process's share of the cases.

    Attributes:
        out: the output folder.
        done: cases predicted now.
        skipped: cases found finished (same input, model and options).
        failed: ``(case, input, reason)`` of the cases that failed.
        total: cases of this process.
        rank, world: this process's shard.
        notes: DICOM series left out by the series options.
    """

    out: Path
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str, str]] = field(default_factory=list)
    total: int = 0
    rank: int = 0
    world: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        """One line for the end of the command."""
        who = f"rank {self.rank}/{self.world}: " if self.world > 1 else ""
        text = (f"{who}{self.total} case(s): {len(self.done)} predicted, {len(self.skipped)} already done, "
                f"{len(self.failed)} failed")
        if self.failed:
            text += f" (see {self.out / _table('errors', self.rank, self.world)})"
        return text + f"; outputs in {self.out}"


def _table(kind: str, rank: int, world: int) -> str:
    return f"{kind}.csv" if world == 1 else f"{kind}.rank{rank}.csv"


def _one_line(exc: BaseException) -> str:
    """A user-facing reason in one line: a MedsslError's message, else the type and message."""
    if isinstance(exc, MedsslError):
        text = str(exc)
    elif isinstance(exc, OSError):
        text = describe_os_error(exc)
    else:
        text = f"{type(exc).__name__}: {exc}"
    return " ".join(text.split())[:1000]


# ------------------------------------------------------------------------------ per-case steps
@dataclass
class _Prepared:
    case: object
    sha: str | None = None
    loaded: object = None
    record: dict | None = None  # finished earlier
    error: str | None = None
    timings: dict = field(default_factory=dict)


def _prepare(case, writer: CaseWriter, force: bool, debug: bool) -> _Prepared:
    """Reader thread: hash, skip if finished, else read."""
    prep = _Prepared(case)
    try:
        if case.error:
            raise DataError(case.error)
        t0 = time.perf_counter()
        prep.sha = case.sha256()
        t1 = time.perf_counter()
        prep.timings["hash"] = t1 - t0
        if not force:
            prep.record = writer.finished(case, prep.sha)
            if prep.record is not None:
                return prep
        prep.loaded = case.read()
        prep.timings["read"] = time.perf_counter() - t1
    except Exception as exc:  # noqa: BLE001  every data fault becomes one errors.csv line
        if debug and not isinstance(exc, (MedsslError, OSError)):
            raise
        prep.error = case.scrub(_one_line(exc))
    return prep


class _Tables:
    """summary / errors tables of this process, rewritten after every case."""

    def __init__(self, out: Path, rank: int, world: int):
        self.out, self.rank, self.world = out, rank, world
        self.rows: list[dict] = []
        self.errors: list[dict] = []

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.write()

    def fail(self, case, reason: str) -> None:
        self.errors.append({"case": case.name, "input": case.display, "reason": reason})
        self.rows.append({"case": case.name, "status": "failed", "input": case.display})
        self.write()

    def write(self) -> None:
        from medssl.eval.tables import write_csv

        write_csv(self.out / _table("summary", self.rank, self.world), self.rows, first=SUMMARY_FIRST)
        errors = self.out / _table("errors", self.rank, self.world)
        if self.errors:
            write_csv(errors, self.errors, first=ERROR_FIELDS)
        else:
            errors.unlink(missing_ok=True)

    def merge(self) -> None:
        """All ranks' tables into summary.csv / errors.csv, under an exclusive lock (module docstring)."""
        import csv
        import fcntl

        from medssl.eval.tables import write_csv

        with open(self.out / ".merge.lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                for kind, first in (("summary", SUMMARY_FIRST), ("errors", ERROR_FIELDS)):
                    rows = []
                    for r in range(self.world):
                        path = self.out / _table(kind, r, self.world)
                        if path.is_file():
                            with open(path, newline="") as fh:
                                rows += list(csv.DictReader(fh))
                    if rows or kind == "summary":
                        write_csv(self.out / f"{kind}.csv", rows, first=first)
                    else:
                        (self.out / f"{kind}.csv").unlink(missing_ok=True)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------ the loop
def run_cases(predictor, cases: list, out: Path, writer: CaseWriter, force: bool = False, progress: bool = True,
              rank: int = 0, world: int = 1, debug: bool = False) -> InferResult:
    """Predict ``cases[rank::world]`` with ``predictor`` and write them with ``writer`` (module docstring).

    Args:
        predictor: a :class:`~medssl.inference.predictor.Predictor`.
        cases: all cases of the run (:func:`~medssl.inference.inputs.find_cases`), the same list
            in every process.
        out: the output folder.
        writer: writes one case and recognises finished ones.
        force: redo finished cases.
        progress: a bar on a terminal, plain lines otherwise (:mod:`medssl.inference.progress`).
        rank, world: this process's shard.
        debug: let unexpected exceptions (not data errors) propagate, with their traceback.
    """
    from medssl.core.runtime import interactive
    from medssl.inference.progress import CaseProgress

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    mine = cases[rank::world]
    result = InferResult(out, total=len(mine), rank=rank, world=world)
    tables = _Tables(out, rank, world)
    tables.write()
    bar = CaseProgress(len(mine), bar=interactive(progress), label="infer" if world == 1 else f"infer rank {rank}")

    def record_failure(case, reason: str) -> None:
        result.failed.append((case.name, case.display, reason))
        tables.fail(case, reason)
        bar.update(None)

    def failed(case, exc: BaseException) -> None:
        """One errors.csv line for ``exc``; with ``debug``, an unexpected exception propagates."""
        if debug and not isinstance(exc, (MedsslError, OSError)):
            raise exc
        record_failure(case, case.scrub(_one_line(exc)))

    def finish_write(job) -> None:
        case, future, t_predict = job
        try:
            record = future.result()
        except Exception as exc:  # noqa: BLE001
            failed(case, exc)
            return
        result.done.append(case.name)
        tables.add(summary_row(record, "done"))
        bar.update(t_predict)

    with ThreadPoolExecutor(1, thread_name_prefix="medssl-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="medssl-write") as writer_pool:
        nxt = reader.submit(_prepare, mine[0], writer, force, debug) if mine else None
        pending = None  # (case, future of its write, its predict seconds)
        for i, case in enumerate(mine):
            prep = nxt.result()
            nxt = reader.submit(_prepare, mine[i + 1], writer, force, debug) if i + 1 < len(mine) else None
            if prep.error is not None:
                record_failure(case, prep.error)
                continue
            if prep.record is not None:
                result.skipped.append(case.name)
                tables.add(summary_row(prep.record, "skipped"))
                bar.update(None)
                continue
            t0 = time.perf_counter()
            try:
                pred = predictor.predict_volume(prep.loaded.volumes, seed=case.name,
                                                keep_probabilities=writer.keep_probabilities)
            except Exception as exc:  # noqa: BLE001
                failed(case, exc)
                continue
            t_predict = time.perf_counter() - t0
            timings = {**prep.timings, "predict": t_predict}
            if pending is not None:
                finish_write(pending)
            extra = {"rank": rank, "world_size": world}
            pending = (case, writer_pool.submit(writer.write, case, prep.loaded, pred, prep.sha, timings, extra), t_predict)
            del pred, prep
        if pending is not None:
            finish_write(pending)
    bar.close()
    if world > 1:
        tables.merge()
    return result


def _device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0)) % torch.cuda.device_count()}"
    return "cpu"


def run_inference(
    checkpoint: str | Path,
    input: str | Path,
    out: str | Path,
    options: OutputOptions | None = None,
    series: SeriesFilter | None = None,
    force: bool = False,
    mc_samples: int | None = None,
    device: str = "auto",
    progress: bool = True,
    debug: bool = False,
) -> InferResult:
    """``medssl infer``: predict every case of ``input`` into ``out`` (module docstring).

    Args:
        checkpoint: a medssl segmentation checkpoint (any method).
        input: a volume file, a folder of volume files, a DICOM tree or a CSV list
            (:func:`~medssl.inference.inputs.find_cases`).
        out: the output folder (created).
        options: optional outputs (probabilities, preview, DICOM-SEG, map dtypes).
        series: which DICOM series of a tree to predict.
        force: redo cases found finished.
        mc_samples: MC-dropout passes (default the run's).
        device: ``"auto"`` (this rank's GPU if there is one, else CPU), ``"cpu"``, ``"cuda:0"``...
        progress: progress bar on a terminal / plain lines in a log.
        debug: let unexpected exceptions propagate.

    Raises:
        DataError: an unusable checkpoint, input or output folder (before any case is predicted).
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("--output must be a folder (or a path to create one), not a file", out)
    if not Path(input).exists():  # before the seconds of importing torch and loading the model
        raise DataError("no such file or folder", input)

    import torch

    from medssl.core.runtime import tune_allocator
    from medssl.inference.load import load_predictor
    from medssl.inference.model_package import model_sha256

    options = options or OutputOptions()
    rank, world = shard_of_env()
    dev = _device(device)
    if world > 1 and dev == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))  # ranks share the cores
    tune_allocator()
    predictor = load_predictor(checkpoint, mc_samples=mc_samples, device=dev)
    cases, notes = find_cases(input, predictor.spec.num_channels, series)
    cfg, spec = predictor.config, predictor.spec
    model = {
        "checkpoint": str(Path(checkpoint).resolve()),
        "sha256": model_sha256(checkpoint),
        "method": cfg.method,
        "channels": spec.modalities,
        "mc_samples": predictor.mc_samples,
        "roi_size": list(predictor.roi_size),
        "overlap": predictor.overlap,
        "precision": predictor.precision,
        "device": dev,
    }
    plan = predictor.plan.to_json() if predictor.plan is not None else None
    writer = CaseWriter(out, options, model, predictor.class_names, plan)
    result = run_cases(predictor, cases, out, writer, force=force, progress=progress, rank=rank, world=world, debug=debug)
    result.notes = notes
    return result
