"""DICOM faults built from copies of the real series in ../shared/data/dicom: a truncated slice
(uncompressed and JPEG 2000) is "truncated or corrupt pixel data in FILE", not advice to install a
plugin that is installed; a folder with several series points to ``--series KEY``; no message
ever shows the patient's name, ID or birth date."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from medssl.data.dicom import find_dicom_series
from medssl.data.io import read_volume
from medssl.errors import DataError
from tests.faults.conftest import assert_one_line_error, run_cli

pytest.importorskip("pydicom")


def _copy(src: Path, dest: Path) -> Path:
    if not src.is_dir():
        pytest.skip(f"{src} not found")
    shutil.copytree(src, dest)
    for f in dest.rglob("*"):  # ../shared/data is read-only: the copy must be writable
        f.chmod(f.stat().st_mode | stat.S_IWUSR)
    return dest


def _secrets(folder: Path) -> list[str]:
    """The identifying values of the series (non-empty ones), which no message may show."""
    import pydicom

    ds = pydicom.dcmread(next(p for p in sorted(folder.iterdir()) if p.is_file()), stop_before_pixels=True)
    values = [str(ds.get(k, "") or "") for k in ("PatientName", "PatientID", "PatientBirthDate")]
    return [v for v in values if len(v) >= 3]


def _truncate(path: Path, keep: float = 0.66) -> None:
    size = path.stat().st_size
    with open(path, "r+b") as fh:
        fh.truncate(int(size * keep))


@pytest.fixture
def ct_3slice(shared_data: Path, tmp_path: Path) -> Path:
    return _copy(shared_data / "dicom" / "ct_3slice_with_seg" / "series", tmp_path / "ct3")


@pytest.fixture
def ct_j2k(shared_data: Path, tmp_path: Path) -> Path:
    pytest.importorskip("pylibjpeg")
    return _copy(shared_data / "dicom" / "ct_series_j2k", tmp_path / "j2k")


def _error(folder: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_volume(folder, **kwargs)
    msg = str(info.value)
    assert msg.startswith(f"{folder}: ") and "\n" not in msg
    return msg


def test_truncated_uncompressed_slice(ct_3slice: Path):
    secrets = _secrets(ct_3slice)
    assert secrets  # this series has a PatientName: the test checks that it is not shown
    _truncate(ct_3slice / "02.dcm")
    msg = _error(ct_3slice)
    assert "truncated or corrupt pixel data in 02.dcm (transfer syntax Implicit VR Little Endian" in msg
    assert "less than expected" in msg
    assert "pip install" not in msg and "plugin" not in msg
    assert not any(s in msg for s in secrets)

    line = assert_one_line_error(run_cli("data", "info", str(ct_3slice)), "truncated or corrupt pixel data in 02.dcm")
    assert not any(s in line for s in secrets)


def test_truncated_jpeg2000_slice(ct_j2k: Path):
    victim = sorted(ct_j2k.iterdir())[7]
    _truncate(victim)
    msg = _error(ct_j2k)
    assert f"truncated or corrupt pixel data in {victim.name} (transfer syntax JPEG 2000" in msg
    assert "pip install" not in msg
    assert_one_line_error(run_cli("data", "info", str(ct_j2k)), f"truncated or corrupt pixel data in {victim.name}")


def test_corrupt_jpeg2000_header(ct_j2k: Path):
    """Same size, a damaged codestream header (SIZ marker): the decoders are there and fail."""
    victim = sorted(ct_j2k.iterdir())[3]
    data = bytearray(victim.read_bytes())
    at = data.find(b"\xff\x4f\xff\x51")  # SOC, SIZ
    assert at > 0
    data[at + 4 : at + 40] = bytes(36)
    victim.write_bytes(bytes(data))
    msg = _error(ct_j2k)
    assert f"truncated or corrupt pixel data in {victim.name}" in msg and "pip install" not in msg


def test_several_series_point_to_the_series_option(ct_3slice: Path, ct_j2k: Path, tmp_path: Path):
    both = tmp_path / "both"
    both.mkdir()
    shutil.move(ct_3slice, both / "ge")
    shutil.move(ct_j2k, both / "siemens")
    secrets = _secrets(both / "ge")
    keys = [s.key for s in find_dicom_series(both)]
    assert len(keys) == 2
    msg = _error(both)
    assert "holds 2 DICOM series" in msg and "--series KEY" in msg
    assert all(k in msg for k in keys)
    assert "read_dicom_series" not in msg and not any(s in msg for s in secrets)

    line = assert_one_line_error(run_cli("data", "info", str(both)), "--series KEY", *keys)
    assert not any(s in line for s in secrets)
    ok = run_cli("data", "info", str(both), "--series", keys[0][:20], "--json")
    assert ok.returncode == 0, ok.stderr
    wrong = run_cli("data", "info", str(both), "--series", "9.9.9")
    assert_one_line_error(wrong, "--series '9.9.9' matches no DICOM series", *keys)
