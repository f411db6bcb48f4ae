"""uint8 image tensors of several MedMNIST datasets brought to one channel count.

Multi-domain pretraining on a union of datasets with 1 and 3 channels: :func:`union_images`
repeats grayscale images to 3 channels (:func:`to_channels`) and concatenates, so one RGB-input
backbone sees every domain; a grayscale image repeated to RGB is what an ImageNet-pretrained
network is usually fed, and its colour jitter then acts as brightness/contrast only. Evaluating a
backbone on a dataset with other channels: :func:`adapt_channels` (RGB into a grayscale backbone
becomes its luma).
"""

from __future__ import annotations

from typing import Sequence

import torch

#: ITU-R BT.601 luma weights of R, G, B
LUMA_BT601 = (0.299, 0.587, 0.114)


def to_channels(images: torch.Tensor, channels: int) -> torch.Tensor:
    """Bring a ``(N, C, *spatial)`` image tensor to ``channels`` channels by repeating grayscale.

    Args:
        images: ``(N, C, *spatial)``, any dtype (normally uint8).
        channels: wanted channel count.

    Returns:
        ``images`` itself if ``C == channels``; for ``C == 1`` an expanded view
        ``(N, channels, *spatial)`` that shares memory (indexing a batch from it materialises only
        the batch; ``torch.cat`` materialises the whole).

    Raises:
        ValueError: ``C`` is neither ``channels`` nor 1 (RGB is not collapsed to gray here).
    """
    if images.ndim < 3:
        raise ValueError(f"expected (N, C, *spatial) images, got shape {tuple(images.shape)}")
    c = images.shape[1]
    if c == channels:
        return images
    if c != 1:
        raise ValueError(f"cannot bring {c}-channel images to {channels} channels; only grayscale (1) is repeated")
    return images.expand(-1, channels, *images.shape[2:])


def union_images(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Concatenate image tensors of several datasets, repeating grayscale ones to the widest channel count.

    For multi-domain pretraining (e.g. BreastMNIST grayscale + DermaMNIST RGB): every part must have
    the same number of axes and the same spatial size (load every dataset at one ``size``).

    Args:
        parts: uint8 tensors ``(N_i, C_i, *spatial)`` with ``C_i`` in {1, C}.

    Returns:
        ``(sum N_i, C, *spatial)`` with ``C = max C_i``, a new contiguous tensor.

    Raises:
        ValueError: no parts, differing axes / spatial sizes / dtypes, or a channel count other than 1 and C.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("union_images needs at least one image tensor")
    first = parts[0]
    for i, p in enumerate(parts):
        if p.ndim != first.ndim or p.shape[2:] != first.shape[2:]:
            raise ValueError(
                f"part {i} has shape {tuple(p.shape)}, part 0 {tuple(first.shape)}: every dataset needs the same "
                "spatial size (load them at one size)"
            )
        if p.dtype != first.dtype:
            raise ValueError(f"part {i} has dtype {p.dtype}, part 0 {first.dtype}")
    channels = max(p.shape[1] for p in parts)
    return torch.cat([to_channels(p, channels) for p in parts])


def adapt_channels(images: torch.Tensor, channels: int | None) -> torch.Tensor:
    """uint8 ``(N, C, *spatial)`` images brought to a backbone's input channels: grayscale is
    repeated (:func:`to_channels`), RGB into a grayscale backbone becomes its luma
    ``0.299 R + 0.587 G + 0.114 B`` (ITU-R BT.601), rounded back to uint8; ``None`` or the same
    count returns ``images`` itself."""
    if channels is None or images.shape[1] == channels:
        return images
    if channels == 1 and images.shape[1] == 3:
        w = torch.tensor(LUMA_BT601).view(1, 3, *([1] * (images.ndim - 2)))
        return (images.float() * w).sum(1, keepdim=True).round_().clamp_(0, 255).to(torch.uint8)
    return to_channels(images, channels)
