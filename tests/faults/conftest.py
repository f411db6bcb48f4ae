"""Broken inputs for the fault-injection suite, built in ``tmp_path`` from tiny sample data or from
../shared/data (never modified: copies are broken, the originals only read)."""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from medssl.data.dataset import SPLIT_FOLDERS, Case, list_cases, read_dataset_json

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def pristine(tmp_path_factory) -> Path:
    """A clean sample dataset (2 cases per split, 32x32x16), made once; tests copy it."""
    from medssl.data.phantoms import generate_sample_data

    root = tmp_path_factory.mktemp("pristine") / "ds"
    generate_sample_data(root, seed=3, n_labeled=2, n_unlabeled=2, n_val=2, n_test=2, progress=False, shape=(32, 32, 16))
    return root


@pytest.fixture
def dataset(pristine: Path, tmp_path: Path) -> Path:
    """A fresh, writable copy of the sample dataset, for a test to break."""
    return Path(shutil.copytree(pristine, tmp_path / "ds"))


def all_cases(root: Path) -> list[Case]:
    spec = read_dataset_json(root)
    return [c for split in SPLIT_FOLDERS for c in list_cases(root, split, spec)]


def write_nifti_raw(path: Path, array: np.ndarray, edit_header: Callable) -> Path:
    """Write a .nii.gz whose header ``edit_header(hdr)`` may make invalid (nibabel's image class
    refuses to build such a file, so the header and voxels are serialised by hand)."""
    import nibabel as nib

    hdr = nib.Nifti1Image(array, np.eye(4)).header.copy()
    hdr.set_sform(np.eye(4), code=1)
    hdr.set_qform(np.eye(4), code=1)
    edit_header(hdr)
    hdr["vox_offset"] = 352
    buf = io.BytesIO()
    hdr.write_to(buf)
    buf.write(b"\0" * (352 - buf.tell()))
    buf.write(np.asarray(array, dtype=hdr.get_data_dtype()).tobytes(order="F"))
    path.write_bytes(gzip.compress(buf.getvalue()))
    return path


def zero_scale(hdr) -> None:
    """sform with a zero third column: voxel size 0 along array axis 2."""
    hdr["srow_z"] = [0.0, 0.0, 0.0, 5.0]


def sheared(hdr) -> None:
    """sform whose axes 0 and 1 meet at 63.4 degrees."""
    aff = np.eye(4)
    aff[0, 1] = 0.5
    hdr.set_sform(aff, code=1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "medssl.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, one ``error:`` line on stderr naming ``needles``, no traceback; returns the line."""
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
