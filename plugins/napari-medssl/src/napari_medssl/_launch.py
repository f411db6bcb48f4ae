"""Docking the review widget on a viewer, and the window that ``medssl review`` opens."""

from __future__ import annotations

from pathlib import Path

DOCK_NAME = "medssl review"


def open_review(viewer, export: str | Path, reviewer: str | None = None):
    """Dock a :class:`~._widget.ReviewWidget` on ``viewer`` (or reuse the docked one) and open ``export``."""
    from ._widget import ReviewWidget

    existing = getattr(viewer, "_medssl_review_widget", None)
    if existing is not None:
        if reviewer:
            existing.reviewer.value = reviewer
        existing.open(export)
        return existing
    widget = ReviewWidget(viewer, reviewer=reviewer)
    viewer.window.add_dock_widget(widget, name=DOCK_NAME, area="right")
    viewer._medssl_review_widget = widget
    widget.open(export)
    return widget


def run(export: str | Path, reviewer: str | None = None) -> None:
    """Open napari with the review widget on ``export`` and block until the window closes.

    Raises:
        MedsslError: on Linux without a display (Qt would abort the process instead).
    """
    import os
    import sys

    from medssl.errors import MedsslError

    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise MedsslError("no display to open napari on ($DISPLAY is unset): run it on a desktop, with ssh -X, "
                          "or under xvfb-run for a headless check")
    import napari

    viewer = napari.Viewer(title=f"medssl review: {Path(export).resolve()}")
    open_review(viewer, export, reviewer)
    napari.run()
