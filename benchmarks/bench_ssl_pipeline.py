"""SSL pretraining step: medssl's in-memory batched pipeline against a pre-made batch and a per-sample DataLoader.

One process, real MedMNIST data (BreastMNIST 28 px in 2D, AdrenalMNIST3D 28^3 with
``--spatial-dims 3``), SimCLR (``medssl.methods.image_ssl.SimCLR``) on a ResNet-18 (small 3x3 stem at
28 px), batch 256 (2D) / 32 (3D). Rows, each in images (not views) per second:

* ``(a) medssl step``: what ``medssl.engines.image_ssl.pretrain_ssl`` does per step: index a
  batch from the uint8 training tensor with a permutation, move it to the device, augment the whole
  batch there (the method's ``augmented_views``: ``SSLAugment("simclr").two_views``), then ``train_step`` (forward +
  backward + AdamW step) at medssl's default precision (bf16 autocast + channels_last). Also at
  fp32 (``(a) medssl step, fp32``), to compare pipelines at one precision.
* ``(b) pre-made batch``: the same ``train_step`` on two views augmented once, outside the timing
  (GUIDE section 2, item 13: the same engine with dummy data). ``(a) / (b)`` is the data
  pipeline's share of a step; the target is below 1.15.
* ``(c) per-sample DataLoader``: the pattern of MedMNIST's reference scripts: a
  ``torch.utils.data.Dataset`` whose ``__getitem__`` returns two views of ONE image (the same
  ``SSLAugment`` ops on a batch of 1, i.e. per-sample work, as the reference scripts apply
  torchvision transforms per PIL image), ``DataLoader(batch_size, shuffle, num_workers=--workers)``
  with the default collate, feeding the same ``train_step`` at fp32 (the reference scripts'
  precision, contiguous memory) and at medssl's precision (bf16 + channels_last). Worker start-up
  is not timed (it falls in the warm-up steps), which favours the peer: the reference scripts
  restart their workers every epoch, i.e. every 2 batches on BreastMNIST.

Targets: ``(a)/(b) < 1.15``; medssl/peer at the same precision >= 1.0 on CPU (on 2 cores the
model takes about 95% of a step, so the gain must come from the model side: bf16 + channels_last,
reported as the total gain against the fp32 per-sample pipeline), >= 3 on a GPU (where per-sample
loading dominates).

Timing: ``--repeats`` rounds; each round runs every row once, in an order rotated by one row per
round (slow drift of the machine, and training-state effects, hit every row alike): ``--warmup``
untimed steps (2 more in the first round: the first steps allocate and tune), then a window of
``--steps`` timed steps; a window's images/s is ``steps * batch / seconds`` (CUDA synchronised at
its ends). The table shows the median window per row. A DataLoader row opens a fresh iterator per
round (worker start-up falls in the warm-up steps; after one step the workers are ahead, the
steady state) and shuts it down after its window, so its workers' prefetching does not run into
the next row's timing.

Usage::

    python benchmarks/bench_ssl_pipeline.py                       # BreastMNIST, 2D, batch 256
    python benchmarks/bench_ssl_pipeline.py --spatial-dims 3      # AdrenalMNIST3D, ResNet-18 3D, batch 32
    python benchmarks/bench_ssl_pipeline.py --steps 1 --repeats 2 --batch 32 --warmup 1   # seconds
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

TARGET_PIPELINE = 1.15  # (a) / (b) time ratio, at most
TARGET_PEER = {"cpu": 1.0, "cuda": 3.0}  # medssl / per-sample DataLoader images/s at one precision, at least
DEFAULTS = {2: ("breastmnist", 256), 3: ("adrenalmnist3d", 32)}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine(torch, device, load_start: tuple[float, ...] | None = None) -> str:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"machine: {_cpu_model()}, {cores} usable core(s) of {os.cpu_count()}, "
        f"{platform.system()} {platform.machine()}",
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}",
    ]
    try:
        lines[-1] += f", oneDNN native bf16 {bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())}"
    except (AttributeError, RuntimeError):
        pass
    try:  # other processes on the same cores make the timings meaningless: check the 1-minute figures
        end = os.getloadavg()
        start = f"{load_start[0]:.2f} (1 min) at start, " if load_start else ""
        lines.append(f"load average: {start}{end[0]:.2f} at the end (this run itself adds about the thread count)")
    except OSError:
        pass
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        lines.append(f"device: {p.name}, {p.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--spatial-dims", type=int, choices=(2, 3), default=2, help="2: BreastMNIST; 3: AdrenalMNIST3D")
    parser.add_argument("--flag", default=None, help="MedMNIST flag (default: breastmnist / adrenalmnist3d)")
    parser.add_argument(
        "--root", default=os.environ.get("MEDMNIST_ROOT", "../shared/data/medmnist"), help="folder of the .npz files"
    )
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch", type=int, default=None, help="images per step (default 256 in 2D, 32 in 3D)")
    parser.add_argument("--steps", type=int, default=3, help="steps per timed window")
    parser.add_argument("--repeats", type=int, default=5, help="rounds: timed windows per row (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each window (+2 in round 1)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers of the per-sample pipeline")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; None keeps torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from medssl.core.runtime import tune_allocator

    tune_allocator()  # as pretrain_ssl does, before any large tensor exists

    import torch
    from torch.utils.data import DataLoader, Dataset, RandomSampler

    from medssl.core.runtime import memory_format_for
    from medssl.engines.image_ssl import build_pretrain_model, train_step
    from medssl.medmnist.data import load_medmnist
    from medssl.transforms.image_ssl_augment import SSLAugment

    t_start = time.perf_counter()
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    dims = args.spatial_dims
    flag = args.flag or DEFAULTS[dims][0]
    batch = args.batch or DEFAULTS[dims][1]
    data = load_medmnist(flag, "train", 28, args.root)
    images = data.images
    if data.spatial_dims != dims:
        print(f"{flag} is {data.spatial_dims}D, not {dims}D", file=sys.stderr)
        return 2
    n = len(images)
    if n < batch:
        print(f"{flag} has {n} training images, fewer than --batch {batch}", file=sys.stderr)
        return 2
    fmt = memory_format_for(dims)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    def make_model(channels_last: bool):
        torch.manual_seed(args.seed)
        model = build_pretrain_model("simclr", "resnet18", dims, int(images.shape[1]), {"small_input": True})
        model.to(device)
        if channels_last:
            model.to(memory_format=fmt)
        model.train()
        return model, torch.optim.AdamW(model.parameters(), lr=1e-3 * batch / 256, weight_decay=0.05)

    # the medssl model (bf16 + channels_last) and the reference scripts' model (fp32, contiguous): same init
    fast, fast_opt = make_model(True)
    ref, ref_opt = make_model(False)
    augment = SSLAugment(fast.aug_preset, spatial_dims=dims)
    gen = torch.Generator(device=device).manual_seed(args.seed)

    class Batches:
        """The engine's data order: consecutive batches of concatenated random permutations (drop_last)."""

        def __init__(self) -> None:
            self.perm, self.pos = torch.randperm(n), 0

        def next(self):
            if self.pos + batch > n:
                self.perm, self.pos = torch.randperm(n), 0
            idx = self.perm[self.pos : self.pos + batch]
            self.pos += batch
            return images[idx]

    order = Batches()

    def medssl_step(model, opt, precision, memory_format):
        def step() -> None:
            x = order.next().to(device, non_blocking=True)
            views = model.augmented_views(augment, x, gen)
            train_step(model, opt, views, None, precision, memory_format)
            model.momentum_update(0.5)  # a no-op for SimCLR; the engine calls it after every step

        return step

    premade = [v.contiguous(memory_format=fmt) for v in fast.augmented_views(augment, images[:batch].to(device), gen)]

    def premade_step() -> None:
        train_step(fast, fast_opt, premade, None, "bf16", fmt)

    # ------------------------------------------------------------ (c) per-sample DataLoader
    class PerSampleTwoViews(Dataset):
        """Two views of one image per item: the per-sample pattern of MedMNIST's reference scripts."""

        def __init__(self, imgs) -> None:
            self.imgs = imgs
            self.aug = SSLAugment("simclr", spatial_dims=dims)

        def __len__(self) -> int:
            return len(self.imgs)

        def __getitem__(self, i: int):
            v1, v2 = self.aug.two_views(self.imgs[i : i + 1])  # (1, C, *spatial) each: per-sample work
            return v1[0], v2[0]

    dataset = PerSampleTwoViews(images)
    order_gen = torch.Generator().manual_seed(args.seed)

    class PeerRow:
        """A fresh DataLoader iterator per round (its start-up lands in the warm-up steps), shut down after the
        window so that its workers' prefetching does not run into the next row's timing."""

        def __init__(self, model, opt, precision, memory_format) -> None:
            self.model, self.opt, self.precision, self.fmt = model, opt, precision, memory_format
            self.it = None

        def begin(self):
            per_round = args.warmup + 2 + args.steps + 2  # the first round's extra warm-up, and slack
            sampler = RandomSampler(dataset, num_samples=per_round * batch, generator=order_gen)  # shuffled epochs
            loader = DataLoader(
                dataset,
                batch_size=batch,
                sampler=sampler,
                num_workers=args.workers,
                drop_last=True,
                pin_memory=device.type == "cuda",
            )
            self.it = iter(loader)
            return self.step

        def step(self) -> None:
            v1, v2 = next(self.it)
            train_step(self.model, self.opt, [v1, v2], None, self.precision, self.fmt)

        def end(self) -> None:
            self.it = None  # the iterator's __del__ stops and joins its workers

    class StepRow:
        def __init__(self, step) -> None:
            self.step = step

        def begin(self):
            return self.step

        def end(self) -> None:
            pass

    rows = {
        "a": StepRow(medssl_step(fast, fast_opt, "bf16", fmt)),
        "b": StepRow(premade_step),
        "a32": StepRow(medssl_step(ref, ref_opt, "32", None)),
        "c32": PeerRow(ref, ref_opt, "32", None),
        "c16": PeerRow(fast, fast_opt, "bf16", fmt),
    }
    results: dict[str, list[float]] = {k: [] for k in rows}
    keys = list(rows)
    for r in range(args.repeats):
        shift = r % len(keys)
        for key in keys[shift:] + keys[:shift]:  # the order rotates: slow drift of the machine hits every row
            row = rows[key]
            step = row.begin()
            for _ in range(args.warmup + (2 if r == 0 else 0)):  # first steps allocate and tune: longer at first
                step()
            sync()
            t = time.perf_counter()
            for _ in range(args.steps):
                step()
            sync()
            results[key].append(args.steps * batch / (time.perf_counter() - t))
            row.end()
        done = ", ".join(f"{k} {v[-1]:.1f}" for k, v in results.items())
        elapsed = time.perf_counter() - t_start
        print(f"[{elapsed:5.0f} s] round {r + 1}/{args.repeats} img/s: {done}", file=sys.stderr, flush=True)

    # ------------------------------------------------------------------------------ report
    med = {k: statistics.median(v) for k, v in results.items()}
    print(describe_machine(torch, device, load_start))
    shape = "x".join(str(s) for s in images.shape[2:])
    print(
        f"data: {flag} train, {n} images {tuple(images.shape[1:])} uint8; SimCLR, ResNet-18 {dims}D (3x3 stem), "
        f"batch {batch} ({shape}, 2 views), AdamW; {args.workers} DataLoader workers; {args.repeats} rounds "
        f"(rotating row order) of {args.warmup} warm-up (+2 in round 1) + {args.steps} timed steps per row; medians"
    )
    print()
    rows = [
        ("(a) medssl step: index + batched aug on device + step", "bf16+CL", "a"),
        ("(b) same step on a pre-made batch", "bf16+CL", "b"),
        ("(a) medssl step, fp32", "fp32", "a32"),
        ("(c) per-sample Dataset + DataLoader", "fp32", "c32"),
        ("(c) per-sample Dataset + DataLoader", "bf16+CL", "c16"),
    ]
    head = f"{'pipeline':<56} {'precision':<9} {'img/s':>8} {'windows (img/s)':>28}"
    print(head)
    print("-" * len(head))
    for label, prec, key in rows:
        spread = " ".join(f"{v:.3g}" for v in results[key])
        print(f"{label:<56} {prec:<9} {med[key]:>8.1f} {spread:>28}")
    print("-" * len(head))
    ratio_ab = med["b"] / med["a"]  # time ratio (a)/(b) = rate ratio (b)/(a)
    peer_target = TARGET_PEER[device.type]
    same16, same32, total = med["a"] / med["c16"], med["a32"] / med["c32"], med["a"] / med["c32"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    ok_ab = verdict(ratio_ab < TARGET_PIPELINE)
    print(f"data pipeline share: step time (a)/(b) = {ratio_ab:.3f} (target < {TARGET_PIPELINE}: {ok_ab})")
    print(f"medssl / per-sample at bf16+CL: {same16:.2f}x (target >= {peer_target}: {verdict(same16 >= peer_target)})")
    print(f"medssl / per-sample at fp32:    {same32:.2f}x (target >= {peer_target}: {verdict(same32 >= peer_target)})")
    print(f"total gain, medssl default (bf16+CL) vs the fp32 per-sample reference pipeline: {total:.2f}x")
    print(f"total run time {time.perf_counter() - t_start:.0f} s")
    return 0 if ratio_ab < TARGET_PIPELINE and min(same16, same32) >= peer_target else 1


if __name__ == "__main__":
    sys.exit(main())
