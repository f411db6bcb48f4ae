"""What the reviewer sees on top of the label: uncertainty threshold and view disagreement.

Pure array functions (``(X, Y, Z)`` arrays, as everywhere in medssl).

The threshold slider hides label voxels whose uncertainty is above it, without deleting them:
the layer shows :func:`threshold_label` of the full label, and edits made on that display are
folded back with :func:`merge_thresholded` before the threshold changes or the label is saved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def visible_mask(uncertainty: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels shown at ``threshold``: uncertainty at most the threshold (all of them at >= 1)."""
    if threshold >= 1.0:
        return np.ones(uncertainty.shape, dtype=bool)
    return uncertainty <= threshold


def threshold_label(label: np.ndarray, uncertainty: np.ndarray | None, threshold: float) -> np.ndarray:
    """``label`` with the voxels of uncertainty above ``threshold`` set to background (a copy).

    Raises:
        ValueError: label and uncertainty of different shapes.
    """
    if uncertainty is None or threshold >= 1.0:
        return label.copy()
    if uncertainty.shape != label.shape:
        raise ValueError(f"label {label.shape} and uncertainty {uncertainty.shape} differ in shape")
    return np.where(visible_mask(uncertainty, threshold), label, 0).astype(label.dtype)


def merge_thresholded(shown: np.ndarray, full: np.ndarray, uncertainty: np.ndarray | None,
                      threshold: float) -> np.ndarray:
    """Fold edits made on a thresholded display back into the full label.

    Visible voxels take the displayed (edited) value; hidden voxels keep the full label's value
    unless the reviewer painted a class there (a non-zero displayed value wins). So hiding never
    deletes, and painting is never lost.
    """
    if uncertainty is None or threshold >= 1.0:
        return shown.copy()
    vis = visible_mask(uncertainty, threshold)
    return np.where(vis | (shown != 0), shown, full).astype(full.dtype)


def disagreement(views: Sequence[np.ndarray], fused: np.ndarray | None = None) -> np.ndarray:
    """Voxels where the views' predictions (and the fused label, if given) do not all agree.

    Returns:
        ``bool`` array of the views' shape (all False for fewer than two arrays).

    Raises:
        ValueError: arrays of different shapes.
    """
    arrays = list(views) + ([fused] if fused is not None else [])
    if not arrays:
        raise ValueError("disagreement needs at least one prediction")
    ref = arrays[0]
    out = np.zeros(ref.shape, dtype=bool)
    for a in arrays[1:]:
        if a.shape != ref.shape:
            raise ValueError(f"predictions of shapes {ref.shape} and {a.shape} cannot be compared")
        out |= a != ref
    return out
