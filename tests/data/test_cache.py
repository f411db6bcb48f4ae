"""The memory-mapped volume cache (medssl.data.cache)."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import medssl.data.cache as cache_mod
from medssl.data.cache import VolumeCache, cache_dataset, default_cache_dir
from medssl.data.dataset import DatasetSpec, image_path, label_path, write_dataset_json
from medssl.data.io import read_volume, write_volume
from medssl.data.volume import Volume
from medssl.errors import DataError


def _rotation(deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    return np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])


def _ct(shape=(20, 18, 7), seed=0) -> Volume:
    rng = np.random.default_rng(seed)
    arr = rng.integers(-1024, 2000, size=shape).astype(np.int16)
    return Volume(arr, spacing=(0.7, 0.8, 2.5), origin=(-120.5, 33.25, 7.0), direction=_rotation(30))


def _labels(shape=(20, 18, 7)) -> Volume:
    lab = np.zeros(shape, np.uint8)
    lab[2:10, 3:12, 1:5] = 1  # 288 voxels
    lab[12:18, 4:6, 2:6] = 2  # 48 voxels
    lab[15, 15, 6] = 5  # a single voxel
    return Volume(lab, spacing=(0.7, 0.8, 2.5))


@pytest.fixture
def ct_file(tmp_path) -> Path:
    return write_volume(_ct(), tmp_path / "src" / "ct.nii.gz")


@pytest.fixture
def label_file(tmp_path) -> Path:
    return write_volume(_labels(), tmp_path / "src" / "lab.nii.gz")


class CountingReader:
    """Wraps medssl.data.cache.read_volume, counting calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, path):
        self.calls += 1
        return read_volume(path)


@pytest.fixture
def reader(monkeypatch) -> CountingReader:
    r = CountingReader()
    monkeypatch.setattr(cache_mod, "read_volume", r)
    return r


def _forbid_reading(monkeypatch) -> None:
    def boom(path):
        raise AssertionError(f"the source {path} was read again")

    monkeypatch.setattr(cache_mod, "read_volume", boom)


def _bump_mtime(path: Path, delta_ns: int = 5_000_000_000) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + delta_ns))


# ------------------------------------------------------------------------------- round trip
def test_round_trip_keeps_values_dtype_geometry(tmp_path, ct_file):
    ref = read_volume(ct_file)
    cv = VolumeCache(tmp_path / "cache").get(ct_file)
    assert isinstance(cv.array, np.memmap) and cv.array.dtype == np.int16
    np.testing.assert_array_equal(cv.array, ref.array)
    assert cv.shape == ref.shape and cv.spacing == ref.spacing
    assert cv.geometry == ref.geometry_dict()
    vol = cv.volume()
    assert isinstance(vol.array, np.memmap)  # memmap-backed, no copy
    assert vol.spacing == ref.spacing and vol.origin == ref.origin
    np.testing.assert_array_equal(vol.direction, ref.direction)
    assert vol.orientation == ref.orientation and vol.meta == ref.meta
    assert not cv.array.flags.writeable
    assert cv.array.flags.c_contiguous  # stored C-ordered: patches are copies of contiguous runs


def test_second_get_does_not_read_source(tmp_path, ct_file, monkeypatch):
    cache = VolumeCache(tmp_path / "cache")
    first = np.array(cache.get(ct_file).array)
    _forbid_reading(monkeypatch)
    again = VolumeCache(tmp_path / "cache").get(ct_file)  # a fresh object: state is on disk
    np.testing.assert_array_equal(again.array, first)
    assert cache.is_cached(ct_file)


def test_labels_stay_uint8(tmp_path, label_file):
    cv = VolumeCache(tmp_path / "cache").get(label_file)
    assert cv.array.dtype == np.uint8
    np.testing.assert_array_equal(cv.array, _labels().array)


def test_changed_mtime_or_size_invalidates(tmp_path, ct_file, reader):
    cache = VolumeCache(tmp_path / "cache")
    cache.get(ct_file)
    cache.get(ct_file)
    assert reader.calls == 1
    _bump_mtime(ct_file)  # same bytes, newer mtime
    cache.get(ct_file)
    assert reader.calls == 2
    new = _ct(seed=1)
    write_volume(new, ct_file)  # new content (and size)
    cv = cache.get(ct_file)
    assert reader.calls == 3
    np.testing.assert_array_equal(cv.array, new.array)
    # the data files of old versions are removed
    assert len(list(cache.entry_dir(ct_file).glob("*.npy"))) == 1


def test_entry_without_sidecar_is_absent(tmp_path, ct_file, reader):
    cache = VolumeCache(tmp_path / "cache")
    cv = cache.get(ct_file)
    (cache.entry_dir(ct_file) / "entry.json").unlink()  # as if killed between data and sidecar
    assert not cache.is_cached(ct_file)
    cache.get(ct_file)
    assert reader.calls == 2


