"""Review plugin fixtures: a small synthetic pseudo-label export (no model needed) and a display.

The widget tests need a real X display: napari renders through OpenGL, which offscreen Qt does
not provide. :func:`display` starts an Xvfb server for the session (``make test`` installs
xvfb), or uses ``$DISPLAY`` when one is set; only when neither is possible are the widget tests
skipped, with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from medssl.data.io import write_volume
from medssl.data.volume import Volume
from medssl.inference.review_manifest import ReviewCase, ReviewManifest

CLASSES = ["background", "liver", "kidney"]
#: confidence, mean uncertainty of the fixture's cases (hand-checked orders in the tests)
CASES = {"case_a": (0.90, 0.05), "case_b": (0.40, 0.30), "case_c": (0.75, 0.10), "case_d": (0.60, 0.20)}
SHAPE = (24, 20, 12)
SPACING = (0.8, 1.2, 3.0)
ORIGIN = (10.0, -20.0, 5.0)
DIRECTION = np.diag([1.0, -1.0, 1.0])  # y flipped: the world affine must carry it


def case_arrays(i: int):
    """Deterministic image, fused label, three views and uncertainty of case ``i``."""
    x, y, z = np.meshgrid(*[np.arange(s) for s in SHAPE], indexing="ij")
    image = (100.0 * np.sin(x / 3.0 + i) + 50.0 * y / SHAPE[1] + 5.0 * z).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    label[4:14, 4:12, 2:9] = 1
    label[15:21, 10:17, 3:10] = 2
    views = [label.copy() for _ in range(3)]
    views[1][4:6, 4:12, 2:9] = 0  # view 1 misses the liver's first two x slices
    views[2][15:21, 10:12, 3:10] = 1  # view 2 calls part of the kidney liver
    unc = np.zeros(SHAPE, np.float32)
    unc[4:6, 4:12, 2:9] = 0.8
    unc[15:21, 10:12, 3:10] = 0.5
    unc += 0.01 * i
    return image, label, views, unc


def make_export(root: Path) -> Path:
    """An export folder like ``medssl pseudo-label`` writes, with the cases of :data:`CASES`."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text('{"channel_names": {"0": "MRI"}, "labels": {"background": 0, "liver": 1, '
                                       '"kidney": 2}}')
    m = ReviewManifest.new(root / "manifest.json", root / "model.ckpt", root, CLASSES)

    def vol(a):
        return Volume(a, spacing=SPACING, origin=ORIGIN, direction=DIRECTION)

    for i, (name, (conf, mu)) in enumerate(CASES.items()):
        image, label, views, unc = case_arrays(i)
        write_volume(vol(image), root / "images" / f"{name}_0000.nii.gz")
        write_volume(vol(label), root / "labels" / f"{name}.nii.gz")
        for k, v in enumerate(views):
            write_volume(vol(v), root / "views" / f"{name}_view{k}.nii.gz")
        write_volume(vol(unc), root / "uncertainty" / f"{name}.nii.gz")
        m.put(ReviewCase(name=name, image=str(root / "images" / f"{name}_0000.nii.gz"), label=f"labels/{name}.nii.gz",
                         views=[f"views/{name}_view{k}.nii.gz" for k in range(3)],
                         uncertainty=f"uncertainty/{name}.nii.gz", confidence=conf, mean_uncertainty=mu,
                         foreground_ml=float((label > 0).sum()) * float(np.prod(SPACING)) / 1000))
    m.write()
    return root


@pytest.fixture
def export(tmp_path) -> Path:
    return make_export(tmp_path / "export")


def _start_xvfb() -> tuple[subprocess.Popen | None, str | None]:
    if not shutil.which("Xvfb"):
        return None, ("Xvfb is not installed (napari needs a display to render): `make test` installs it with "
                      "apt-get install xvfb")
    for num in range(90, 140):
        if Path(f"/tmp/.X{num}-lock").exists():
            continue
        # -terminate: the server ends when its last client (this process's Qt) disconnects; killing
        # it while Qt is connected would make Qt exit the test process
        proc = subprocess.Popen(["Xvfb", f":{num}", "-screen", "0", "1600x1000x24", "-nolisten", "tcp", "-terminate"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(50):
            if Path(f"/tmp/.X11-unix/X{num}").exists():
                os.environ["DISPLAY"] = f":{num}"
                return proc, None
            if proc.poll() is not None:
                break
            time.sleep(0.1)
        proc.kill()
    return None, "Xvfb did not start on any display :90..:139"


@pytest.fixture(scope="session")
def display():
    """A running X display for napari (Xvfb started here unless $DISPLAY is set); skips only
    when no display can be had, saying why."""
    pytest.importorskip("napari", reason="napari is not installed (`make test` installs it with the plugin)")
    pytest.importorskip("pytestqt", reason="pytest-qt is not installed (`make test` installs it)")
    if not os.environ.get("DISPLAY"):
        proc, why = _start_xvfb()
        if proc is None:
            pytest.skip(why)
    os.environ.pop("QT_QPA_PLATFORM", None)  # offscreen Qt cannot render napari's canvas
    yield os.environ["DISPLAY"]


@pytest.fixture
def bot(display, request):
    """pytest-qt's ``qtbot``, asked for after :func:`display` (which skips, saying why, when
    pytest-qt or a display is missing) rather than failing on an unknown fixture."""
    return request.getfixturevalue("qtbot")


@pytest.fixture
def viewer(bot, tmp_path_factory):
    """A shown napari viewer, closed after the test.

    Made here rather than with napari's ``make_napari_viewer``: napari's pytest plugin is off for
    the suite (``-p no:napari`` in pyproject: its autouse fixtures cost every test ~0.2 s). napari
    keeps its settings in a temporary file, never in the user's config folder.
    """
    os.environ["NAPARI_CONFIG"] = str(tmp_path_factory.mktemp("napari_config") / "settings.yaml")
    import napari

    v = napari.Viewer(show=True)
    yield v
    v.close()
