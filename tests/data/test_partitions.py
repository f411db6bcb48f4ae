"""Partition-structured M x S batches for global contrastive pretraining (medssl.data.partitions)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from medssl.data.cache import VolumeCache
from medssl.data.dataset import Case, list_cases
from medssl.data.partitions import PartitionDataset, partition_bounds
from medssl.data.seg_dataset import StepSampler, _CaseVolumes
from medssl.errors import DataError

# In-plane shapes and depths of the synthetic volumes: depths 12/17/20 give partitions of unequal
# sizes, and the (16, 12) and (14, 16) slices make the 2D/3D crops pad along one axis.
SHAPES = [(16, 16, 12), (16, 12, 17), (16, 16, 20), (14, 16, 17)]
KEYS = ("image", "volume", "partition", "slice")


def _volume(v: int, shape) -> np.ndarray:
    """Voxel value ``100 v + z + (16 x + y) / 1000``: the integer part encodes volume and slice,
    the fraction the in-plane position."""
    x, y, z = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (100.0 * v + z + (16 * x + y) / 1000.0).astype(np.float32)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A medssl dataset folder with 4 unlabeled volumes, its cases, cache folder and raw arrays."""
    root = tmp_path_factory.mktemp("partitions")
    ds = root / "ds"
    (ds / "imagesUnlabeled").mkdir(parents=True)
    (ds / "dataset.json").write_text(
        json.dumps({"name": "toy", "channel_names": {"0": "MRI"}, "labels": {"background": 0, "organ": 1},
                    "file_ending": ".nii.gz", "numTraining": 0})
    )
    raws = []
    for v, shape in enumerate(SHAPES):
        arr = _volume(v, shape)
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(ds / "imagesUnlabeled" / f"case{v}_0000.nii.gz"))
        raws.append(arr)
    cases = list_cases(ds, "unlabeled")
    assert [c.name for c in cases] == [f"case{v}" for v in range(len(SHAPES))]
    cache_dir = root / "cache"
    cache = VolumeCache(cache_dir)
    for case, arr in zip(cases, raws):  # the reader keeps nibabel's (x, y, z) order
        np.testing.assert_array_equal(cache.get(case.image).array, arr)
    return cases, cache_dir, raws


def _ds(data, dims=2, size=(12, 14), m=3, s=4, seed=0, **kw) -> PartitionDataset:
    cases, cache_dir, _ = data
    return PartitionDataset(cases, cache_dir, dims, size, num_volumes=m, num_partitions=s, length=1000, seed=seed, **kw)


def _norms(data, intensity="zscore", ct_window=(-1000.0, 1000.0)):
    cases, cache_dir, _ = data
    vols = _CaseVolumes(cases, cache_dir, intensity, ct_window)
    return [vols.norm(i) for i in range(len(cases))]


def _padded_crop(arr: np.ndarray, start, size, pad: float) -> np.ndarray:
    """Independent reference for a padded crop: embed in a padded array, then slice."""
    margin = max(size)
    big = np.pad(arr, margin, mode="constant", constant_values=pad)
    return big[tuple(slice(st + margin, st + margin + sz) for st, sz in zip(start, size))]


def _centre(dim: int, size: int) -> int:
    return (dim - size) // 2 if dim >= size else -((size - dim) // 2)


def _same(a: dict, b: dict) -> bool:
    return all(torch.equal(a[k], b[k]) for k in KEYS)


# ------------------------------------------------------------------------------ partition_bounds
@pytest.mark.parametrize("depth,s", [(12, 4), (17, 4), (20, 3), (7, 7), (5, 1), (100, 6), (13, 5)])
def test_partition_bounds_cover_depth_like_array_split(depth, s):
    bounds = partition_bounds(depth, s)
    assert len(bounds) == s
    assert bounds[0][0] == 0 and bounds[-1][1] == depth
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # consecutive, no gap/overlap
    sizes = [hi - lo for lo, hi in bounds]
    assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
    expected = [(int(p[0]), int(p[-1]) + 1) for p in np.array_split(np.arange(depth), s)]
    assert bounds == expected


def test_partition_bounds_errors_name_depth_and_s():
    with pytest.raises(ValueError, match=r"depth 3.*S=4"):
        partition_bounds(3, 4)
    with pytest.raises(ValueError, match=r"S=0"):
        partition_bounds(10, 0)
    with pytest.raises(ValueError, match=r"S=-2"):
        partition_bounds(10, -2)


