"""Time to open a case in the napari review plugin, with all its layers (issue 15).

Makes a pseudo-label export of phantom cases (``napari_medssl.demo_export``: image, fused label,
three views, uncertainty; ``.nii.gz`` as ``medssl pseudo-label`` writes them) of ``--shape``
(default 256^3) in a temporary folder, opens napari with the review widget under Xvfb (started
here when ``$DISPLAY`` is unset), and times, per case:

* read: ``ReviewSession.load`` in the foreground (decode every file, labels to uint8,
  disagreement mask), the cost of a case that was not preloaded;
* start: docking the widget and showing the first case (napari's first draw included);
* open a case not preloaded: the widget's ``show`` (read + layers replaced + a full draw);
* next, preloaded: ``Next`` after the background thread has read the case (layers + draw).

Run: ``.venv/bin/python benchmarks/bench_review_open.py [--shape 256 256 256] [--cases 3]``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def _display() -> subprocess.Popen | None:
    if os.environ.get("DISPLAY"):
        return None
    if not shutil.which("Xvfb"):
        raise SystemExit("error: no $DISPLAY and no Xvfb (apt-get install xvfb; `make review-install` does it)")
    for num in range(140, 190):
        if Path(f"/tmp/.X{num}-lock").exists():
            continue
        proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp", "-terminate"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{num}").exists():
                os.environ["DISPLAY"] = f":{num}"
                return proc
            time.sleep(0.1)
        proc.kill()
    raise SystemExit("error: Xvfb did not start")


def _draw(viewer) -> None:
    from qtpy.QtWidgets import QApplication

    viewer.window._qt_viewer.canvas._scene_canvas.render()  # one full draw of every visible layer
    QApplication.processEvents()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", type=int, nargs=3, default=(256, 256, 256))
    ap.add_argument("--cases", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="write the export here and keep it")
    args = ap.parse_args()

    from napari_medssl.demo_export import make_demo_export

    tmp = Path(tempfile.mkdtemp(prefix="bench_review_"))
    root = args.keep or tmp / "export"
    t0 = time.perf_counter()
    manifest = make_demo_export(root, n_cases=args.cases, shape=tuple(args.shape))
    print(f"export of {args.cases} cases of {'x'.join(map(str, args.shape))} made in {time.perf_counter() - t0:.1f} s "
          f"({sum(p.stat().st_size for p in root.rglob('*.nii.gz')) / 2**20 / args.cases:.1f} MiB of .nii.gz per case)")
    _display()
    import napari

    from napari_medssl._launch import open_review
    from napari_medssl.session import ReviewSession

    s = ReviewSession(manifest, preload=False)
    names = [c.name for c in s.queue()]
    t = time.perf_counter()
    data = s.load(names[0])
    read_s = time.perf_counter() - t
    print(f"read (foreground, decode + uint8 + disagreement): {read_s:.2f} s; in memory {data.nbytes / 2**20:.0f} MiB "
          f"(labels {data.label.dtype})")
    del data
    s.close()

    viewer = napari.Viewer(show=True)
    t = time.perf_counter()
    w = open_review(viewer, manifest.parent, reviewer="bench")  # first case: widget + layers created
    _draw(viewer)
    print(f"start: widget docked and first case shown, {len(viewer.layers)} layers "
          f"({', '.join(layer.name for layer in viewer.layers)}): {time.perf_counter() - t:.2f} s")
    if len(names) >= 2:
        w.session.preload(None)  # a case picked from the table: not read ahead
        t = time.perf_counter()
        w.show(names[1])
        _draw(viewer)
        print(f"open a case not preloaded (read + layers + draw): {time.perf_counter() - t:.2f} s")
    if len(names) >= 3:
        w.session._preloader._future.result()  # the reviewer looks at the case; the next is read meanwhile
        t = time.perf_counter()
        w.next()
        _draw(viewer)
        print(f"next case, preloaded in the background (layers + draw): {time.perf_counter() - t:.2f} s")
    viewer.close()
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
