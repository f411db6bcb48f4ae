"""Reading/writing volumes: real files, geometry round trips, atomic writes, bad input."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from medssl.cli import app
from medssl.data.io import read_volume, write_volume
from medssl.data.volume import Volume, volume_info
from medssl.errors import DataError

REAL_FILES = [
    "volumes/spleen_ct/image.nii.gz", "volumes/spleen_ct/label.nii.gz",
    "volumes/abdomen_ct/image.nii.gz", "volumes/abdomen_ct/label.nii.gz",
    "volumes/spine_mri/image.nii.gz", "volumes/spine_mri/label.nii.gz",
    "volumes/anatomical_mri/image.nii", "volumes/anatomical_mri/label.nii.gz",
    "volumes/brain_mri_nrrd/image.nrrd", "volumes/brain_mri_nrrd/label.nrrd",
    "volumes/breast_mri_nrrd/image.nrrd", "volumes/breast_mri_nrrd/label.nrrd",
]
EXPECTED_SHAPES = {
    "spleen_ct": [164, 166, 26], "abdomen_ct": [122, 101, 30], "spine_mri": [131, 141, 16],
    "anatomical_mri": [33, 41, 25], "brain_mri_nrrd": [256, 256, 25], "breast_mri_nrrd": [45, 120, 21],
}


@pytest.mark.parametrize("rel", REAL_FILES)
def test_data_info_json_on_every_real_volume(shared_data, rel):
    res = CliRunner().invoke(app, ["data", "info", "--json", str(shared_data / rel)])
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    for key in ("shape", "spacing", "origin", "direction", "orientation", "dtype", "min", "max"):
        assert key in info
    assert info["shape"] == EXPECTED_SHAPES[rel.split("/")[1]]
    assert len(info["spacing"]) == 3 and len(info["direction"]) == 9 and len(info["orientation"]) == 3
    # spacing is in the same (x, y, z) order as the shape and agrees with SimpleITK
    img = sitk.ReadImage(str(shared_data / rel))
    assert list(img.GetSize()) == info["shape"]
    np.testing.assert_allclose(info["spacing"], img.GetSpacing(), rtol=1e-5)
    np.testing.assert_allclose(info["origin"], img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(info["direction"], img.GetDirection(), atol=1e-5)


def test_known_spacings_and_orientation(shared_data):
    spleen = read_volume(shared_data / "volumes/spleen_ct/image.nii.gz")
    np.testing.assert_allclose(spleen.spacing, (0.795, 0.795, 5.0), atol=1e-3)
    assert spleen.orientation == "RAS" and spleen.array.dtype == np.float32
    mri = read_volume(shared_data / "volumes/anatomical_mri/image.nii")  # big-endian int16 on disk
    assert mri.array.dtype == np.int16 and mri.array.dtype.byteorder in ("=", "|")
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / "volumes/anatomical_mri/image.nii")))
    np.testing.assert_array_equal(mri.array, arr.transpose(2, 1, 0))


def test_text_output_names_conventions(shared_data):
    res = CliRunner().invoke(app, ["data", "info", str(shared_data / "volumes/breast_mri_nrrd/image.nrrd")])
    assert res.exit_code == 0
    assert "45 x 120 x 21" in res.output and "(x, y, z)" in res.output and "LPS" in res.output


def _oblique_volume(dtype=np.int16) -> Volume:
    rng = np.random.default_rng(0)
    th = 0.3
    rot = np.array([[np.cos(th), -np.sin(th), 0], [np.sin(th), np.cos(th), 0], [0, 0, 1]])
    return Volume(rng.integers(-1000, 1000, (7, 5, 3)).astype(dtype), (0.7, 0.8, 2.5), (10.0, -20.0, 30.0), rot)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii", ".nrrd", ".mha"])
def test_write_read_round_trip_keeps_geometry(tmp_path, suffix):
    vol = _oblique_volume()
    out = write_volume(vol, tmp_path / f"v{suffix}")
    back = read_volume(out)
    assert back.same_geometry(vol)
    np.testing.assert_array_equal(back.array, vol.array)
    assert back.array.dtype == np.int16
    assert [p.name for p in tmp_path.iterdir()] == [f"v{suffix}"]  # no temporary left behind


def test_orientation_code_and_affine():
    vol = Volume(np.zeros((2, 2, 2)), (1.0, 2.0, 3.0), (1.0, 2.0, 3.0), np.eye(3))
    assert vol.orientation == "LPS"  # identity direction in LPS = the usual DICOM axial CT
    np.testing.assert_allclose(vol.affine[:3, :3], np.diag([-1.0, -2.0, 3.0]))
    np.testing.assert_allclose(vol.affine[:3, 3], [-1.0, -2.0, 3.0])
    flipped = Volume(np.zeros((2, 2, 2)), direction=np.diag([-1.0, -1.0, 1.0]))
    assert flipped.orientation == "RAS"


def test_nan_is_kept_and_reported(tmp_path):
    arr = np.ones((4, 4, 4), np.float32)
    arr[1, 2, 3] = np.nan
    path = write_volume(Volume(arr), tmp_path / "nan.nii.gz")
    info = volume_info(read_volume(path))
    assert info["nonfinite_voxels"] == 1 and info["max"] == 1.0


def test_failed_write_keeps_previous_file(tmp_path, monkeypatch):
    dest = write_volume(_oblique_volume(), tmp_path / "keep.nii.gz")
    before = dest.read_bytes()

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(sitk, "WriteImage", boom)
    with pytest.raises(RuntimeError):
        write_volume(Volume(np.zeros((3, 3, 3), np.int16)), dest)
    assert dest.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.nii.gz"]


def _truncated(tmp_path: Path) -> Path:
    good = write_volume(_oblique_volume(), tmp_path / "full.nii.gz")
    data = good.read_bytes()
    bad = tmp_path / "cut.nii.gz"
    bad.write_bytes(data[: len(data) // 2])
    return bad


def _file(name: str, data: bytes):
    def make(p: Path) -> Path:
        (p / name).write_bytes(data)
        return p / name

    return make


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda p: p / "missing.nii.gz", "no such file"),
        (_truncated, "truncated"),
        (_file("text.nii.gz", gzip.compress(b"hello, not an image")), "cannot read"),
        (_file("empty.nrrd", b""), "empty file"),
        (_file("image.png", b"\x89PNG"), "unknown volume format"),
        (_file("junk.mha", b"garbage"), "cannot read"),
    ],
    ids=["missing", "truncated", "not-an-image", "empty", "unknown-suffix", "junk-mha"],
)
def test_bad_input_is_a_clear_error(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(DataError, match=expected) as err:
        read_volume(path)
    assert str(path) in str(err.value)


def test_damaged_gzip_bytes_are_an_error_not_wrong_voxels(tmp_path):
    good = write_volume(_oblique_volume(), tmp_path / "ok.nii.gz")
    data = bytearray(good.read_bytes())
    for pos in range(40, len(data) - 8, max(1, (len(data) - 48) // 15)):
        bad = tmp_path / "bad.nii.gz"
        flipped = bytearray(data)
        flipped[pos] ^= 0xFF
        bad.write_bytes(bytes(flipped))
        with pytest.raises(DataError):
            read_volume(bad)


def test_cli_error_is_one_line_without_traceback(tmp_path):
    bad = _truncated(tmp_path)
    res = subprocess.run([sys.executable, "-m", "medssl.cli", "data", "info", str(bad)], capture_output=True, text=True)
    assert res.returncode == 1
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(bad) in lines[0]
    dbg = subprocess.run([sys.executable, "-m", "medssl.cli", "--debug", "data", "info", str(bad)], capture_output=True, text=True)
    assert dbg.returncode != 0 and "Traceback" in dbg.stderr


def test_zero_pixdim_beside_a_valid_sform_reads_quietly(tmp_path):
    """The sform places the voxels, so a zero pixdim is harmless: no error, and nibabel's note
    about fixing the header ("setting 0 dims to 1") does not reach stderr (it would be a second
    line of CLI output). A subprocess: pytest's own log handlers would hide the print here."""
    import nibabel as nib

    img = nib.Nifti1Image(np.ones((6, 5, 4), np.float32), np.diag([0.8, 0.8, 2.5, 1.0]))
    img.header["pixdim"][1:4] = [0.8, 0.8, 0.0]
    path = tmp_path / "pixdim0.nii.gz"
    path.write_bytes(gzip.compress(img.to_bytes()))
    code = f"from medssl.data.io import read_volume; read_volume({str(path)!r}); read_volume({str(path)!r}); print('ok')"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok" and res.stderr == "", res.stderr
    assert read_volume(path).spacing == pytest.approx((0.8, 0.8, 2.5))


def test_geometry_error_is_a_data_error():
    from medssl.data.volume import GeometryError

    assert issubclass(GeometryError, DataError)
