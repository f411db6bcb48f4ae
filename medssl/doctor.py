"""``medssl doctor``: can this machine (or container) run medssl, and is the model intact?

One line per check: versions, the CPU (cores, torch threads, native bf16), CUDA (devices, bf16),
the cache folder (written to and removed), other libraries' cache folders, offline mode, and with
a model folder its verification and a rebuild of its network. A check's status is ``ok``,
``info``, ``warn`` (worth knowing, not fatal) or ``fail``; the command exits 1 when any check
fails, so it serves as a container HEALTHCHECK (``docker/Dockerfile``).
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

#: distributions medssl needs at run time (import names differ; versions come from metadata)
PACKAGES = ("torch", "monai", "pytorch-lightning", "numpy", "scipy", "SimpleITK", "nibabel", "pydicom",
            "safetensors", "typer")
OPTIONAL = ("highdicom",)


@dataclass
class Check:
    """One line of the report."""

    name: str
    status: str  # ok | info | warn | fail
    detail: str


def _versions() -> list[Check]:
    from importlib.metadata import PackageNotFoundError, version

    from medssl import __version__

    found, missing = [f"medssl {__version__}", f"python {platform.python_version()}"], []
    for dist in PACKAGES + OPTIONAL:
        try:
            found.append(f"{dist} {version(dist)}")
        except PackageNotFoundError:
            if dist not in OPTIONAL:
                missing.append(dist)
    checks = [Check("versions", "ok", ", ".join(found))]
    if missing:
        checks.append(Check("packages", "fail", "not installed: " + ", ".join(missing)))
    return checks


def _cpu_bf16() -> str:
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        flags = ""
    native = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    return f"native ({', '.join(native)})" if native else "emulated (no avx512_bf16/amx_bf16: bf16 may be slower than fp32)"


def _devices(require_cuda: bool) -> list[Check]:
    try:
        import torch
    except Exception as exc:  # noqa: BLE001  a broken torch install is what this command is for
        return [Check("torch", "fail", f"cannot import torch: {type(exc).__name__}: {exc}")]
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    checks = [Check("cpu", "ok", f"{usable} usable cores of {os.cpu_count()}, torch threads {torch.get_num_threads()}, "
                                 f"capability {torch.backends.cpu.get_cpu_capability()}, bf16 {_cpu_bf16()}")]
    built = torch.version.cuda
    if torch.cuda.is_available():
        names = []
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            names.append(f"cuda:{i} {p.name} ({p.total_memory / 2**30:.0f} GiB, sm_{p.major}{p.minor})")
        checks.append(Check("cuda", "ok", f"CUDA {built}, bf16 {'yes' if torch.cuda.is_bf16_supported() else 'no'}: "
                                          + "; ".join(names)))
    else:
        why = "torch is a CPU build" if built is None else f"torch built for CUDA {built}, but no GPU or driver is visible"
        checks.append(Check("cuda", "fail" if require_cuda else "info", f"not available ({why})"))
    return checks


def _probe(folder: Path) -> str | None:
    """``None`` when a file can be created and removed in ``folder`` (created if missing), else why not."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=".medssl-doctor-", dir=folder)
        os.close(fd)
        os.unlink(name)
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    return None


def _caches() -> list[Check]:
    from medssl.core.paths import ENV_VAR, LIBRARY_CACHES, cache_root

    root = cache_root()
    why = _probe(root)
    source = f"${ENV_VAR}" if os.environ.get(ENV_VAR) else "default"
    checks = [Check("cache", "fail" if why else "ok", f"{root} ({source}) " + (f"not writable: {why}" if why else "writable"))]
    bad = []
    for var in LIBRARY_CACHES:
        value = os.environ.get(var)
        if value and _probe(Path(value)) is not None:
            bad.append(f"{var}={value}")
    if bad:
        checks.append(Check("library caches", "warn", "not writable (those libraries fall back or fail): " + ", ".join(bad)))
    return checks


def _offline() -> Check:
    from medssl.core import offline

    if offline.enabled():
        allow = os.environ.get(offline.ALLOW_VAR)
        return Check("offline", "info", "network access is blocked (MEDSSL_OFFLINE=1)" + (f"; allowed: {allow}" if allow else ""))
    return Check("offline", "info", "network access is not blocked (set MEDSSL_OFFLINE=1 to make any attempt an error)")


def _model(path: Path) -> Check:
    from medssl.errors import MedsslError
    from medssl.inference.load import load_predictor
    from medssl.inference.model_package import model_sha256

    try:
        predictor = load_predictor(path)
        sha = model_sha256(path)
    except (MedsslError, OSError) as exc:
        return Check("model", "fail", " ".join(str(exc).split()))
    plan = "with a preprocessing plan" if predictor.plan is not None else "no plan"
    return Check("model", "ok", f"{path}: {predictor.config.method}, classes {predictor.class_names}, channels "
                                f"{predictor.spec.modalities}, {plan}; sha256 {sha[:12]}... verified")


def run_doctor(model: str | Path | None = None, require_cuda: bool = False) -> list[Check]:
    """Every check, in the order printed (module docstring)."""
    checks = _versions() + _devices(require_cuda) + _caches() + [_offline()]
    if model is not None:
        checks.append(_model(Path(model)))
    return checks


def healthy(checks: list[Check]) -> bool:
    """Whether no check failed."""
    return all(c.status != "fail" for c in checks)


def format_checks(checks: list[Check]) -> str:
    """The report as aligned lines: ``status  name  detail``."""
    width = max(len(c.name) for c in checks)
    return "\n".join(f"{c.status:<4}  {c.name:<{width}}  {c.detail}" for c in checks)


def to_json(checks: list[Check]) -> dict:
    """The report as one JSON-able object."""
    return {"healthy": healthy(checks), "checks": [asdict(c) for c in checks], "python": sys.executable}
