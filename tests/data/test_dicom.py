"""DICOM series reading: the real JPEG 2000 CT series against SimpleITK, and small synthetic
series written with pydicom for sorting, orientation, rescaling, grouping and every error."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, JPEGLSLossless, generate_uid

from medssl.data.dicom import DicomSeries, find_dicom_series, read_dicom_series
from medssl.data.volume import volume_info
from medssl.errors import DataError, MedsslError

ROOT = Path(__file__).resolve().parents[2]

# Identifying values written into every synthetic file: they must never leak anywhere.
PATIENT = {"PatientName": "Doe^Jane", "PatientID": "PID-8675309", "PatientBirthDate": "19610203"}
SECRETS = ["Doe", "Jane", "PID-8675309", "19610203"]

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def _oblique() -> tuple[float, ...]:
    """Axial rotated 30 degrees about x, then 20 degrees about z."""
    a, b = np.deg2rad(30), np.deg2rad(20)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    r = rz @ rx
    return tuple(float(x) for x in np.concatenate([r[:, 0], r[:, 1]]))


def expected_slice(k: int, rows: int, cols: int) -> np.ndarray:
    """Raw pixel values of the k-th slice along the normal, shape (rows, cols): all distinct."""
    r, c = np.mgrid[0:rows, 0:cols]
    return (1000 * k + 20 * r + c).astype(np.int32)


def write_series(
    folder: Path,
    n: int = 8,
    rows: int = 12,
    cols: int = 16,
    offsets: list[float] | None = None,
    spacing: float = 2.0,
    iop: tuple[float, ...] = AXIAL,
    origin: tuple[float, float, float] = (-10.0, -20.0, 30.0),
    pixel_spacing: tuple[float, float] = (0.5, 0.75),
    series_uid: str | None = None,
    series_number: int = 3,
    description: str = "synthetic CT",
    slope: float | None = None,
    intercept: float | None = None,
    base: int = 0,
    seed: int = 0,
    prefix: str = "img",
) -> list[Path]:
    """Write ``n`` single-frame 16-bit CT slices (explicit VR little endian, with file meta).

    Slice ``k`` (k-th along the normal) lies at ``origin + offsets[k] * normal`` and holds
    ``expected_slice(k) + base``. File names and InstanceNumbers are shuffled with ``seed`` so
    that neither follows the position. ``series_uid=""`` writes an empty SeriesInstanceUID;
    ``None`` generates one.
    """
    folder.mkdir(parents=True, exist_ok=True)
    offsets = [k * spacing for k in range(n)] if offsets is None else list(offsets)
    row_cos, col_cos = _unit(iop[:3]), _unit(iop[3:])
    normal = np.cross(row_cos, col_cos)
    series_uid = generate_uid() if series_uid is None else series_uid
    study_uid, frame_uid = "1.2.826.0.1.3680043.8.498.1", "1.2.826.0.1.3680043.8.498.2"
    rng = np.random.default_rng(seed)
    name_order = rng.permutation(len(offsets))
    instance_numbers = rng.permutation(len(offsets)) + 1
    paths = []
    for k, off in enumerate(offsets):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        for key, value in PATIENT.items():
            setattr(ds, key, value)
        ds.Modality = "CT"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImageOrientationPatient = [round(float(v), 8) for v in iop]
        ds.ImagePositionPatient = [round(float(v), 6) for v in np.asarray(origin) + off * normal]
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = spacing
        if slope is not None:
            ds.RescaleSlope = slope
        if intercept is not None:
            ds.RescaleIntercept = intercept
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = rows, cols
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 0
        ds.PixelData = (expected_slice(k, rows, cols) + base).astype(np.uint16).tobytes()
        path = folder / f"{prefix}{int(name_order[k]):03d}.dcm"
        save(ds, path)
        paths.append(path)
    return paths


def save(ds: Dataset, path: Path) -> None:
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:  # pydicom 2.4
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(path, write_like_original=False)


def edit(path: Path, **tags) -> None:
    """Rewrite one file with tags changed (value ``None`` deletes the tag)."""
    ds = pydicom.dcmread(path)
    for key, value in tags.items():
        if value is None:
            delattr(ds, key)
        else:
            setattr(ds, key, value)
    save(ds, path)


def read_error(path: Path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        read_dicom_series(path, **kwargs)
    msg = str(info.value)
    assert str(path) in msg  # every error names the folder
    for secret in SECRETS:
        assert secret not in msg
    return msg


# ------------------------------------------------------------------------------ real series
@pytest.fixture(scope="module")
def real_folder(shared_data: Path) -> Path:
    folder = shared_data / "dicom" / "ct_series_j2k"
    if not folder.is_dir():
        pytest.skip(f"{folder} not found")
    return folder


@pytest.fixture(scope="module")
def real_volume(real_folder: Path):
    return read_dicom_series(real_folder)


@pytest.fixture(scope="module")
def sitk_image(real_folder: Path):
    sitk = pytest.importorskip("SimpleITK")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(real_folder)))
    return reader.Execute()


def test_real_series_shape_spacing_hu(real_volume):
    vol = real_volume
    assert vol.shape == (512, 512, 20)
    np.testing.assert_allclose(vol.spacing, (0.977, 0.977, 2.0), atol=1e-3)
    assert vol.array.dtype == np.int16
    assert vol.array.min() <= -1000
    assert vol.array.max() > 1000
    assert vol.orientation == "LPS"
    assert vol.meta == {"format": "DICOM", "modality": "CT", "series_description": "CT Body 3.0", "n_files": 20}


def test_real_series_grouped_without_series_uid(real_folder: Path):
    found = find_dicom_series(real_folder)
    assert len(found) == 1
    s = found[0]
    assert isinstance(s, DicomSeries)
    assert s.key.startswith("series-")  # the real files have an empty SeriesInstanceUID
    assert (s.n_slices, s.rows, s.cols, s.modality) == (20, 512, 512, "CT")


def test_real_series_matches_simpleitk(real_volume, sitk_image):
    import SimpleITK as sitk

    img, vol = sitk_image, real_volume
    ref = sitk.GetArrayFromImage(img).transpose(2, 1, 0)
    assert ref.shape == vol.shape
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.direction, np.reshape(img.GetDirection(), (3, 3)), atol=1e-3)
    np.testing.assert_array_equal(vol.array, ref)  # same HU, voxel for voxel


def test_read_volume_dispatches_folder(real_folder: Path, real_volume):
    from medssl.data.io import read_volume

    vol = read_volume(real_folder)
    assert vol.same_geometry(real_volume)
    np.testing.assert_array_equal(vol.array, real_volume.array)


def test_cli_info_json_real_series(real_folder: Path):
    from typer.testing import CliRunner

    from medssl.cli import app

    result = CliRunner().invoke(app, ["data", "info", "--json", str(real_folder)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["shape"] == [512, 512, 20]
    np.testing.assert_allclose(info["spacing"], [0.9765625, 0.9765625, 2.0])
    np.testing.assert_allclose(info["origin"], [-249.51171875, -437.51171875, -804.5])
    assert info["format"] == "DICOM" and info["modality"] == "CT" and info["n_files"] == 20
    assert info["min"] <= -1000 and info["max"] > 1000


# ------------------------------------------------------------------------------ synthetic
def test_sorted_by_position_not_by_name_or_instance_number(tmp_path: Path):
    paths = write_series(tmp_path, seed=1)
    by_name = sorted(paths)
    assert by_name != paths  # names do not follow the position ...
    assert [int(pydicom.dcmread(p).InstanceNumber) for p in paths] != list(range(1, 9))  # nor InstanceNumber
    vol = read_dicom_series(tmp_path)
    assert vol.shape == (16, 12, 8)  # (columns, rows, slices)
    for k in range(8):
        np.testing.assert_array_equal(vol.array[:, :, k], expected_slice(k, 12, 16).T)
    assert vol.spacing == (0.75, 0.5, 2.0)  # (column spacing, row spacing, slice spacing)
    assert vol.origin == (-10.0, -20.0, 30.0)
    np.testing.assert_allclose(vol.direction, np.eye(3))
    assert vol.meta == {"format": "DICOM", "modality": "CT", "series_description": "synthetic CT", "n_files": 8}


@pytest.mark.parametrize(
    "iop",
    [
        AXIAL,
        (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0),  # axial, flipped in-plane
        (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),  # coronal
        (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),  # sagittal
        _oblique(),
    ],
    ids=["axial", "flipped", "coronal", "sagittal", "oblique"],
)
def test_orientation_gives_direction_and_world_positions(tmp_path: Path, iop):
    sitk = pytest.importorskip("SimpleITK")
    origin = (5.0, -7.0, 11.0)
    write_series(tmp_path, iop=iop, origin=origin, spacing=2.5)
    vol = read_dicom_series(tmp_path)
    row_cos, col_cos = _unit(iop[:3]), _unit(iop[3:])
    normal = np.cross(row_cos, col_cos)
    np.testing.assert_allclose(vol.direction, np.stack([row_cos, col_cos, normal], axis=1), atol=1e-6)
    np.testing.assert_allclose(vol.origin, origin, atol=1e-5)
    # world = origin + direction @ (spacing * index): slice k sits at origin + 2.5 k normal, and
    # index (i, j) of a slice at origin + i * dc * row_cos + j * dr * col_cos.
    for k in range(8):
        np.testing.assert_allclose(vol.affine_lps @ [0, 0, k, 1], [*(np.asarray(origin) + 2.5 * k * normal), 1], atol=1e-5)
        np.testing.assert_array_equal(vol.array[:, :, k], expected_slice(k, 12, 16).T)
    np.testing.assert_allclose(vol.affine_lps @ [3, 0, 0, 1], [*(np.asarray(origin) + 3 * 0.75 * row_cos), 1], atol=1e-5)
    np.testing.assert_allclose(vol.affine_lps @ [0, 2, 0, 1], [*(np.asarray(origin) + 2 * 0.5 * col_cos), 1], atol=1e-5)
    # ... and SimpleITK's series reader agrees.
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path)))
    img = reader.Execute()
    np.testing.assert_allclose(vol.spacing, img.GetSpacing(), atol=1e-3)
    np.testing.assert_allclose(vol.origin, img.GetOrigin(), atol=1e-3)
    np.testing.assert_allclose(vol.direction, np.reshape(img.GetDirection(), (3, 3)), atol=1e-3)
    np.testing.assert_array_equal(vol.array, sitk.GetArrayFromImage(img).transpose(2, 1, 0))


@pytest.mark.parametrize(
    ("slope", "intercept", "base", "dtype"),
    [
        (None, None, 0, np.int16),  # no rescale tags
        (1, -1024, 0, np.int16),  # CT: integer rescale stays integer
        (2.5, -100.25, 0, np.float32),  # non-integer rescale
        (1, 0, 30000, np.int32),  # values beyond int16 (raw up to 37k)
    ],
)
def test_rescale_applied(tmp_path: Path, slope, intercept, base, dtype):
    write_series(tmp_path, slope=slope, intercept=intercept, base=base)
    vol = read_dicom_series(tmp_path)
    assert vol.array.dtype == dtype
    m = 1.0 if slope is None else slope
    b = 0.0 if intercept is None else intercept
    for k in range(8):
        want = (expected_slice(k, 12, 16) + base).T * m + b
        np.testing.assert_allclose(vol.array[:, :, k], want, rtol=1e-6)


def test_single_slice_uses_slice_thickness(tmp_path: Path):
    write_series(tmp_path, n=1, spacing=3.0)
    vol = read_dicom_series(tmp_path)
    assert vol.shape == (16, 12, 1)
    assert vol.spacing == (0.75, 0.5, 3.0)


def test_empty_series_uid_grouped_and_non_dicom_skipped(tmp_path: Path):
    write_series(tmp_path, series_uid="")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 64)
    (tmp_path / "notes.txt").write_text("scanned on a Tuesday\n")
    (tmp_path / "image.nii").write_bytes(b"\x5c\x01\x00\x00" + b"\0" * 400)
    found = find_dicom_series(tmp_path)
    assert len(found) == 1
    assert found[0].key.startswith("series-") and found[0].n_slices == 8
    assert find_dicom_series(tmp_path)[0].key == found[0].key  # stable
    assert read_dicom_series(tmp_path).shape == (16, 12, 8)


def test_empty_series_uid_split_by_series_number_and_folder(tmp_path: Path):
    write_series(tmp_path / "a", series_uid="", series_number=1)
    write_series(tmp_path / "a", series_uid="", series_number=2, prefix="b")
    write_series(tmp_path / "b", series_uid="", series_number=1, n=5)
    found = find_dicom_series(tmp_path)
    assert sorted(s.n_slices for s in found) == [5, 8, 8]
    assert len({s.key for s in found}) == 3


def test_choose_series_by_key(tmp_path: Path):
    write_series(tmp_path, series_uid="1.2.3.4.1", description="arterial")
    write_series(tmp_path, series_uid="1.2.3.4.2", description="venous", n=5, prefix="v")
    assert read_dicom_series(tmp_path, series="1.2.3.4.2").shape == (16, 12, 5)
    assert read_dicom_series(tmp_path, series="1.2.3.4.1").shape == (16, 12, 8)
    # A file selects its own series.
    one = next(p for p in tmp_path.iterdir() if p.name.startswith("v"))
    assert read_dicom_series(one).shape == (16, 12, 5)
    msg = read_error(tmp_path, series="9.9")
    assert "--series '9.9' matches no" in msg and "1.2.3.4.1" in msg


# ------------------------------------------------------------------------------ errors
def test_error_empty_folder(tmp_path: Path):
    assert "no DICOM image files found" in read_error(tmp_path)
    (tmp_path / "readme.txt").write_text("nothing here")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM")
    assert "no DICOM image files found" in read_error(tmp_path)


def test_error_two_series(tmp_path: Path):
    write_series(tmp_path, series_uid="1.2.3.4.1", description="arterial")
    write_series(tmp_path, series_uid="1.2.3.4.2", description="venous", n=5, prefix="v")
    msg = read_error(tmp_path)
    assert "2 DICOM series" in msg
    assert "1.2.3.4.1 'arterial' CT, 8 slices" in msg
    assert "1.2.3.4.2 'venous' CT, 5 slices" in msg
    # the user is pointed at the command-line option, with the keys to give it, not at Python
    assert "--series KEY" in msg and "--series 1.2.3.4.1" in msg
    assert "read_dicom_series" not in msg and "series=" not in msg
    assert "\n" not in msg


def test_error_missing_slice(tmp_path: Path):
    write_series(tmp_path, offsets=[0, 2, 4, 8, 10, 12, 14])
    msg = read_error(tmp_path)
    assert "1 slice(s) missing" in msg
    assert "index 2 (position 34.000 mm) and 3 (position 38.000 mm)" in msg
    assert "expected slice(s) at 36.000" in msg


def test_error_uneven_spacing(tmp_path: Path):
    write_series(tmp_path, offsets=[0, 2, 4, 6, 8.5, 10.5, 12.5, 14.5])
    msg = read_error(tmp_path)
    assert "uneven slice spacing" in msg
    assert "2.5 mm between sorted slices 3 and 4" in msg


def test_small_spacing_jitter_tolerated(tmp_path: Path):
    offsets = [0, 2.004, 4.0, 5.995, 8.0, 10.01, 12.0, 14.0]  # < 1% of 2 mm
    write_series(tmp_path, offsets=offsets)
    vol = read_dicom_series(tmp_path)
    assert vol.spacing[2] == pytest.approx(2.0)


def test_error_duplicate_position(tmp_path: Path):
    write_series(tmp_path, offsets=[0, 2, 4, 4, 6, 8])
    assert "two slices at the same position 34.000 mm" in read_error(tmp_path)


def test_error_mixed_orientations(tmp_path: Path):
    paths = write_series(tmp_path, series_uid="1.2.3.9")
    edit(paths[3], ImageOrientationPatient=[1, 0, 0, 0, 0, -1])
    msg = read_error(tmp_path)
    assert "mixes slice orientations" in msg and paths[3].name in msg


def test_error_mixed_sizes(tmp_path: Path):
    write_series(tmp_path, series_uid="1.2.3.9", n=4)
    write_series(tmp_path, series_uid="1.2.3.9", n=4, rows=10, offsets=[8, 10, 12, 14], prefix="z")
    assert "mixes image sizes (Rows, Columns)" in read_error(tmp_path)


@pytest.mark.parametrize("tag", ["ImagePositionPatient", "ImageOrientationPatient"])
def test_error_missing_position_tag(tmp_path: Path, tag):
    paths = write_series(tmp_path, series_uid="1.2.3.9")
    edit(paths[5], **{tag: None})
    msg = read_error(tmp_path)
    assert f"has no valid {tag}" in msg and paths[5].name in msg


def test_error_multiframe_not_supported(tmp_path: Path):
    paths = write_series(tmp_path, n=1)
    edit(paths[0], NumberOfFrames=3)
    assert "not supported yet" in read_error(tmp_path)


def _syntax_without_decoder():
    """A compressed transfer syntax no installed pydicom plugin decodes (pyjpegls, which highdicom
    brings, decodes JPEG-LS; none here decodes lossless JPEG)."""
    from pydicom.uid import JPEGLossless, JPEGLosslessSV1

    from medssl.data.dicom import _decoder_missing

    for uid in (JPEGLSLossless, JPEGLosslessSV1, JPEGLossless):
        if _decoder_missing(uid):
            return uid
    pytest.skip("every candidate transfer syntax has a decoder installed")


def test_error_undecodable_pixel_data(tmp_path: Path):
    from pydicom.encaps import encapsulate

    syntax = _syntax_without_decoder()
    paths = write_series(tmp_path, n=3)
    ds = pydicom.dcmread(paths[1])
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encapsulate([b"\xff\xd8 not really a JPEG-LS stream \xff\xd9"])
    ds["PixelData"].VR = "OB"
    save(ds, paths[1])
    msg = read_error(tmp_path)
    assert "cannot decode the pixel data" in msg and paths[1].name in msg
    assert syntax.name in msg and syntax in msg
    assert "pylibjpeg-openjpeg" in msg and "python-gdcm" in msg


def test_error_truncated_slice_is_corrupt_data_not_a_missing_plugin(tmp_path: Path):
    paths = write_series(tmp_path / "s", n=3)
    size = paths[1].stat().st_size
    with open(paths[1], "r+b") as fh:
        fh.truncate(size - 100)
    msg = read_error(tmp_path / "s")
    assert f"truncated or corrupt pixel data in {paths[1].name}" in msg
    assert "less than expected" in msg and "pip install" not in msg and "\n" not in msg


def test_patient_data_never_leaks(tmp_path: Path):
    """The identifying values of the files appear in no error, no meta, no ``volume_info``."""
    ok = tmp_path / "ok"
    write_series(ok)
    vol = read_dicom_series(ok)
    text = json.dumps(volume_info(vol)) + repr(vol.meta) + repr(find_dicom_series(ok))
    for secret in SECRETS:
        assert secret not in text
    two = tmp_path / "two"
    write_series(two, series_uid="1.2.3.4.1")
    write_series(two, series_uid="1.2.3.4.2", prefix="v")
    read_error(two)  # read_error checks the message for the secrets
    gap = tmp_path / "gap"
    write_series(gap, offsets=[0, 2, 6])
    read_error(gap)


# ------------------------------------------------------------------------------ CLI errors
def test_cli_error_is_one_line(tmp_path: Path):
    folder = tmp_path / "series"
    write_series(folder, offsets=[0, 2, 4, 8, 10])
    proc = subprocess.run(
        [sys.executable, "-m", "medssl.cli", "data", "info", str(folder)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and str(folder) in lines[0] and "missing" in lines[0]
    assert "Traceback" not in proc.stderr
    for secret in SECRETS:
        assert secret not in proc.stderr + proc.stdout


def test_data_error_is_medssl_error():
    assert issubclass(DataError, MedsslError)