# ------------------------------------------------------------------------------ batch structure
@pytest.mark.parametrize("dims,size", [(2, (12, 14)), (3, (8, 10, 6))])
@pytest.mark.parametrize("rank,world", [(0, 1), (1, 2)])
def test_every_batch_has_one_item_per_volume_and_partition(data, dims, size, rank, world):
    m, s, seed = 3, 4, 5
    ds = _ds(data, dims, size, m=m, s=s, seed=seed)
    b = m * s
    assert ds.batch_size == b
    indices = list(StepSampler(8, b, rank=rank, world_size=world))
    n_cases = len(data[0])
    for t in range(8):
        batch = [ds[i] for i in indices[t * b : (t + 1) * b]]
        vols = [int(it["volume"]) for it in batch]
        parts = [int(it["partition"]) for it in batch]
        pairs = set(zip(vols, parts))
        assert len(pairs) == b  # every (volume, partition) pair exactly once
        assert len(set(vols)) == m
        for v in set(vols):
            assert sorted(p for vv, p in zip(vols, parts) if vv == v) == list(range(s))
        # volume-major order and the documented volume draw
        step_key = t * world + rank
        chosen = np.random.default_rng([seed, step_key]).choice(n_cases, m, replace=False)
        assert vols == [int(chosen[k // s]) for k in range(b)]
        assert parts == [k % s for k in range(b)]


# ------------------------------------------------------------------------------ content, 2D
def test_2d_slice_in_partition_and_content_is_normalised_slice(data):
    _, _, raws = data
    size = (12, 14)
    ds = _ds(data, 2, size, m=2, s=3, seed=1)
    norms = _norms(data)
    for index in range(0, 240):
        it = ds[index]
        v, p, z = int(it["volume"]), int(it["partition"]), int(it["slice"])
        depth = raws[v].shape[2]
        part = np.array_split(np.arange(depth), 3)[p]
        assert part[0] <= z <= part[-1]
        img = it["image"]
        assert img.shape == (1, *size) and img.dtype == torch.float32
        norm = norms[v]
        raw = raws[v][:, :, z]
        start = (_centre(raw.shape[0], size[0]), _centre(raw.shape[1], size[1]))
        expected = norm(_padded_crop(raw, start, size, norm.lo))
        np.testing.assert_allclose(img[0].numpy(), expected, rtol=0, atol=1e-5)


def test_2d_pixels_encode_volume_and_slice(data):
    """With an invertible (wide-window) normalisation, the pixels themselves give back the volume,
    the slice and the centre-crop position: the item shows image[:, :, z] of the right case."""
    _, _, raws = data
    size = (12, 14)
    ds = _ds(data, 2, size, m=2, s=4, seed=3, intensity="ct", ct_window=(-1e4, 1e4))
    for index in range(0, 80):
        it = ds[index]
        v, z = int(it["volume"]), int(it["slice"])
        raw = it["image"][0].numpy().astype(np.float64) * 1e4  # center 0, scale 1e4
        dx, dy = raws[v].shape[:2]
        x0, y0 = _centre(dx, size[0]), _centre(dy, size[1])
        inside = raw[max(0, -x0) : dx - x0, max(0, -y0) : dy - y0]
        assert inside.size > 0
        assert np.all(np.floor(inside + 1e-3) == 100 * v + z)
        # the top-left voxel inside the volume is (max(x0, 0), max(y0, 0))
        frac = inside[0, 0] - (100 * v + z)
        assert frac == pytest.approx((16 * max(x0, 0) + max(y0, 0)) / 1000.0, abs=2e-3)
        if y0 < 0:  # padded with the window's lower bound
            assert raw[0, 0] == pytest.approx(-1e4)


# ------------------------------------------------------------------------------ content, 3D
@pytest.mark.parametrize("size", [(8, 10, 6), (10, 14, 14)])
def test_3d_centre_in_partition_and_content_is_normalised_patch(data, size):
    _, _, raws = data
    ds = _ds(data, 3, size, m=2, s=3, seed=2)
    norms = _norms(data)
    sz = size[2]
    for index in range(0, 60):
        it = ds[index]
        v, p, z = int(it["volume"]), int(it["partition"]), int(it["slice"])
        raw = raws[v]
        depth = raw.shape[2]
        part = np.array_split(np.arange(depth), 3)[p]
        assert part[0] <= z <= part[-1]
        img = it["image"]
        assert img.shape == (1, *size) and img.dtype == torch.float32
        # z start: centred on the slice, clamped inside (deep volume) / around the volume (shallow)
        z0 = min(max(z - sz // 2, min(0, depth - sz)), max(0, depth - sz))
        assert z0 <= z < z0 + sz  # the patch contains its slice
        if depth >= sz:
            assert 0 <= z0 <= depth - sz
            if sz // 2 <= z <= depth - sz + sz // 2:
                assert z0 == z - sz // 2  # not clamped: the slice is the patch centre
        else:
            assert z0 <= 0 and z0 + sz >= depth  # the whole depth, padded
        norm = norms[v]
        candidates = [
            range(raw.shape[a] - size[a] + 1) if raw.shape[a] >= size[a] else [_centre(raw.shape[a], size[a])]
            for a in (0, 1)
        ]
        matches = [
            (x0, y0)
            for x0 in candidates[0]
            for y0 in candidates[1]
            if np.allclose(img[0].numpy(), norm(_padded_crop(raw, (x0, y0, z0), size, norm.lo)), rtol=0, atol=1e-5)
        ]
        assert len(matches) == 1, (index, matches)


def test_3d_in_plane_start_and_centre_cover_their_ranges(data):
    """x/y starts are uniform over the inside positions; centres cover every slice of a partition."""
    _, _, raws = data
    size = (12, 12, 4)
    m, s = 2, 2
    ds = _ds(data, 3, size, m=m, s=s, seed=4, intensity="ct", ct_window=(-1e4, 1e4))
    starts: dict[int, set] = {}
    centres: dict[tuple[int, int], set] = {}
    for index in range(0, 200 * m * s):
        it = ds[index]
        v, p = int(it["volume"]), int(it["partition"])
        centres.setdefault((v, p), set()).add(int(it["slice"]))
        if v == 0:  # 16 x 16 in-plane: x, y starts in 0..4, read back from the fraction
            code = int(round(float(it["image"][0, 0, 0, 0]) * 1e4 * 1000)) % 1000  # 16 x0 + y0
            starts.setdefault(v, set()).add(divmod(code, 16))
    assert starts[0] == {(x, y) for x in range(5) for y in range(5)}
    for v, raw in enumerate(raws):
        for p, part in enumerate(np.array_split(np.arange(raw.shape[2]), s)):
            assert centres[(v, p)] == set(part.tolist())


# ------------------------------------------------------------------------------ determinism
@pytest.mark.parametrize("dims,size", [(2, (12, 14)), (3, (8, 10, 6))])
def test_item_is_pure_function_of_seed_and_index(data, dims, size):
    a = _ds(data, dims, size, seed=7)
    b = _ds(data, dims, size, seed=7)  # a fresh object: no state carried between items
    order = [37, 3, 200, 3, 0, 999, 37]
    first = {i: a[i] for i in order}
    for i in reversed(order):
        assert _same(first[i], b[i])
        assert _same(first[i], a[i])


def test_documented_position_seed(data):
    """The slice of item b of step k comes from default_rng([seed, k, m, s, 1]), not from the
    volume-choice stream default_rng([seed, k]) (the same stream as [seed, k, 0, 0])."""
    _, _, raws = data
    seed, m_, s_ = 11, 2, 3
    ds = _ds(data, 2, (12, 14), m=m_, s=s_, seed=seed)
    for index in range(0, 60):
        it = ds[index]
        k, b = divmod(index, m_ * s_)
        m, s = divmod(b, s_)
        lo, hi = partition_bounds(raws[int(it["volume"])].shape[2], s_)[s]
        assert int(it["slice"]) == int(np.random.default_rng([seed, k, m, s, 1]).integers(lo, hi))


def test_different_seeds_draw_different_batches(data):
    a, b = _ds(data, 2, (12, 14), seed=0), _ds(data, 2, (12, 14), seed=1)
    n = 40 * a.batch_size
    vols_a = [int(a[i]["volume"]) for i in range(n)]
    vols_b = [int(b[i]["volume"]) for i in range(n)]
    assert vols_a != vols_b
    slices_a = [int(a[i]["slice"]) for i in range(n)]
    slices_b = [int(b[i]["slice"]) for i in range(n)]
    assert slices_a != slices_b


@pytest.mark.parametrize("dims,size", [(2, (12, 14)), (3, (8, 10, 6))])
def test_dataloader_batches_equal_direct_indexing_and_resume(data, dims, size):
    ds = _ds(data, dims, size, seed=3)
    b = ds.batch_size
    loader = DataLoader(ds, batch_size=b, sampler=StepSampler(5, b), num_workers=0)
    batches = list(loader)
    assert len(batches) == 5
    for t, batch in enumerate(batches):
        direct = [ds[t * b + j] for j in range(b)]
        for key in KEYS:
            assert torch.equal(batch[key], torch.stack([d[key] for d in direct]))
    # a run resumed at step 3 draws the batches of steps 3 and 4 of the uninterrupted run
    resumed = list(DataLoader(ds, batch_size=b, sampler=StepSampler(5, b, start_step=lambda: 3)))
    for got, want in zip(resumed, batches[3:], strict=True):
        assert all(torch.equal(got[k], want[k]) for k in KEYS)


def test_worker_processes_draw_the_same_batches(data):
    ds = _ds(data, 3, (8, 10, 6), seed=9)
    b = ds.batch_size
    plain = list(DataLoader(ds, batch_size=b, sampler=StepSampler(4, b), num_workers=0))
    workers = list(DataLoader(ds, batch_size=b, sampler=StepSampler(4, b), num_workers=2))
    for got, want in zip(workers, plain, strict=True):
        assert all(torch.equal(got[k], want[k]) for k in KEYS)


# ------------------------------------------------------------------------------ coverage
def test_every_slice_of_a_partition_is_drawn_and_volumes_vary(data):
    _, _, raws = data
    m, s = 2, 3
    ds = _ds(data, 2, (12, 14), m=m, s=s, seed=6)
    seen: dict[tuple[int, int], set] = {}
    volume_sets = []
    for t in range(200):
        batch = [ds[t * m * s + j] for j in range(m * s)]
        volume_sets.append(frozenset(int(it["volume"]) for it in batch))
        for it in batch:
            seen.setdefault((int(it["volume"]), int(it["partition"])), set()).add(int(it["slice"]))
    for v, raw in enumerate(raws):
        for p, (lo, hi) in enumerate(partition_bounds(raw.shape[2], s)):
            assert seen[(v, p)] == set(range(lo, hi)), (v, p)
    assert len(set(volume_sets)) == 6  # all C(4, 2) volume pairs occur
    assert len({vs for vs in volume_sets[:5]}) > 1


# ------------------------------------------------------------------------------ collation
@pytest.mark.parametrize("dims,size", [(2, (12, 14)), (3, (8, 10, 6))])
def test_default_collation_shapes(data, dims, size):
    m, s = 2, 4
    ds = _ds(data, dims, size, m=m, s=s)
    b = m * s
    loader = DataLoader(ds, batch_size=b, sampler=StepSampler(3, b))
    assert len(loader) == 3
    batch = next(iter(loader))
    assert batch["image"].shape == (b, 1, *size) and batch["image"].dtype == torch.float32
    for key in ("volume", "partition", "slice"):
        assert batch[key].shape == (b,) and batch[key].dtype == torch.int64
    assert batch["partition"].tolist() == list(range(s)) * m


# ------------------------------------------------------------------------------ errors
def test_constructor_errors(data):
    cases, cache_dir, _ = data

    def make(**kw):
        args = dict(cases=cases, cache_dir=cache_dir, spatial_dims=2, size=(12, 14), num_volumes=2,
                    num_partitions=4, length=10)
        args.update(kw)
        return PartitionDataset(**args)

    with pytest.raises(ValueError, match="spatial_dims must be 2"):
        make(spatial_dims=1)
    with pytest.raises(ValueError, match="spatial_dims must be 2"):
        make(spatial_dims=4, size=(8, 8, 8, 8))
    with pytest.raises(ValueError, match=r"size \(12, 14\) must have 3 values"):
        make(spatial_dims=3)
    with pytest.raises(ValueError, match=r"size \(8, 8, 8\) must have 2 values"):
        make(size=(8, 8, 8))
    with pytest.raises(ValueError, match="positive"):
        make(size=(0, 8))
    with pytest.raises(ValueError, match="at least one case"):
        make(cases=[])
    with pytest.raises(ValueError, match=r"M=5 exceeds the 4 cases"):
        make(num_volumes=5)
    with pytest.raises(ValueError, match=r"M=0"):
        make(num_volumes=0)
    with pytest.raises(ValueError, match=r"S=0"):
        make(num_partitions=0)
    # case0 has 12 slices: 13 partitions cannot fit, and the message names its file
    with pytest.raises(ValueError, match=r"case0_0000\.nii\.gz: depth 12 .* S=13"):
        make(num_partitions=13)
    make(num_partitions=12)  # exactly one slice per partition is fine


def test_non_3d_volume_is_rejected_at_construction(tmp_path):
    """Depths are read when the dataset is built, so a 2D image fails there, naming its file."""
    flat = tmp_path / "flat_0000.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), str(flat))
    with pytest.raises((DataError, ValueError), match=r"flat_0000\.nii\.gz"):
        PartitionDataset([Case("flat", flat)], tmp_path / "cache", 2, (8, 8), 1, 1, 10)
