"""The napari layers of the case under review, in world coordinates (mm).

Layer names are fixed (``image``, ``uncertainty``, ``view 0``..., ``disagreement``, ``label``);
opening another case replaces each layer's data and affine in place, so only the current case is
held and napari's layer list (and the reviewer's visibility choices) stay as they are.
"""

from __future__ import annotations

import numpy as np

from .appearance import class_colors, contrast_limits
from .case_data import CaseData
from .geometry import to_display, volume_affine

IMAGE, UNCERTAINTY, DISAGREEMENT, LABEL = "image", "uncertainty", "disagreement", "label"
DISAGREEMENT_COLOR = (1.0, 0.0, 1.0, 1.0)  # magenta: no class uses it


def view_name(i: int) -> str:
    return f"view {i}"


def _label_colormap(n_classes: int):
    from napari.utils.colormaps import DirectLabelColormap

    colors = class_colors(n_classes)
    return DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), **colors})


def _features(classes: list[str]) -> dict:
    return {"index": list(range(len(classes))), "class": list(classes)}


def _put(viewer, name: str, kind: str, data: np.ndarray, affine: np.ndarray, **kwargs):
    """Update layer ``name`` in place (data, affine) or add it; returns the layer."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        layer.affine = affine
        layer.data = data
        for key in ("contrast_limits",):
            if key in kwargs:
                setattr(layer, key, kwargs[key])
        return layer
    add = getattr(viewer, f"add_{kind}")
    return add(data, name=name, affine=affine, **kwargs)


def show_case(viewer, data: CaseData, classes: list[str], shown_label: np.ndarray, show_disagreement: bool):
    """Put ``data``'s layers into ``viewer``; returns the editable Labels layer.

    ``shown_label`` is the ``(X, Y, Z)`` label to display (the working label, or its thresholded
    copy). Views are hidden by default; the disagreement layer follows ``show_disagreement``.
    """
    affine = volume_affine(data.image)
    img = data.image.array
    _put(viewer, IMAGE, "image", to_display(img), affine, colormap="gray",
         contrast_limits=contrast_limits(img, data.modality))
    if data.uncertainty is not None:
        _put(viewer, UNCERTAINTY, "image", to_display(data.uncertainty), affine, colormap="inferno",
             blending="additive", opacity=0.6, contrast_limits=(0.0, 1.0))
    elif UNCERTAINTY in viewer.layers:
        viewer.layers.remove(UNCERTAINTY)
    for i, v in enumerate(data.views):
        layer = _put(viewer, view_name(i), "labels", to_display(v), affine, colormap=_label_colormap(len(classes)),
                     opacity=0.5, visible=False, features=_features(classes))
        layer.editable = False
    i = len(data.views)
    while view_name(i) in viewer.layers:  # a case with fewer views than the previous one
        viewer.layers.remove(view_name(i))
        i += 1
    if data.disagreement is not None:
        dis = to_display(data.disagreement.view(np.uint8))
        layer = _put(viewer, DISAGREEMENT, "labels", dis, affine, opacity=0.8, visible=show_disagreement,
                     colormap=_direct({1: DISAGREEMENT_COLOR}))
        layer.editable = False
    elif DISAGREEMENT in viewer.layers:
        viewer.layers.remove(DISAGREEMENT)
    label = _put(viewer, LABEL, "labels", to_display(shown_label), affine, colormap=_label_colormap(len(classes)),
                 opacity=0.55, features=_features(classes))
    if hasattr(label, "_reset_history"):  # the previous case's undo history holds its arrays
        label._reset_history()
    viewer.layers.selection.active = label
    return label


def _direct(colors: dict):
    from napari.utils.colormaps import DirectLabelColormap

    return DirectLabelColormap(color_dict={None: (0.0, 0.0, 0.0, 0.0), 0: (0.0, 0.0, 0.0, 0.0), **colors})
