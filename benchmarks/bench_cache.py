"""Random-patch cost: decoding a .nii.gz per sample vs the medssl memory-mapped volume cache.

One run, one synthetic CT-like int16 volume (smooth anatomy-like field, a body ellipse in air,
CT-like noise, so gzip compresses it about as much as a real CT), saved as ``.nii.gz`` with
``medssl.data.io.write_volume`` in a temporary folder. For ``--repeats`` repeats it times random
``--patch-size``^3 patches, the same patch positions for every method:

* ``decode per sample``: ``read_volume`` of the .nii.gz + ``crop_patch`` (a naive Dataset);
* ``nibabel proxy slice``: ``nib.load(path).dataobj[slices]``, which decompresses the gzip stream
  only up to the end of the patch (the peer that avoids a full decode);
* ``cache get + crop``: ``VolumeCache.get`` (stat + sidecar + ``np.load(mmap_mode="r")``) +
  ``crop_patch`` from the memory map, page cache warm (the steady state of training); also
  ``crop_patch`` alone on a memory map held open, to show what ``get`` itself costs;
* ``cache, page cache dropped``: the same after ``posix_fadvise(DONTNEED)`` on the ``.npy``,
  so each patch is read from the disk;
* ``cache cold get``: the one-off conversion (decode + write the .npy), reported separately.

Each repeat's per-patch mean is taken; the table shows the median over repeats and the speedup
of each method against decoding per sample (target: at least 50x for the warm cache).

Usage::

    python benchmarks/bench_cache.py                      # 512x512x200, 5 repeats, ~1 minute
    python benchmarks/bench_cache.py --shape 256 256 100 --repeats 3 --patches 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_ct_like(shape: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """A CT-like int16 volume ``(x, y, z)`` in HU: air outside an elliptic body, smooth tissue
    contrast inside, dense "bone" where the smooth field peaks, Gaussian noise (sigma 20 HU)."""
    from scipy.ndimage import zoom

    rng = np.random.default_rng(seed)
    coarse_shape = tuple(max(2, s // 16) for s in shape)
    field = zoom(rng.standard_normal(coarse_shape).astype(np.float32), [s / c for s, c in zip(shape, coarse_shape)], order=1)
    field = field[: shape[0], : shape[1], : shape[2]]
    x = np.linspace(-1, 1, shape[0], dtype=np.float32)[:, None, None]
    y = np.linspace(-1, 1, shape[1], dtype=np.float32)[None, :, None]
    body = (x / 0.85) ** 2 + (y / 0.65) ** 2 < 1.0  # (X, Y, 1), broadcast along z
    hu = np.where(body, 40.0 + 60.0 * field, -1000.0).astype(np.float32)
    hu += np.where(body & (field > 1.2), 600.0, 0.0).astype(np.float32)  # "bone"
    hu += rng.standard_normal(shape, dtype=np.float32) * 20.0
    return np.clip(hu, -1024, 3071).astype(np.int16)


def _drop_page_cache(path: Path) -> bool:
    """Ask the kernel to forget the cached pages of ``path`` (no root needed for clean pages)."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(512, 512, 200), metavar=("X", "Y", "Z"))
    parser.add_argument("--patch-size", type=int, default=96, help="cubic patch edge (voxels)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (median reported)")
    parser.add_argument("--patches", type=int, default=4, help="patches per repeat for the decoding methods")
    parser.add_argument("--cache-patches", type=int, default=200, help="patches per repeat for the cache methods")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import nibabel as nib

    from medssl.data.cache import VolumeCache
    from medssl.data.io import read_volume, write_volume
    from medssl.data.patches import crop_patch, random_patch_start
    from medssl.data.volume import Volume

    shape = tuple(args.shape)
    size = (args.patch_size,) * 3
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="medssl_bench_cache_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        arr = make_ct_like(shape, args.seed)
        src = write_volume(Volume(arr, spacing=(0.8, 0.8, 1.5)), tmp / "ct.nii.gz")
        gen_s = time.perf_counter() - t0
        raw_mb = arr.nbytes / 2**20
        gz_mb = src.stat().st_size / 2**20
        print(f"python {platform.python_version()}, {os.cpu_count()} cpu(s), {platform.machine()}")
        print(
            f"volume {shape[0]}x{shape[1]}x{shape[2]} int16: {raw_mb:.0f} MB raw, {gz_mb:.0f} MB .nii.gz "
            f"(ratio {raw_mb / gz_mb:.1f}x); made in {gen_s:.1f} s; patch {size[0]}^3; repeats {args.repeats}"
        )

        def starts(rep: int, n: int) -> list[tuple[int, ...]]:
            rng = np.random.default_rng([args.seed, rep])
            return [random_patch_start(shape, size, rng) for _ in range(n)]

        def slices(st: tuple[int, ...]) -> tuple[slice, ...]:
            return tuple(slice(s, s + z) for s, z in zip(st, size))

        per_patch: dict[str, list[float]] = {k: [] for k in ("decode", "nibabel", "warm", "crop", "dropped")}
        cold: list[float] = []
        can_drop = True
        for rep in range(args.repeats):
            # (a) decode the whole .nii.gz per sample, then crop
            pos = starts(rep, args.patches)
            t = time.perf_counter()
            ref = []
            for st in pos:
                ref.append(crop_patch(read_volume(src).array, st, size))
            per_patch["decode"].append((time.perf_counter() - t) / len(pos))

            # (a') nibabel's array proxy: decompress the gzip stream only as far as needed
            t = time.perf_counter()
            nib_patches = [np.asarray(nib.load(src).dataobj[slices(st)]) for st in pos]
            per_patch["nibabel"].append((time.perf_counter() - t) / len(pos))

            # (b) medssl cache: first get converts (cold), later gets map the .npy
            cache = VolumeCache(tmp / f"cache_{rep}")
            t = time.perf_counter()
            cv = cache.get(src)
            cold.append(time.perf_counter() - t)
            for st, a, b in zip(pos, ref, nib_patches):  # all methods cut the same voxels
                assert np.array_equal(a, crop_patch(cv.array, st, size)), "cache patch differs from decode"
                assert np.array_equal(a, b), "nibabel patch differs from decode"
            del cv

            many = starts(rep, args.cache_patches)
            t = time.perf_counter()
            for st in many:
                crop_patch(cache.get(src).array, st, size)
            per_patch["warm"].append((time.perf_counter() - t) / len(many))

            # (b'') crop only, the memory map held open (what a Dataset keeping it would pay)
            held = cache.get(src).array
            t = time.perf_counter()
            for st in many:
                crop_patch(held, st, size)
            per_patch["crop"].append((time.perf_counter() - t) / len(many))
            del held

            # (b') the same with the .npy evicted from the page cache before every patch
            npy = cache.get(src).path
            total = 0.0
            for st in many[: max(1, args.cache_patches // 4)]:
                can_drop = _drop_page_cache(npy) and can_drop
                t = time.perf_counter()
                crop_patch(cache.get(src).array, st, size)
                total += time.perf_counter() - t
            per_patch["dropped"].append(total / max(1, args.cache_patches // 4))

        med = {k: statistics.median(v) for k, v in per_patch.items()}
        base = med["decode"]
        rows = [
            ("decode per sample (read_volume + crop)", "decode"),
            ("nibabel proxy slice (nib.load().dataobj[...])", "nibabel"),
            ("medssl cache get + crop_patch (warm)", "warm"),
            ("  of which crop_patch alone (memmap held open)", "crop"),
            ("medssl cache get + crop_patch (page cache dropped)" + ("" if can_drop else " [fadvise n/a]"), "dropped"),
        ]
        print()
        print(f"{'method':<52} {'median ms/patch':>16} {'speedup vs decode':>18}")
        print("-" * 88)
        for label, key in rows:
            print(f"{label:<52} {med[key] * 1e3:>16.2f} {base / med[key]:>17.1f}x")
        print("-" * 88)
        cold_s = statistics.median(cold)
        print(f"{'medssl cache cold first get (conversion, once)':<52} {cold_s * 1e3:>16.0f}")
        saved = base - med["warm"]
        print(
            f"\ncache vs decode per sample: {base / med['warm']:.0f}x (target >= 50x: "
            f"{'met' if base / med['warm'] >= 50 else 'NOT met'}); vs nibabel proxy: {med['nibabel'] / med['warm']:.0f}x; "
            f"the conversion pays for itself after {cold_s / saved:.1f} patches"
        )
        print(f"total run time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
