"""UMCT training step: the medssl method's time against the bare network doing the same work.

One process, one :class:`medssl.methods.umct.UMCT` (a 3-view ``MultiViewAsymUNet``, built as
``medssl.engines.train._build_umct`` builds it), one set of random inputs: ``x``/``y`` labeled
patches and ``u`` unlabeled ones, ``--batch`` each, ``--size``^3, ``--classes`` classes. The
co-training weight is past its ramp (``stage1_steps = rampup_steps = 0``), so every step runs the
full UMCT path. Forward passes run under ``torch.autocast("cpu", dtype=torch.bfloat16)`` with
``--precision bf16`` (what Lightning's ``bf16-mixed`` does around ``training_step``); backward
runs outside it, as in Lightning.

Rows, each timed by calling the method's own code (column "medssl"):

* ``MC-dropout pseudo-labels``: ``model.pseudo_labels(u)`` (K = ``--mc-samples`` dropout
  passes of every view, MC statistics, uncertainty-weighted fusion, confidence);
* ``sup + co-training fwd/bwd``: ``model.view_logits(cat[x, u])``, the supervised Dice+CE of
  every view on the labeled half, ``model.cot_loss`` on the unlabeled half against the
  pseudo-labels of the previous row (made once, outside the timing), ``loss.backward()``;
* ``supervised-only fwd/bwd``: ``model.view_logits(x)`` + the supervised loss + backward (the
  labeled half alone; one backward cannot be split between two losses that share it, so the
  co-training share is reported as the difference of these two rows);
* ``whole training_step + backward``: ``model.training_step(batch, 0)`` (``self.log`` a no-op)
  then ``loss.backward()``.

and against the bare network on pre-made, already view-stacked tensors (column "pure model"):
``net(stacked_u repeated K times)`` under ``no_grad`` with only dropout in train mode;
``net(stacked_xu)`` and ``net(stacked_x)`` forward + ``out.float().sum().backward()``; the whole
step is compared with the sum of the first two. Overhead = medssl / pure - 1; the target is an
overhead beyond the model's compute under 15% for the whole step.

The column "non-network" runs the same medssl calls with the network replaced by a stub that
returns a cached output of the right shape (a parameter, so that backward reaches it): the
time of the views, the losses, the MC statistics and their backward alone, an independent
estimate of the overhead (about medssl - pure).

Every repeat runs every row once, in the same order, gradients set to None before each call;
the table shows medians over ``--repeats`` after ``--warmup`` untimed rounds.

Usage::

    python benchmarks/bench_umct_step.py                  # 32^3, batch 2, 3 views, K=4, bf16
    python benchmarks/bench_umct_step.py --precision 32
    python benchmarks/bench_umct_step.py --size 16 --channels 4 8 16 --repeats 2   # seconds
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

TARGET = 0.15  # overhead beyond the model's compute, whole step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--size", type=int, default=32, help="cubic patch side (voxels)")
    parser.add_argument("--batch", type=int, default=2, help="labeled and unlabeled patches per step (each)")
    parser.add_argument("--views", type=int, default=3, choices=(3, 6), help="UMCT views")
    parser.add_argument("--mc-samples", type=int, default=4, help="MC-dropout passes K")
    parser.add_argument("--channels", type=int, nargs="+", default=[16, 32, 64, 128], help="channels per level (per view)")
    parser.add_argument("--classes", type=int, default=4, help="classes including background")
    parser.add_argument("--precision", choices=("32", "bf16"), default="bf16", help="bf16: autocast forward passes")
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads; None keeps torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from medssl.core.runtime import tune_allocator

    tuned = tune_allocator()  # first, as run_training does, before any large tensor exists

    import torch
    import torch.nn as nn

    from medssl.methods import get_method
    from medssl.nets.multiview_unet import MultiViewAsymUNet, enable_mc_dropout
    from medssl.transforms.umct_views import stack_views

    t_start = time.perf_counter()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    s, b, n, k, c = args.size, args.batch, args.views, args.mc_samples, args.classes
    net = MultiViewAsymUNet(
        num_views=n, in_channels=1, out_channels=c, channels=args.channels, dropout=0.2, spatial_dims=3
    )
    if s % net.divisor:
        parser.error(f"--size {s} must be a multiple of {net.divisor} for {len(args.channels)} levels")
    model = get_method("umct")(
        net=net, num_views=n, mc_samples=k, stage1_steps=0, rampup_steps=0,
        num_classes=c, class_names=[f"c{i}" for i in range(c)], roi_size=(s, s, s),
    )
    model.log = lambda *a, **kw: None  # no trainer: logging is a no-op
    model.train()
    assert model.cotraining_weight(model.global_step) > 0, "co-training weight must be past its ramp"

    x = torch.randn(b, 1, s, s, s)
    u = torch.randn(b, 1, s, s, s)
    y = torch.randint(0, c, (b, 1, s, s, s), dtype=torch.int64)
    batch = {"image": x, "label": y, "u_image": u}
    # the pure model's inputs, made once: the views stacked on the channel axis
    stacked_x = stack_views(x, model.views).contiguous()
    stacked_xu = stack_views(torch.cat([x, u]), model.views).contiguous()
    stacked_u_k = stack_views(u.repeat(k, 1, 1, 1, 1), model.views).contiguous()

    bf16 = args.precision == "bf16"

    def fwd_ctx():
        return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    lam = model.cotraining_weight(model.global_step)
    with fwd_ctx():
        pseudo, conf, _ = model.pseudo_labels(u)  # targets of the (b) rows, made once

    # ----------------------------------------------------------------- the timed calls
    def mc_medssl():
        with fwd_ctx():
            model.pseudo_labels(u)

    def mc_pure():
        net.eval()
        enable_mc_dropout(net)
        with torch.no_grad(), fwd_ctx():
            net(stacked_u_k)
        net.train()

    def sup_loss(logits_l):
        return sum(model.sup_loss(logits_l[i].float(), y) for i in range(n)) / n

    def xu_medssl():
        with fwd_ctx():
            logits = model.view_logits(torch.cat([x, u]))
            loss = sup_loss(logits[:, :b]) + lam * model.cot_loss(logits[:, b:].float(), pseudo, conf)
        loss.backward()

    def xu_pure():
        with fwd_ctx():
            out = net(stacked_xu).float().sum()
        out.backward()

    def sup_medssl():
        with fwd_ctx():
            loss = sup_loss(model.view_logits(x))
        loss.backward()

    def sup_pure():
        with fwd_ctx():
            out = net(stacked_x).float().sum()
        out.backward()

    def step_medssl():
        with fwd_ctx():
            loss = model.training_step(batch, 0)
        loss.backward()

    # a network stand-in returning cached outputs: what medssl spends around the network
    class CachedNet(nn.Module):
        def __init__(self, outputs: dict):
            super().__init__()
            self.keys = {shape: f"out{i}" for i, shape in enumerate(outputs)}
            for shape, t in outputs.items():
                self.register_parameter(self.keys[shape], nn.Parameter(t))

        def forward(self, inp):
            return getattr(self, self.keys[tuple(inp.shape)])

    outputs = {}
    for inp in (stacked_u_k, stacked_xu, stacked_x):
        with torch.no_grad(), fwd_ctx():
            outputs[tuple(inp.shape)] = net(inp).detach().clone()
    stub = CachedNet(outputs)

    def no_net(fn):
        def run():
            model.net = stub
            try:
                fn()
            finally:
                model.net = net

        return run

    rows = {
        "mc": (mc_medssl, mc_pure, no_net(mc_medssl)),
        "xu": (xu_medssl, xu_pure, no_net(xu_medssl)),
        "sup": (sup_medssl, sup_pure, no_net(sup_medssl)),
        "step": (step_medssl, None, no_net(step_medssl)),
    }
    times: dict[tuple[str, int], list[float]] = {(r, j): [] for r in rows for j in range(3)}

    def timed(fn) -> float:
        model.zero_grad(set_to_none=True)
        stub.zero_grad(set_to_none=True)
        t = time.perf_counter()
        fn()
        return time.perf_counter() - t

    for rnd in range(args.warmup + args.repeats):
        for r, fns in rows.items():
            for j, fn in enumerate(fns):
                if fn is not None:
                    dt = timed(fn)
                    if rnd >= args.warmup:
                        times[(r, j)].append(dt)
    model.zero_grad(set_to_none=True)

    with fwd_ctx():
        final = model.training_step(batch, 0)
    if not torch.isfinite(final):
        raise RuntimeError(f"training_step gave a non-finite loss {final}")

    # ------------------------------------------------------------------- the report
    med = {key: statistics.median(v) * 1e3 for key, v in times.items() if v}
    med[("step", 1)] = med[("mc", 1)] + med[("xu", 1)]
    med[("cot", 0)] = med[("xu", 0)] - med[("sup", 0)]
    med[("cot", 1)] = med[("xu", 1)] - med[("sup", 1)]
    med[("cot", 2)] = med[("xu", 2)] - med[("sup", 2)]

    bf16_native = None
    with contextlib.suppress(Exception):
        bf16_native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    n_params = sum(p.numel() for p in net.parameters())
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} cpu(s), torch threads {torch.get_num_threads()} (interop {torch.get_num_interop_threads()}), "
        f"allocator tuned: {tuned}"
    )
    print(
        f"precision {args.precision}"
        + (f" (autocast cpu bfloat16; oneDNN native bf16: {bf16_native})" if bf16 else " (float32)")
    )
    print(
        f"patch {s}^3, batch {b} labeled + {b} unlabeled, {n} views, K={k} MC passes, {c} classes, "
        f"channels {list(args.channels)} per view ({n_params / 1e6:.2f} M parameters), "
        f"repeats {args.repeats} (+{args.warmup} warm-up), median ms"
    )
    print()
    labels = [
        ("mc", f"(a) MC-dropout pseudo-labels (K*B={k * b})"),
        ("xu", f"(b) sup + co-training fwd/bwd ({2 * b} patches)"),
        ("sup", f"    supervised-only fwd/bwd ({b} patches)"),
        ("cot", "    co-training share = (b) - supervised-only"),
        ("step", "whole training_step + backward  vs  (a') + (b')"),
    ]
    head = f"{'part':<50} {'medssl':>9} {'pure model':>11} {'overhead':>9} {'non-network':>12}"
    print(head)
    print("-" * len(head))
    for key, label in labels:
        m, p, o = med[(key, 0)], med[(key, 1)], med[(key, 2)]
        over = f"{(m / p - 1) * 100:+8.1f}%" if p > 0 else f"{'n/a':>9}"
        if key == "step":
            print("-" * len(head))
        print(f"{label:<50} {m:>9.1f} {p:>11.1f} {over} {o:>12.1f}")
    print("-" * len(head))
    overhead = med[("step", 0)] / med[("step", 1)] - 1
    print(
        f"\nwhole step: {med[('step', 0)]:.1f} ms in medssl, {med[('step', 1)]:.1f} ms of model compute "
        f"(pure (a') + (b')): overhead {overhead * 100:+.1f}% (target < {TARGET * 100:.0f}%: "
        f"{'PASS' if overhead < TARGET else 'FAIL'}); the non-network stub accounts for "
        f"{med[('step', 2)]:.1f} ms ({med[('step', 2)] / med[('step', 1)] * 100:.1f}% of the model compute)"
    )
    print(f"total run time {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
