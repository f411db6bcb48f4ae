"""Views of a 3D patch for multi-view co-training: exact axis permutations and 90-degree rotations.

UMCT (Xia et al., "3D Semi-Supervised Learning with Uncertainty-Aware Multi-View Co-Training",
WACV 2020, arXiv 1811.12506) trains one sub-network per *view* of the same volume; the
views are made "by rotating or permuting the 3D data", so that each sub-network, with its
asymmetric 3x3x1 kernels, sees the volume slice by slice along a different axis. Their
predictions disagree for structural reasons, which co-training exploits.

Convention: arrays are ``(..., X, Y, Z)``: the last three axes are spatial, in the order
``(x, y, z)`` of medssl volumes, with any leading axes (batch, channel). After a view's
transform the *last* spatial axis is the view's through-plane axis and the first two are its
in-plane axes, which is what the asymmetric kernels of
:class:`medssl.nets.multiview_unet.MultiViewAsymUNet` assume ((3, 3, 1) in-plane, (1, 1, 3)
through-plane).

Every transform is pure indexing (a transpose, then ``rot90`` in the in-plane axes), so
``view.invert(view.apply(x))`` equals ``x`` bit for bit, for any shape, with no interpolation.
Views of a non-cubic patch have different shapes; the views of one patch can be stacked on the
channel axis (one grouped network call) only when the patch is cubic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

__all__ = ["View", "make_views", "stack_views", "unstack_views", "VIEW_AXES"]

ArrayT = TypeVar("ArrayT", torch.Tensor, np.ndarray)

#: original spatial axis index -> name, for messages
VIEW_AXES = ("x", "y", "z")


@dataclass(frozen=True)
class View:
    """One view: a permutation of the spatial axes, then ``k_rot`` 90-degree in-plane rotations.

    Args:
        name: a readable name (``"axial"``, ``"coronal"``, ...).
        perm: the original spatial axes (0 = x, 1 = y, 2 = z) in their new order: the view's
            array has axes ``(perm[0], perm[1], perm[2])`` of the original, so ``perm[2]`` is the
            through-plane axis and ``perm[:2]`` are the in-plane axes.
        k_rot: number of 90-degree rotations (0-3) in the view's in-plane axes (the first two
            spatial axes *after* the permutation), from the first toward the second, as
            :func:`torch.rot90`.
    """

    name: str
    perm: tuple[int, int, int] = (0, 1, 2)
    k_rot: int = 0

    def __post_init__(self):
        perm = tuple(int(p) for p in self.perm)
        if sorted(perm) != [0, 1, 2]:
            raise ValueError(f"view {self.name!r}: perm must be a permutation of (0, 1, 2), got {self.perm!r}")
        if int(self.k_rot) != self.k_rot or not 0 <= self.k_rot <= 3:
            raise ValueError(f"view {self.name!r}: k_rot must be an integer in 0..3, got {self.k_rot!r}")
        object.__setattr__(self, "perm", perm)
        object.__setattr__(self, "k_rot", int(self.k_rot))

    @property
    def through_axis(self) -> int:
        """The original spatial axis (0, 1, 2 for x, y, z) that becomes the view's last axis."""
        return self.perm[2]

    @property
    def inplane_axes(self) -> tuple[int, int]:
        """The original spatial axes that span the view's slices (before the in-plane rotation)."""
        return self.perm[0], self.perm[1]

    @property
    def inverse_perm(self) -> tuple[int, int, int]:
        """The permutation that undoes :attr:`perm`."""
        return tuple(int(i) for i in np.argsort(self.perm))

    def shape(self, spatial_shape: Sequence[int]) -> tuple[int, int, int]:
        """The view's spatial shape for an original spatial shape ``(X, Y, Z)``."""
        if len(spatial_shape) != 3:
            raise ValueError(f"view {self.name!r}: need a 3D spatial shape, got {tuple(spatial_shape)}")
        s = [int(spatial_shape[p]) for p in self.perm]
        if self.k_rot % 2:
            s[0], s[1] = s[1], s[0]
        return s[0], s[1], s[2]

    def apply(self, x: ArrayT) -> ArrayT:
        """The view of ``x``: permute the last three axes, then rotate in the first two of them.

        Args:
            x: tensor or array ``(..., X, Y, Z)`` with at least 3 axes.

        Returns:
            ``(..., *self.shape((X, Y, Z)))``, same type, dtype and device. A numpy result may be
            a non-contiguous view of ``x``; a tensor result is a new tensor when ``k_rot > 0``
            and a strided view of ``x`` otherwise.
        """
        nd = _check_ndim(x, self.name)
        lead = list(range(nd - 3))
        axes = lead + [nd - 3 + p for p in self.perm]
        return _rot90(_transpose(x, axes), self.k_rot, nd)

    def invert(self, y: ArrayT) -> ArrayT:
        """Map an array in the view's frame back to the original frame (exact inverse of :meth:`apply`).

        Args:
            y: ``(..., S1, S2, S3)`` in the view's axis order, e.g. the view's logits
                ``(B, C, S1, S2, S3)``.

        Returns:
            ``(..., X, Y, Z)`` in the original axis order.
        """
        nd = _check_ndim(y, self.name)
        lead = list(range(nd - 3))
        y = _rot90(y, -self.k_rot, nd)
        return _transpose(y, lead + [nd - 3 + p for p in self.inverse_perm])


