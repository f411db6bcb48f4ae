"""Memory-bounded stitching: slabs along z reduce as they go, keep probabilities only when asked,
never hold more slices than the budget, and put every slab's centre back in the right place."""

from __future__ import annotations

import numpy as np
import torch

from medssl.data.volume import Volume
from medssl.inference.predictor import Predictor


class _Pointwise(torch.nn.Module):
    """A stand-in model whose output at a voxel depends on that voxel only: any tiling of the
    sliding window gives the same stitched values, so slabs must equal the whole exactly."""

    class_names = ["background", "a", "b"]
    num_views = 0

    def predict_window(self, x, mc_samples=1, precision="32"):
        logits = torch.cat([torch.zeros_like(x[:, :1]), x[:, :1], -x[:, :1] * 0.5], 1)
        return {"probs": torch.softmax(logits, 1)}


def test_slabs_equal_the_whole_and_respect_the_budget():
    rng = np.random.default_rng(0)
    arr = rng.normal(0, 1, (40, 36, 64)).astype(np.float32) + np.linspace(-2, 2, 64, dtype=np.float32)
    p = Predictor(_Pointwise(), roi_size=(16, 16, 8), overlap=0.25, sw_batch_size=2)
    x = p.channels_input([Volume(arr)])
    whole = p.stitch(x, keep_probabilities=True)

    per_slice = (3 + 1 + 1) * 4 * 40 * 36
    p.max_stitch_bytes = per_slice * 12  # slabs of 8 slices + 2 x 2 of context: 8 slabs
    calls = []
    real = p.window_outputs
    p.window_outputs = lambda image: calls.append(image.shape[-1]) or real(image)
    slabs = p.stitch(x, keep_probabilities=True)
    assert len(calls) == 8 and max(calls) <= 12
    np.testing.assert_allclose(slabs["probabilities"], whole["probabilities"], atol=1e-5)
    np.testing.assert_array_equal(slabs["label"], whole["label"])
    np.testing.assert_allclose(slabs["uncertainty"], whole["uncertainty"], atol=1e-5)
    assert p.stitch(x)["probabilities"] is None  # not kept unless asked
    pred = p.predict_volume(Volume(arr), keep_probabilities=True)
    np.testing.assert_array_equal(pred.label, whole["label"])
    assert pred.probabilities.shape == (3, 40, 36, 64) and pred.label.dtype == np.uint8
