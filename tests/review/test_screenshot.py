"""A screenshot of a real review session (image, label, uncertainty overlay, queue widget),
rendered under Xvfb and written to docs/images/review.png for the README; checked not blank."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

DOCS_IMAGE = Path(__file__).resolve().parents[2] / "docs" / "images" / "review.png"


def test_review_session_screenshot(viewer, tmp_path, bot):
    from napari_medssl._launch import open_review
    from napari_medssl.demo_export import make_demo_export

    manifest = make_demo_export(tmp_path / "export", n_cases=4, shape=(96, 96, 48))
    viewer.window._qt_window.resize(1500, 900)
    w = open_review(viewer, manifest.parent, reviewer="demo")
    w.accept()  # one decision, so the queue shows a status and the progress moves
    viewer.layers["uncertainty"].opacity = 0.7
    mid = w.data.label.shape[2] // 2
    viewer.dims.set_point(0, viewer.layers["label"].data_to_world((mid, 0, 0))[0])
    viewer.reset_view()
    dock = viewer.window.dock_widgets["medssl review"].native.parent()
    bot.waitUntil(lambda: dock.isVisible() and dock.width() > 200, timeout=10_000)
    bot.wait(300)  # let the window lay out and the canvas draw
    img = viewer.window.screenshot(canvas_only=False, flash=False)
    from skimage.io import imsave

    DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    imsave(DOCS_IMAGE, img, check_contrast=False)

    rgb = img[..., :3].reshape(-1, 3)
    assert img.shape[0] >= 600 and img.shape[1] >= 1000
    # the queue widget is in the picture: its area (right of the canvas) is not flat
    right = img[:, int(img.shape[1] * 0.78):, :3]
    assert right.std() > 10 and len(np.unique(right.reshape(-1, 3) // 16, axis=0)) > 5
    assert rgb.std() > 20  # not a flat frame
    colours = np.unique(rgb // 16, axis=0)  # coarse bins: noise does not count
    assert len(colours) > 50
    # the label's class colours are on screen (blended over the image): red-dominant pixels (liver)
    red = (rgb[:, 0].astype(int) - rgb[:, 1] > 60) & (rgb[:, 0].astype(int) - rgb[:, 2] > 60)
    assert red.sum() > 500
    # and the canvas itself is not blank
    canvas = viewer.screenshot(canvas_only=True, flash=False)[..., :3]
    assert canvas.std() > 20