def _check_ndim(x, name: str) -> int:
    nd = x.ndim
    if nd < 3:
        raise ValueError(f"view {name!r}: need an array with at least 3 (spatial) axes, got shape {tuple(x.shape)}")
    return nd


def _transpose(x, axes: list[int]):
    if axes == sorted(axes):
        return x
    return x.permute(*axes) if isinstance(x, torch.Tensor) else np.transpose(x, axes)


def _rot90(x, k: int, nd: int):
    k %= 4
    if k == 0:
        return x
    if isinstance(x, torch.Tensor):
        return torch.rot90(x, k, dims=(nd - 3, nd - 2))
    return np.rot90(x, k, axes=(nd - 3, nd - 2))


_AXIAL = View("axial", (0, 1, 2))  # slices in (x, y), through z
_CORONAL = View("coronal", (0, 2, 1))  # slices in (x, z), through y
_SAGITTAL = View("sagittal", (1, 2, 0))  # slices in (y, z), through x


def make_views(n: int) -> list[View]:
    """The standard view sets of UMCT.

    * ``n = 1``: ``[axial]`` (the single-view baseline).
    * ``n = 3``: axial (in-plane x, y; through z), coronal (in-plane x, z; through y) and
      sagittal (in-plane y, z; through x): the three orthogonal permutations of the paper.
    * ``n = 6``: those three plus each of them rotated by 90 degrees in its own plane
      (``axial_rot90``, ``coronal_rot90``, ``sagittal_rot90``, ``k_rot = 1``).

    About ``n = 6``: the paper generates views "by rotating or permuting the 3D data" and also
    reports a 6-view setting, but the part of its text available when this was written (the
    abstract) does not say how the 3 extra views are made; check against the full paper. With
    axis-aligned, interpolation-free transforms there are only 3 distinct through-plane axes, so
    we make the extra views exact 90-degree in-plane rotations of the 3 permutations: each slices
    along the same axis as its partner but with a different in-plane orientation, so, with its
    own weights, it is a different (not rotation-equivariant) CNN on the same slices. Views at
    oblique angles (e.g. 45 degrees) would need resampling and would not be exactly invertible.

    Args:
        n: number of views, 1, 3 or 6.

    Returns:
        ``n`` distinct :class:`View` objects, the identity (axial) first.
    """
    if n == 1:
        return [_AXIAL]
    base = [_AXIAL, _CORONAL, _SAGITTAL]
    if n == 3:
        return base
    if n == 6:
        return base + [View(f"{v.name}_rot90", v.perm, 1) for v in base]
    raise ValueError(f"number of views must be 1, 3 or 6, got {n!r}")


def stack_views(x: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
    """All views of a batch stacked on the channel axis: the input of one grouped network call.

    Args:
        x: ``(B, C, X, Y, Z)``; the views must share one shape, so a cubic patch unless the
            views agree otherwise.
        views: N views.

    Returns:
        ``(B, N * C, S1, S2, S3)``, view-major: channels ``[i * C, (i + 1) * C)`` are view i.
    """
    if x.ndim != 5:
        raise ValueError(f"stack_views needs (B, C, X, Y, Z), got shape {tuple(x.shape)}")
    shapes = {v.shape(x.shape[-3:]) for v in views}
    if len(shapes) != 1:
        raise ValueError(
            f"the views of a {tuple(x.shape[-3:])} patch have different shapes {sorted(shapes)}; "
            "stacking them needs a cubic patch"
        )
    return torch.cat([v.apply(x) for v in views], dim=1)


def unstack_views(y: torch.Tensor, views: Sequence[View]) -> torch.Tensor:
    """Each view's output mapped back to the original frame.

    Args:
        y: ``(B, N, C, S1, S2, S3)``, view i's output in view i's frame (the output of
            :class:`~medssl.nets.multiview_unet.MultiViewAsymUNet`).
        views: the N views that made the input.

    Returns:
        ``(B, N, C, X, Y, Z)``, all views in the original frame.
    """
    if y.ndim != 6 or y.shape[1] != len(views):
        raise ValueError(f"unstack_views needs (B, {len(views)}, C, S1, S2, S3), got shape {tuple(y.shape)}")
    return torch.stack([v.invert(y[:, i]) for i, v in enumerate(views)], dim=1)
