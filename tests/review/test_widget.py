"""The review widget in a real napari viewer under Xvfb: open an export, step through the queue,
edit a label and save, and check the files, the manifest and the log."""

from __future__ import annotations

import numpy as np
import pytest

from medssl.data.io import read_volume
from medssl.inference.review_manifest import ReviewManifest, sha256_file

pytest.importorskip("napari_medssl", reason="the napari-medssl plugin is not installed (`make test` installs it)")

from .conftest import CLASSES, SHAPE, case_arrays  # noqa: E402


def _open(viewer, export, reviewer="dr w"):
    from napari_medssl._launch import open_review

    return open_review(viewer, export, reviewer=reviewer)


def test_open_export_shows_layers_in_world_coordinates(viewer, export):
    w = _open(viewer, export)
    names = [layer.name for layer in viewer.layers]
    assert names == ["image", "uncertainty", "view 0", "view 1", "view 2", "disagreement", "label"]
    assert w.current == "case_b" and w.progress.value == "0 of 4 reviewed"  # least confident first
    assert [row[0] for row in w.table.data.to_list()] == ["case_b", "case_d", "case_c", "case_a"]
    label = viewer.layers["label"]
    assert label.data.dtype == np.uint8 and label.data.shape == SHAPE[::-1]
    assert (label.data == case_arrays(1)[1].transpose(2, 1, 0)).all()
    assert not any(viewer.layers[f"view {i}"].visible for i in range(3)) and not viewer.layers["disagreement"].visible
    # a voxel's world position is in mm (spacing 0.8 x 1.2 x 3.0, y flipped, origin (10, -20, 5))
    assert label.data_to_world((2, 3, 4)) == pytest.approx((5.0 + 6.0, -20.0 - 3.6, 10.0 + 3.2))
    assert label.features["class"].tolist() == CLASSES
    assert viewer.layers["uncertainty"].colormap.name == "inferno"
    lo, hi = viewer.layers["image"].contrast_limits
    img = case_arrays(1)[0]
    assert img.min() <= lo < hi <= img.max()
    # the drop-in widget contribution and the reader
    from napari_medssl._reader import get_reader

    assert get_reader(str(export)) is not None and get_reader(str(export / "labels")) is None


def test_step_edit_save_and_shortcuts(viewer, export, bot):
    w = _open(viewer, export)
    w.next()
    assert w.current == "case_d"
    w.previous()
    assert w.current == "case_b"
    assert w.session._preloader.pending == "case_d"  # the next case is read in the background

    # paint a kidney voxel into the background and save through the Shift-S key binding
    label = viewer.layers["label"]
    label.selected_label = 2
    label.brush_size = 1
    label.paint((1, 1, 1), 2, refresh=True)  # display index (z, y, x) = array index (1, 1, 1)
    assert w.dirty
    bot.waitUntil(lambda: (export / "drafts" / "case_b.npz").is_file(), timeout=10_000)  # autosaved draft
    from app_model.types import KeyBinding

    bound = {str(KeyBinding.from_str(k)) for k in w.shortcuts}
    assert bound <= {str(k) for k in viewer.keymap}
    w.shortcuts["Shift-S"]()
    saved = export / "reviewed" / "case_b_r1.nii.gz"
    expected = case_arrays(1)[1].copy()
    expected[1, 1, 1] = 2
    assert (read_volume(saved).array == expected).all()
    assert not (export / "drafts" / "case_b.npz").exists()
    m = ReviewManifest.read(export)
    assert m.case("case_b").status == "edited" and m.case("case_b").reviewed_label_sha256 == sha256_file(saved)
    assert m.case("case_b").reviewer == "dr w"
    assert w.current == "case_d"  # saving moves on

    w.shortcuts["Shift-A"]()  # accept case_d
    assert w.current == "case_c"
    w.reject()
    assert w.current == "case_a" and w.progress.value == "3 of 4 reviewed"
    statuses = {c.name: c.status for c in ReviewManifest.read(export).cases}
    assert statuses == {"case_a": "pending", "case_b": "edited", "case_c": "rejected", "case_d": "accepted"}
    from napari_medssl import review_log

    decisions = [(e["action"], e["case"]) for e in review_log.read(export) if e["action"] != "open"]
    assert decisions == [("edit", "case_b"), ("accept", "case_d"), ("reject", "case_c")]
    assert [e["case"] for e in review_log.read(export) if e["action"] == "open"][:3] == ["case_b", "case_d", "case_b"]

    w.status_filter.value = "pending"
    assert [row[0] for row in w.table.data.to_list()] == ["case_a"]


def test_threshold_disagreement_and_draft_restore(viewer, export):
    w = _open(viewer, export)
    label = viewer.layers["label"]
    full = case_arrays(1)[1]
    # case_b's uncertainty: 0.81 on the liver's first two x slices, 0.51 on part of the kidney, 0.01 elsewhere
    w.threshold.value = 0.5
    shown = label.data.transpose(2, 1, 0)
    assert shown[4:6].max() == 0 and (shown[6:14, 4:12, 2:9] == 1).all()
    assert shown[15:21, 10:12, 3:10].max() == 0 and (shown[15:21, 12:17, 3:10] == 2).all()
    w.threshold.value = 0.6  # the kidney part (0.51) comes back, the liver slices (0.81) stay hidden
    shown = label.data.transpose(2, 1, 0)
    assert (shown[15:21, 10:12, 3:10] == 2).all() and shown[4:6].max() == 0
    w.show_disagreement.value = True
    assert viewer.layers["disagreement"].visible
    dis = viewer.layers["disagreement"].data.transpose(2, 1, 0)
    assert dis.sum() == 2 * 8 * 7 + 6 * 2 * 7
    # edit under the threshold, then lift it: the hidden voxels come back, the edit stays
    label.brush_size = 1
    label.paint((5, 5, 8), 2, refresh=True)  # array (8, 5, 5): liver -> kidney
    w.threshold.value = 1.0
    now = label.data.transpose(2, 1, 0)
    assert now[8, 5, 5] == 2 and (now[4:6, 4:12, 2:9] == 1).all()
    assert (now != full).sum() == 1
    w.autosave()
    w.close_session()

    # opening the export again (a new session: nothing kept in memory) restores the draft
    w.close_session()
    assert w.data is None
    w2 = _open(viewer, export)
    assert w2.current == "case_b" and w2.data.label_source == "draft"
    assert viewer.layers["label"].data.transpose(2, 1, 0)[8, 5, 5] == 2
    assert "draft" in w2.case_info.value
