"""The reader contribution: opening an export folder (or its ``manifest.json``) in napari docks
the review widget on it, which adds the case layers itself (napari's "null layer" result)."""

from __future__ import annotations

from .session import is_export


def get_reader(path):
    """A reader for a medssl pseudo-label export, else None (napari tries other readers)."""
    if isinstance(path, list):
        if len(path) != 1:
            return None
        path = path[0]
    return read_export if is_export(path) else None


def read_export(path):
    import napari

    from ._launch import open_review

    if isinstance(path, list):
        path = path[0]
    viewer = napari.current_viewer()
    if viewer is None:
        raise RuntimeError("no napari viewer to review in")
    open_review(viewer, path)
    return [(None,)]
