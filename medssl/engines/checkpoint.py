"""Lightning's checkpoint IO, made atomic and weights-only.

Reading and matching weights is :mod:`medssl.core.weights` (no Lightning there, so inference and
networks never import it); this module only adapts it to Lightning's ``CheckpointIO`` plugin.
"""

from __future__ import annotations

from typing import Any

import torch
from pytorch_lightning.plugins.io import TorchCheckpointIO

from medssl.core.atomic import save_torch_atomic


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that writes to a temporary file and renames it into place, and
    loads with ``weights_only=True``: a run killed while saving keeps its previous checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        save_torch_atomic(checkpoint, path)

    def load_checkpoint(self, path, map_location=None, weights_only=True) -> dict[str, Any]:
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)
