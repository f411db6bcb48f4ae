"""Process-level settings for CPU/GPU training and inference: allocator, rank, threads, bf16
autocast, memory format, and the bf16-Conv3d-on-CPU warning. One place for each, so the
segmentation engine, the image-SSL engine, the MedMNIST protocols and the predictor agree."""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import warnings

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
PRECISIONS = ("32", "bf16")


def tune_allocator(threshold: int = 2**30) -> bool:
    """Keep large tensors on glibc's heap instead of fresh ``mmap`` pages for every allocation.

    3D activations are tens of MB; with glibc's default (dynamic) mmap threshold each of them is
    mapped and unmapped per step, and the page faults cost more than the convolutions: measured
    here, a 3-view asymmetric U-Net step at 48^3 takes 1.20 s by default and 0.53 s with this
    (the same effect as ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` set before start,
    or preloading jemalloc). Returns whether the settings were applied (Linux/glibc only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        return bool(libc.mallopt(_M_MMAP_THRESHOLD, threshold)) and bool(libc.mallopt(_M_TRIM_THRESHOLD, threshold))
    except (OSError, AttributeError):
        return False


def rank() -> int:
    """This process's rank in a distributed run (0 when not distributed)."""
    return int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", "0")))


def autocast(device, precision: str | bool):
    """``torch.autocast(device_type, torch.bfloat16)`` for ``"bf16"`` (or ``True``), a null
    context for ``"32"`` (or ``False``)."""
    import torch

    if precision in ("32", False):
        return contextlib.nullcontext()
    if precision in ("bf16", True):
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")


def memory_format_for(spatial_dims: int):
    """``torch.channels_last`` in 2D, ``torch.channels_last_3d`` in 3D."""
    import torch

    return torch.channels_last if spatial_dims == 2 else torch.channels_last_3d


BF16_CONV3D_CPU_WARNING = (
    "bf16 training of a 3D network on CPU: with torch's CPU (oneDNN) kernels the bf16 Conv3d backward "
    "sporadically returns NaN weight gradients for small (2^3) feature maps; measured on AdrenalMNIST3D with "
    "torch 2.13 within 20-30 steps. Use precision '32' for 3D on CPU if training stops with a NaN loss."
)


def warn_bf16_conv3d_on_cpu(device, spatial_dims: int, precision: str) -> bool:
    """Warn before bf16 training of a 3D network on CPU; returns whether it warned."""
    import torch

    if spatial_dims == 3 and str(precision).startswith("bf16") and torch.device(device).type == "cpu":
        warnings.warn(BF16_CONV3D_CPU_WARNING, RuntimeWarning, stacklevel=3)
        return True
    return False


def interactive(flag: bool = True) -> bool:
    """Whether to draw progress bars: asked for and stderr is a terminal (in a log file, bars'
    carriage returns and escape codes are noise; commands print plain periodic lines instead)."""
    import sys

    try:
        return bool(flag) and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced stream
        return False


def ensure_user_name() -> str | None:
    """Give the process a user name when its uid has none (``docker run --user 12345``, OpenShift).

    ``getpass.getuser()`` reads ``LOGNAME`` / ``USER`` / ``LNAME`` / ``USERNAME``, else the password
    database, and raises when the uid is not in it; MONAI calls it when it is imported. When none of
    those variables is set and the uid has no entry, ``USER`` becomes ``uid<N>``.

    Returns:
        The name set, or ``None`` when nothing needed setting.
    """
    if any(os.environ.get(v) for v in ("LOGNAME", "USER", "LNAME", "USERNAME")) or not hasattr(os, "getuid"):
        return None
    import pwd

    try:
        pwd.getpwuid(os.getuid())
        return None
    except KeyError:
        os.environ["USER"] = f"uid{os.getuid()}"
        return os.environ["USER"]
