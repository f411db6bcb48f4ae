"""Geometry faults of single files: a zero-scale or sheared voxel-to-world matrix is refused by
``read_volume`` (one line naming the file and the problem), by ``medssl data info`` (exit 1, no
traceback) and reported by ``medssl data check``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medssl.data.check import check_dataset
from medssl.data.io import read_volume, write_volume
from medssl.data.volume import GeometryError, Volume, affine_fault
from medssl.errors import DataError
from tests.faults.conftest import all_cases, assert_one_line_error, run_cli, sheared, write_nifti_raw, zero_scale

ARRAY = np.arange(8 * 6 * 4, dtype=np.float32).reshape(8, 6, 4)


def _read_error(path: Path) -> str:
    with pytest.raises(DataError) as info:
        read_volume(path)
    assert isinstance(info.value, GeometryError)
    msg = str(info.value)
    assert msg.startswith(f"{path}: ") and "\n" not in msg
    return msg


def test_zero_scale_sform(tmp_path: Path):
    path = write_nifti_raw(tmp_path / "zero.nii.gz", ARRAY, zero_scale)
    msg = _read_error(path)
    assert "zero-scale affine in the sform: voxel size 0 along array axis 2" in msg


def zero_pixdim_qform(hdr) -> None:
    """No sform; the qform's voxel size along axis 2 (pixdim[3]) is 0."""
    hdr["sform_code"] = 0
    pixdim = hdr["pixdim"]
    pixdim[3] = 0
    hdr["pixdim"] = pixdim


def test_zero_voxel_size_in_qform_is_not_silently_1mm(tmp_path: Path):
    """nibabel and ITK replace a pixdim of 0 by 1 mm; medssl refuses it when the qform uses it."""
    msg = _read_error(write_nifti_raw(tmp_path / "pixdim0.nii.gz", ARRAY, zero_pixdim_qform))
    assert "zero-scale affine in the qform: voxel size 0 along array axis 2 (pixdim (1, 1, 0))" in msg


def test_sheared_sform(tmp_path: Path):
    msg = _read_error(write_nifti_raw(tmp_path / "shear.nii.gz", ARRAY, sheared))
    assert "sheared affine in the sform (non-orthogonal axes: array axes 0 and 1 meet at 63.43 degrees" in msg
    assert "is not supported: resample the image to an orthogonal grid, e.g. with nibabel.processing" in msg


def test_real_volume_with_zero_scale_affine(shared_data: Path, tmp_path: Path):
    """The spleen CT of ../shared/data, its sform's slice axis set to 0 in a copy."""
    import nibabel as nib

    src = nib.load(shared_data / "volumes" / "spleen_ct" / "image.nii.gz")
    arr = np.asarray(src.dataobj, dtype=np.float32)

    def from_source(hdr):
        hdr.set_sform(src.affine, code=1)
        zero_scale(hdr)

    msg = _read_error(write_nifti_raw(tmp_path / "spleen.nii.gz", arr, from_source))
    assert "zero-scale affine in the sform" in msg


def test_tiny_rounding_is_not_a_shear(tmp_path: Path):
    """float32 headers and DICOM strings round cosines to ~1e-7: still an orthogonal grid."""

    def almost(hdr):
        aff = np.eye(4)
        aff[0, 1] = 1e-6
        hdr.set_sform(aff, code=1)

    vol = read_volume(write_nifti_raw(tmp_path / "ok.nii.gz", ARRAY, almost))
    assert vol.geometry_fault() is None and vol.orientation == "RAS"


def test_sheared_nrrd(tmp_path: Path):
    direction = np.eye(3)
    direction[:, 1] = [0.6, 0.8, 0.0]
    path = write_volume(Volume(ARRAY, (1.0, 1.0, 2.0), (0.0, 0.0, 0.0), direction), tmp_path / "shear.nrrd")
    msg = _read_error(path)
    assert "sheared affine (space directions)" in msg and "meet at 53.13 degrees" in msg


def test_dicom_with_non_perpendicular_orientation(tmp_path: Path):
    from tests.data.test_dicom import write_series

    folder = tmp_path / "series"
    write_series(folder, n=3, iop=(1.0, 0.0, 0.0, 0.5, 0.8660254, 0.0))
    msg = _read_error(folder)
    assert "sheared affine (from ImageOrientationPatient and PixelSpacing)" in msg and "60 degrees" in msg


def test_affine_fault_cases():
    assert affine_fault(np.diag([0.7, 0.7, 5.0])) is None
    assert affine_fault(np.diag([1.0, 0.0, 1.0])).startswith("zero-scale affine: voxel size 0 along array axis 1")
    assert affine_fault(np.array([[1.0, 1, 0], [0, 0, 0], [0, 0, 1]])).startswith("sheared affine")  # collinear
    assert affine_fault(np.diag([1.0, np.nan, 1.0])).startswith("non-finite affine")


def test_orientation_of_degenerate_geometry_is_not_a_type_error():
    vol = Volume(ARRAY, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), np.diag([1.0, 1.0, 0.0]))
    assert vol.orientation == "LP?"  # LPS identity direction, no third axis
    assert vol.geometry_fault().startswith("zero-scale affine")


# ------------------------------------------------------------------------------ commands
@pytest.mark.parametrize(
    "edit, needle",
    [
        (zero_scale, "zero-scale affine in the sform"),
        (zero_pixdim_qform, "zero-scale affine in the qform"),  # and no nibabel note on stderr
        (sheared, "sheared affine in the sform"),
    ],
    ids=["zero-scale", "zero-pixdim-qform", "sheared"],
)
def test_data_info_is_one_line(tmp_path: Path, edit, needle):
    path = write_nifti_raw(tmp_path / "bad.nii.gz", ARRAY, edit)
    line = assert_one_line_error(run_cli("data", "info", str(path)), str(path), needle)
    assert line.startswith("error: ")


def test_data_check_reports_both_faults(dataset: Path):
    """A zero-scale training image and a sheared unlabeled image: two bad_geometry errors."""
    import nibabel as nib

    cases = {c.name: c for c in all_cases(dataset)}
    zero_path = cases["phantom_tr_000"].image
    shear_path = cases["phantom_ul_001"].image
    for path, edit in ((zero_path, zero_scale), (shear_path, sheared)):
        arr = np.asarray(nib.load(path).dataobj)
        write_nifti_raw(path, arr, edit)

    report = check_dataset(dataset, progress=False)
    bad = {p.path: p for p in report.problems if p.code == "bad_geometry"}
    assert set(bad) == {zero_path, shear_path}, report.format()
    assert bad[zero_path].message.startswith("zero-scale affine in the sform")
    assert bad[shear_path].message.startswith("sheared affine in the sform")
    assert not report.ok

    proc = run_cli("data", "check", str(dataset))
    assert proc.returncode == 1 and "Traceback" not in proc.stdout + proc.stderr
    out = proc.stdout.splitlines()
    assert any("imagesTr/phantom_tr_000_0000.nii.gz: zero-scale affine in the sform" in ln for ln in out), proc.stdout
    assert any("imagesUnlabeled/phantom_ul_001_0000.nii.gz: sheared affine in the sform" in ln for ln in out)
