"""Contrastive pretraining step (Chaitanya et al. 2020): the whole medssl step against the model alone.

One process, the stage's :class:`medssl.methods.contrastive.ContrastivePretraining` built from a
shipped recipe exactly as ``medssl train`` builds it, real data (the generated phantoms,
``medssl sample-data``):

* "medssl step": the next batch from the run's own DataLoader (``PartitionDataset`` +
  ``StepSampler``: ``num_volumes x num_partitions`` images, one slice / patch per partition per
  volume, read from the memory-mapped cache and normalised), ``training_step`` (the augmented
  copies, the network, the global or local loss with its positive/negative masks), backward and
  the optimiser step;
* "model alone": the same network on a pre-made batch of already augmented copies, same shape:
  encoder + g1 (global) or frozen encoder + decoder blocks + g2 (local), ``out.float().sum()``
  backward, the same optimiser step.

Overhead = median over rounds of (medssl / model) - 1, the target is under 15%. Each case's intensity statistics are
computed before the timing (a one-off per case and process, about 4 ms each: 0.2 s of a 600-step
run), so the rounds show the steady state. Forward passes run under bf16 autocast
with ``--precision bf16`` (what the recipes use). Both timings alternate round by round, and the
medians of ``--repeats`` rounds are reported (the machine is noisy).

Usage::

    python benchmarks/bench_contrastive_step.py                       # 2D global + local recipes
    python benchmarks/bench_contrastive_step.py --recipes global_3d local_3d
    python benchmarks/bench_contrastive_step.py --repeats 5 --threads 1
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.15


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--recipes", nargs="+", default=["global_2d", "local_2d"],
                    help="configs/contrastive/<recipe>.yaml to measure")
    ap.add_argument("--data", type=Path, default=ROOT / "sample_data/phantoms", help="dataset (medssl sample-data)")
    ap.add_argument("--precision", choices=("32", "bf16"), default="bf16")
    ap.add_argument("--repeats", type=int, default=15, help="timed rounds (median reported)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (None: torch's default)")
    args = ap.parse_args(argv)
    if not (args.data / "dataset.json").is_file():
        print(f"error: {args.data}: no dataset here; run `medssl sample-data {args.data}` first", file=sys.stderr)
        return 2

    from medssl.core.runtime import tune_allocator

    tune_allocator()
    import torch

    from medssl.config import load_config
    from medssl.engines.datamodule import PartitionDataModule
    from medssl.data.dataset import read_dataset_json
    from medssl.engines.train import build_splits, default_cache_dir, warm_cache
    from medssl.methods import build_method
    from medssl.transforms.contrastive_augment import contrastive_views

    if args.threads:
        torch.set_num_threads(args.threads)
    bf16 = args.precision == "bf16"

    def fwd_ctx():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    print(f"python {platform.python_version()}, torch {torch.__version__}, {os.cpu_count()} cpu(s), "
          f"torch threads {torch.get_num_threads()}, precision {args.precision}")
    print(f"{'recipe':<10} {'batch':>22} {'medssl step ms':>15} {'model alone ms':>15} {'overhead':>9}  data+aug+loss ms")
    worst = 0.0
    for recipe in args.recipes:
        over = [f"data.root={args.data}"]
        if recipe.startswith("local"):
            over.append("init_from=not-loaded.ckpt")  # from_config only checks it is set; weights do not matter
        cfg = load_config(ROOT / "configs/contrastive" / f"{recipe}.yaml", over)
        c = cfg.contrastive
        spec, cases = read_dataset_json(cfg.data.root), build_splits(cfg, pretraining=True).pretraining_pool()
        cache_dir = default_cache_dir(cfg)
        warm_cache(cases, cache_dir, progress=False)
        model = build_method(cfg, spec)
        model.log = lambda *a, **k: None
        model.train()
        opt = model.configure_optimizers()["optimizer"]
        steps = args.warmup + args.repeats
        dm = PartitionDataModule(steps, cases=cases, cache_dir=cache_dir, spatial_dims=c.spatial_dims,
                                 size=cfg.data.patch_size[: c.spatial_dims], num_volumes=c.num_volumes,
                                 num_partitions=c.num_partitions, seed=0, intensity=cfg.data.intensity)
        loader = dm.train_dataloader()
        vols = loader.dataset.vols
        for i in range(len(vols.cases)):  # per-case intensity statistics: once per process, as in any run
            vols.norm(i)
        batches = iter(loader)
        first = next(iter(dm.train_dataloader()))
        # the model-alone input: a pre-made batch of augmented copies of the same shape
        views = contrastive_views(first["image"], model.num_views, spatial=c.stage == "global").contiguous()

        def medssl_step():
            batch = next(batches)
            with fwd_ctx():
                loss = model.training_step(batch, 0)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        def model_alone():
            with fwd_ctx():
                out = model.embed(views).float().sum()
            out.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        t_med, t_pure = [], []
        pairs = ((medssl_step, t_med), (model_alone, t_pure))
        for rnd in range(steps):
            # ABBA order, so that neither side always runs right after the other
            for fn, acc in (pairs if rnd % 2 == 0 else pairs[::-1]):
                t = time.perf_counter()
                fn()
                dt = time.perf_counter() - t
                if rnd >= args.warmup:
                    acc.append(dt)
        med, pure = statistics.median(t_med) * 1e3, statistics.median(t_pure) * 1e3
        # the median of per-round ratios pairs neighbouring measurements (robust to load drifting)
        ratio = statistics.median(a / b for a, b in zip(t_med, t_pure))
        worst = max(worst, ratio - 1)
        shape = "x".join(map(str, views.shape[:2])) + " x " + "x".join(map(str, views.shape[3:]))
        print(f"{recipe:<10} {shape:>22} {med:>15.1f} {pure:>15.1f} {100 * (ratio - 1):>+8.1f}%  {med - pure:.1f}")
    verdict = "met" if worst < TARGET else "NOT met"
    print(f"largest overhead {100 * worst:+.1f}% (target < {100 * TARGET:.0f}%): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