def test_half_written_files_are_never_used(tmp_path, ct_file, reader):
    cache = VolumeCache(tmp_path / "cache")
    cv = cache.get(ct_file)
    entry = cache.entry_dir(ct_file)
    data = cv.path.read_bytes()
    side = entry / "entry.json"

    # a leftover temporary file of a killed writer is ignored
    (entry / f".{cv.path.name}.tmp-abc123").write_bytes(data[: len(data) // 2])
    cache.get(ct_file)
    assert reader.calls == 1

    # a truncated data file behind a valid sidecar is reconverted
    cv.path.write_bytes(data[: len(data) // 2])
    np.testing.assert_array_equal(cache.get(ct_file).array, read_volume(ct_file).array)
    assert reader.calls == 2

    # a half-written (invalid) sidecar is treated as absent
    side.write_text(side.read_text()[:40])
    cache.get(ct_file)
    assert reader.calls == 3

    # a sidecar of another format version or another source is not trusted
    meta = json.loads(side.read_text())
    side.write_text(json.dumps({**meta, "format_version": 0}))
    cache.get(ct_file)
    assert reader.calls == 4
    assert json.loads(side.read_text())["source"] == str(ct_file.resolve())


def test_concurrent_conversions_all_valid(tmp_path, ct_file):
    ref = read_volume(ct_file).array
    results, errors = [], []

    def work():
        try:
            results.append(np.array(VolumeCache(tmp_path / "cache").get(ct_file).array))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 4
    for r in results:
        np.testing.assert_array_equal(r, ref)
    entry = VolumeCache(tmp_path / "cache").entry_dir(ct_file)
    assert not [p for p in entry.iterdir() if ".tmp-" in p.name]  # no temporaries left


def test_corrupt_source_raises_data_error_naming_file(tmp_path):
    bad = tmp_path / "broken_case.nii.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00not really gzip" * 10)
    cache = VolumeCache(tmp_path / "cache")
    with pytest.raises(DataError, match="broken_case.nii.gz"):
        cache.get(bad)
    assert not cache.is_cached(bad)
    with pytest.raises(DataError, match="missing.nii.gz"):
        cache.get(tmp_path / "missing.nii.gz")


# --------------------------------------------------------------------- foreground locations
def test_foreground_locations_only_that_class(tmp_path, label_file):
    cache = VolumeCache(tmp_path / "cache")
    lab = _labels().array
    fg = cache.foreground_locations(label_file, max_per_class=100, seed=0)
    assert sorted(fg) == [1, 2, 5]
    assert fg[1].shape == (100, 3) and fg[2].shape == (48, 3) and fg[5].shape == (1, 3)
    for cls, locs in fg.items():
        assert locs.dtype == np.int32
        assert (lab[tuple(locs.T)] == cls).all()
        assert len(np.unique(locs, axis=0)) == len(locs)  # drawn without replacement
    np.testing.assert_array_equal(fg[5], [[15, 15, 6]])


def test_foreground_locations_deterministic_and_stored(tmp_path, label_file, monkeypatch):
    a = VolumeCache(tmp_path / "c1").foreground_locations(label_file, max_per_class=50, seed=3)
    b = VolumeCache(tmp_path / "c2").foreground_locations(label_file, max_per_class=50, seed=3)
    for cls in a:
        np.testing.assert_array_equal(a[cls], b[cls])
    other = VolumeCache(tmp_path / "c2").foreground_locations(label_file, max_per_class=50, seed=4)
    assert not np.array_equal(a[1], other[1])

    # the second call loads the stored file: no source read, no scan of the label map
    _forbid_reading(monkeypatch)
    monkeypatch.setattr(cache_mod, "_class_locations", lambda *a, **k: pytest.fail("recomputed"))
    again = VolumeCache(tmp_path / "c1").foreground_locations(label_file, max_per_class=50, seed=3)
    assert sorted(again) == sorted(a)
    for cls in a:
        np.testing.assert_array_equal(again[cls], a[cls])


def test_foreground_locations_of_empty_label_map(tmp_path):
    empty = write_volume(Volume(np.zeros((4, 5, 6), np.uint8)), tmp_path / "empty.nii.gz")
    assert VolumeCache(tmp_path / "cache").foreground_locations(empty) == {}
    assert VolumeCache(tmp_path / "cache").foreground_locations(empty) == {}


def test_foreground_locations_rejects_non_integer_labels(tmp_path):
    soft = np.zeros((4, 5, 6), np.float32)
    soft[1, 2, 3] = 0.5
    src = write_volume(Volume(soft), tmp_path / "soft_label.nii.gz")
    with pytest.raises(DataError, match="soft_label.nii.gz.*non-integer"):
        VolumeCache(tmp_path / "cache").foreground_locations(src)
    soft[1, 2, 3] = 2.0  # float storage of integer classes is fine
    src = write_volume(Volume(soft), tmp_path / "float_label.nii.gz")
    fg = VolumeCache(tmp_path / "cache").foreground_locations(src)
    assert list(fg) == [2] and fg[2].tolist() == [[1, 2, 3]]


# ---------------------------------------------------------------------------- cache_dataset
def _tiny_dataset(root: Path) -> None:
    write_dataset_json(
        root, DatasetSpec(name="tiny", labels={"background": 0, "organ": 1, "lesion": 2}, channel_names={"0": "CT"})
    )
    for i, (split, labeled) in enumerate([("train", True), ("train", True), ("unlabeled", False), ("test", True)]):
        name = f"case_{i:03d}"
        write_volume(_ct(seed=i), image_path(root, split, name))
        if labeled:
            write_volume(_labels(), label_path(root, split, name))


def test_cache_dataset_converts_everything(tmp_path, monkeypatch, capsys):
    root = tmp_path / "ds"
    _tiny_dataset(root)
    monkeypatch.setenv("MEDSSL_CACHE", str(tmp_path / "cache_root"))
    before = sorted(root.rglob("*"))
    out = cache_dataset(root, progress=False)
    assert out == default_cache_dir(root) and out.is_relative_to(tmp_path / "cache_root")
    assert sorted(root.rglob("*")) == before  # nothing written into the dataset folder
    assert capsys.readouterr().err == ""  # no progress bar when progress=False
    files = sorted(root.rglob("*.nii.gz"))
    assert len(files) == 7  # 4 images, 3 labels
    _forbid_reading(monkeypatch)
    cache = VolumeCache(out)
    for f in files:
        assert cache.is_cached(f)
        np.testing.assert_array_equal(cache.get(f).array, read_volume(f).array)
    assert len(list(out.rglob("*.fg-20000-s0.npz"))) == 3
    # a second run converts nothing (the reader raises if called)
    assert cache_dataset(root, progress=False) == out


def test_cache_dataset_custom_dir_and_progress(tmp_path, capsys):
    root = tmp_path / "ds"
    _tiny_dataset(root)
    out = cache_dataset(root, cache_dir=tmp_path / "cache", progress=True)
    assert out == tmp_path / "cache" and (out / "CACHEDIR.TAG").is_file()
    assert "7/7" in capsys.readouterr().err
    assert not (root / ".medssl_cache").exists()


def test_cache_dataset_corrupt_case_names_file(tmp_path):
    root = tmp_path / "ds"
    _tiny_dataset(root)
    image_path(root, "unlabeled", "case_002").write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="case_002_0000.nii.gz"):
        cache_dataset(root, progress=False)


# ------------------------------------------------------------------------------- real data
def test_real_spleen_ct_cached_equals_read(tmp_path, shared_data):
    src = shared_data / "volumes" / "spleen_ct" / "image.nii.gz"
    ref = read_volume(src)
    cv = VolumeCache(tmp_path / "cache").get(src)
    assert cv.array.dtype == ref.array.dtype
    np.testing.assert_array_equal(cv.array, ref.array)
    assert cv.geometry == ref.geometry_dict()
    vol = cv.volume()
    assert vol.same_geometry(ref, atol=0) and vol.orientation == ref.orientation

    lab = shared_data / "volumes" / "spleen_ct" / "label.nii.gz"
    fg = VolumeCache(tmp_path / "cache").foreground_locations(lab, max_per_class=1000)
    assert list(fg) == [1] and fg[1].shape == (1000, 3)
    assert (read_volume(lab).array[tuple(fg[1].T)] == 1).all()


def _sum_via_cache(args) -> list[int]:
    cache_dir, src = args
    out = []
    for _ in range(3):
        out.append(int(np.asarray(VolumeCache(cache_dir).get(src).array, dtype=np.int64).sum()))
    return out


def test_concurrent_processes_convert_same_file(tmp_path, ct_file):
    """DataLoader workers / DDP ranks: several processes convert one source at once."""
    import multiprocessing as mp

    ref = int(read_volume(ct_file).array.astype(np.int64).sum())
    # spawn, not fork: safe even when torch's thread pools exist in the test process
    with mp.get_context("spawn").Pool(4) as pool:
        results = pool.map(_sum_via_cache, [(tmp_path / "cache", ct_file)] * 4)
    assert all(v == ref for r in results for v in r)
    entry = VolumeCache(tmp_path / "cache").entry_dir(ct_file)
    assert sorted(p.suffix for p in entry.iterdir()) == [".json", ".npy"]
