"""End-to-end inference per case: `medssl infer` against a plain MONAI pipeline, same volumes, same
network, same ROI and overlap, in one process; and the peak memory of `medssl infer` on a large CT.

The peer is what a MONAI user writes (MONAI's tutorials and bundles): ``LoadImaged`` ->
``EnsureChannelFirstd`` -> ``Orientationd`` -> ``Spacingd`` (the checkpoint's plan spacing) ->
``NormalizeIntensityd`` -> ``sliding_window_inference`` (Gaussian, the same ROI, overlap and
window batch) -> ``Invertd`` (back to the input grid) -> argmax -> ``SaveImage``. medssl does the
same steps through ``run_inference`` (plan grid, stitching in slabs, outputs in the input
geometry, JSON + uncertainty map written too: medssl writes MORE per case).

Both run the checkpoint's network (``predictor.model``: its ``forward`` gives the logits), in the
same process, after one untimed warm-up pass each, then ``--repeats`` times in ABBA order (which
one goes first alternates, so drift in the load of a shared machine cancels out). medssl's time
includes loading the checkpoint once per run (the CLI does that once per batch), MONAI's does not.
The table gives each one's median seconds per case, the ratio of the medians and the median of
the per-repeat ratios medssl / MONAI (target: at most 0.8).

``--rss`` instead runs ``medssl infer`` in a child process on a synthetic 512 x 512 x 600 CT
(int16) and prints the child's peak resident memory (target: within 8 GB).

Usage (a checkpoint trained with a plan; ``make demo`` then a planned run, e.g.
``medssl train configs/supervised/phantoms.yaml --set data.plan=auto --out runs/demo-planned``)::

    python benchmarks/bench_infer.py --checkpoint runs/demo-planned/checkpoints/best.ckpt
    python benchmarks/bench_infer.py --checkpoint runs/demo-planned/checkpoints/best.ckpt --rss
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _inputs(folder: Path, shape: tuple[int, int, int], shared: Path) -> list[Path]:
    """The real CT volumes of ../shared/data/volumes plus one synthetic CT of ``shape``."""
    import shutil

    from bench_cache import make_ct_like

    from medssl.data.io import write_volume
    from medssl.data.volume import Volume

    folder.mkdir(parents=True)
    paths = []
    for name in ("abdomen_ct", "spleen_ct"):
        src = shared / "volumes" / name / "image.nii.gz"
        if src.is_file():
            paths.append(Path(shutil.copy(src, folder / f"{name}.nii.gz")))
    synth = folder / f"synthetic_{'x'.join(map(str, shape))}.nii.gz"
    write_volume(Volume(make_ct_like(shape), spacing=(0.8, 0.8, 2.5)), synth)
    return paths + [synth]


def _monai_case(path: Path, out: Path, net, roi, overlap, sw_batch, spacing) -> None:
    import torch
    from monai.inferers import sliding_window_inference
    from monai.transforms import (Compose, EnsureChannelFirstd, Invertd, LoadImaged, NormalizeIntensityd,
                                  Orientationd, SaveImage, Spacingd)

    pre = Compose([LoadImaged("image"), EnsureChannelFirstd("image"), Orientationd("image", axcodes="LPS"),
                   Spacingd("image", pixdim=spacing, mode="bilinear"), NormalizeIntensityd("image")])
    data = pre({"image": str(path)})
    with torch.no_grad():
        data["pred"] = sliding_window_inference(data["image"][None], roi, sw_batch, net, overlap=overlap,
                                                mode="gaussian")[0]
    inv = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)
    data = inv(data)
    label = data["pred"].argmax(0, keepdim=True).to(torch.uint8)
    SaveImage(output_dir=str(out), output_postfix="seg", separate_folder=False, print_log=False)(label, data["image"].meta)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shape", type=int, nargs=3, default=(512, 512, 120), help="the synthetic CT of the timing run")
    ap.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rss", action="store_true", help="peak memory of medssl infer on a 512x512x600 CT instead")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="bench_infer_"))
    if args.rss:
        from bench_cache import make_ct_like

        from medssl.data.io import write_volume
        from medssl.data.volume import Volume

        big = tmp / "in" / "ct_512x512x600.nii.gz"
        big.parent.mkdir()
        write_volume(Volume(make_ct_like((512, 512, 600)), spacing=(0.8, 0.8, 1.0)), big)
        t0 = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "medssl.cli", "infer", "--checkpoint", str(args.checkpoint),
                               "--input", str(big), "--output", str(tmp / "out")], capture_output=True, text=True)
        secs = time.perf_counter() - t0
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB on Linux
        print(done.stdout[-500:], done.stderr[-500:])
        print(f"medssl infer on a 512x512x600 int16 CT: exit {done.returncode}, {secs:.0f} s, peak RSS {peak_gb:.2f} GB "
              f"(target: within 8 GB)")
        return done.returncode

    from medssl.inference.infer import run_inference
    from medssl.inference.load import load_predictor

    pred = load_predictor(args.checkpoint)
    if pred.plan is None:
        print("the checkpoint has no plan: train with --set data.plan=auto so both pipelines resample", file=sys.stderr)
        return 2
    net = pred.model.eval()
    cases = _inputs(tmp / "in", tuple(args.shape), args.shared)
    times = {"medssl": [], "monai": []}

    cpu = {"medssl": [], "monai": []}

    def run_medssl(tag: str) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        res = run_inference(args.checkpoint, tmp / "in", tmp / f"medssl_{tag}", progress=False, device="cpu")
        assert res.ok, res.failed
        cpu["medssl"].append((time.process_time() - c0) / len(cases))
        return (time.perf_counter() - t0) / len(cases)

    def run_monai(tag: str) -> float:
        t0, c0 = time.perf_counter(), time.process_time()
        for path in cases:
            _monai_case(path, tmp / f"monai_{tag}", net, pred.roi_size, pred.overlap, pred.sw_batch_size, pred.plan.spacing)
        cpu["monai"].append((time.process_time() - c0) / len(cases))
        return (time.perf_counter() - t0) / len(cases)

    # one untimed pass of each first: the first convolutions of a process build oneDNN kernels
    # (seconds), which would be charged to whichever pipeline ran first
    run_medssl("warmup"), run_monai("warmup")
    ratios = []
    for r in range(args.repeats):
        # alternate which one goes first (ABBA): drift in the machine's load cancels out
        first, second = (("medssl", run_medssl), ("monai", run_monai)) if r % 2 == 0 else (("monai", run_monai), ("medssl", run_medssl))
        for name, fn in (first, second):
            times[name].append(fn(str(r)))
        ratios.append(times["medssl"][-1] / times["monai"][-1])
        print(f"repeat {r}: medssl {times['medssl'][-1]:.2f} s/case, MONAI {times['monai'][-1]:.2f} s/case, "
              f"ratio {ratios[-1]:.2f}; CPU seconds (all threads) medssl {cpu['medssl'][-1]:.2f}, "
              f"MONAI {cpu['monai'][-1]:.2f}", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{len(cases)} cases ({', '.join(p.name for p in cases)}), ROI {pred.roi_size}, overlap {pred.overlap}, "
          f"plan spacing {pred.plan.spacing} mm, {args.threads} threads, median of {args.repeats} repeats")
    cmed = {k: statistics.median(v[1:]) for k, v in cpu.items()}  # v[0]: the warm-up pass
    print("| pipeline | wall s / case | CPU s / case (all threads) |\n|---|---|---|")
    print(f"| medssl infer (plan, slabs, seg + uncertainty + JSON) | {med['medssl']:.2f} | {cmed['medssl']:.2f} |")
    print(f"| MONAI LoadImage..Invertd..SaveImage (seg only) | {med['monai']:.2f} | {cmed['monai']:.2f} |")
    print(f"\nratio medssl / MONAI: {med['medssl'] / med['monai']:.2f} of the medians; median of the per-repeat "
          f"ratios {statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f}) (target: at most 0.8)")
    print(f"CPU-time ratio medssl / MONAI: {cmed['medssl'] / cmed['monai']:.2f} (less sensitive to other jobs on the "
          "machine than wall time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
