"""Several input channels per case: dataset layout, checks, alignment, normalisation, phantoms."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from medssl.data.channels import align_channels, resample_to
from medssl.data.check import check_dataset
from medssl.data.dataset import list_cases, read_dataset_json
from medssl.data.intensity import channel_modes
from medssl.data.io import read_volume, write_volume
from medssl.data.phantom_channels import make_channel_phantom
from medssl.data.phantoms import generate_sample_data
from medssl.data.volume import Volume
from medssl.errors import ConfigError, DataError


@pytest.fixture(scope="module")
def two_ch(tmp_path_factory):
    root = tmp_path_factory.mktemp("ch") / "ds"
    generate_sample_data(root, seed=1, n_labeled=3, n_unlabeled=1, n_val=1, n_test=1, progress=False,
                         shape=(32, 32, 32), channels=2)
    return root


def _copy(src, tmp_path):
    dst = tmp_path / "ds"
    shutil.copytree(src, dst)
    return dst


def test_cases_carry_every_channel_in_order(two_ch):
    spec = read_dataset_json(two_ch)
    assert spec.num_channels == 2 and spec.modalities == ["T1", "T2"]
    cases = list_cases(two_ch, "train", spec)
    assert [c.name for c in cases] == ["phantom_tr_000", "phantom_tr_001", "phantom_tr_002"]
    assert [p.name for p in cases[1].images] == ["phantom_tr_001_0000.nii.gz", "phantom_tr_001_0001.nii.gz"]
    sub = cases[1].select([1])
    assert sub.image.name == "phantom_tr_001_0001.nii.gz" and sub.channels == ()
    assert spec.select([1]).channel_names == {"0": "T2"}
    with pytest.raises(ConfigError, match=r"0\.\.1"):
        spec.select([2])


def test_missing_channel_is_one_line_naming_the_case(two_ch, tmp_path):
    root = _copy(two_ch, tmp_path)
    (root / "imagesTr" / "phantom_tr_001_0001.nii.gz").unlink()
    with pytest.raises(DataError) as err:
        list_cases(root, "train")
    msg = str(err.value)
    assert "\n" not in msg and "'phantom_tr_001' lacks channel 1 (T2: phantom_tr_001_0001.nii.gz)" in msg
    report = check_dataset(root, progress=False)
    codes = {(p.case, p.code) for p in report.errors}
    assert ("phantom_tr_001", "missing_channel") in codes
    assert not any(p.code == "orphan_label" for p in report.problems)  # its label is not an orphan


def test_extra_and_unsuffixed_channel_files_are_refused(two_ch, tmp_path):
    root = _copy(two_ch, tmp_path)
    shutil.copy(root / "imagesTr" / "phantom_tr_000_0001.nii.gz", root / "imagesTr" / "phantom_tr_000_0002.nii.gz")
    with pytest.raises(DataError, match="channel 2 found but dataset.json declares 2 channels"):
        list_cases(root, "train")
    (root / "imagesTr" / "phantom_tr_000_0002.nii.gz").unlink()
    shutil.copy(root / "imagesTr" / "phantom_tr_000_0001.nii.gz", root / "imagesTr" / "other.nii.gz")
    with pytest.raises(DataError, match="no channel suffix"):
        list_cases(root, "train")


def test_single_channel_names_with_digits_stay_case_names(tmp_path):
    root = tmp_path / "one"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "a": 1}, "channel_names": {"0": "CT"}}))
    for name in ("p_0012.nii.gz", "q_0000.nii.gz"):
        (root / "imagesTr" / name).write_bytes(b"")
    assert [c.name for c in list_cases(root, "train")] == ["p_0012", "q"]
    (root / "imagesTr" / "q_0001.nii.gz").write_bytes(b"")  # q_0000 exists: q_0001 is an extra channel
    with pytest.raises(DataError, match="extra channel"):
        list_cases(root, "train")


def test_channel_on_another_grid_refused_or_resampled(two_ch, tmp_path):
    root = _copy(two_ch, tmp_path)
    path = root / "imagesTr" / "phantom_tr_002_0001.nii.gz"
    vol = read_volume(path)
    write_volume(Volume(vol.array, spacing=(1.5, 1.5, 3.0)), path)
    report = check_dataset(root, progress=False)
    bad = [p for p in report.errors if p.code == "channel_geometry"]
    assert len(bad) == 1 and bad[0].case == "phantom_tr_002" and "spacing" in bad[0].message
    relaxed = check_dataset(root, progress=False, resample_channels=True)
    assert not [p for p in relaxed.errors if p.code == "channel_geometry"]
    assert [p.code for p in relaxed.warnings if p.code == "channel_geometry"] == ["channel_geometry"]


def test_align_channels_refuses_then_resamples_in_world_coordinates():
    arr = np.arange(8 * 8 * 8, dtype=np.float32).reshape(8, 8, 8)
    ref = Volume(arr, spacing=(1, 1, 1))
    shifted = Volume(arr.copy(), spacing=(1, 1, 1), origin=(1.0, 0.0, 0.0))  # voxel i sits at x = i + 1
    with pytest.raises(DataError, match=r"case 'c': channel 1 is not on channel 0's grid \(origin"):
        align_channels([ref, shifted], case="c")
    out = align_channels([ref, shifted], case="c", resample=True)
    # ref voxel (i, j, k) is at x = i, i.e. shifted voxel i - 1: a shift by one voxel, 0 outside
    np.testing.assert_allclose(out[1][1:], arr[:-1], atol=1e-4)
    assert np.all(out[1][0] == 0)
    np.testing.assert_allclose(resample_to(ref, ref), arr, atol=1e-4)


def test_channel_modes():
    assert channel_modes("zscore", ["T1", "T2"]) == ["zscore", "zscore"]
    assert channel_modes("auto", ["CT", "PET"]) == ["ct", "zscore"]
    assert channel_modes(["ct", "zscore"], ["CT", "T1"]) == ["ct", "zscore"]
    with pytest.raises(ValueError, match="lists 1 modes for 2 channels"):
        channel_modes(["ct"], ["CT", "T1"])


@pytest.mark.parametrize("shape", [(48, 48), (32, 32, 32)])
def test_channel_phantom_needs_both_channels(shape):
    case = make_channel_phantom(np.random.default_rng(0), shape)
    assert case.images.shape == (2, *shape) and case.label.shape == shape
    lab = case.label
    assert {1, 2} <= set(np.unique(lab).tolist())
    ch0, ch1 = case.images
    # channel 0: the two classes look alike; channel 1: class 2 looks like background
    assert abs(ch0[lab == 1].mean() - ch0[lab == 2].mean()) < 0.05
    assert ch0[lab > 0].mean() - ch0[lab == 0].mean() > 0.6
    assert abs(ch1[lab == 2].mean() - ch1[lab == 0].mean()) < 0.05
    assert ch1[lab == 1].mean() - ch1[lab == 2].mean() > 0.4
