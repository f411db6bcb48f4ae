"""Views for multi-view co-training: exact inversion and the intended slicing axes."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from medssl.transforms.umct_views import View, make_views, stack_views, unstack_views

ALL_VIEWS = make_views(6)


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.name)
def test_invert_is_exact_for_tensors_and_arrays(view):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 5, 6, 7, generator=g)  # batch, channel, non-cubic spatial
    y = view.apply(x)
    assert tuple(y.shape) == (2, 3, *view.shape((5, 6, 7)))
    assert torch.equal(view.invert(y), x)

    a = np.random.default_rng(0).integers(0, 1000, size=(4, 6, 5)).astype(np.int16)  # no lead axes
    b = view.apply(a)
    assert isinstance(b, np.ndarray) and b.dtype == np.int16
    assert b.shape == view.shape(a.shape)
    np.testing.assert_array_equal(view.invert(b), a)
    np.testing.assert_array_equal(b, view.apply(torch.from_numpy(a)).numpy())  # same map for both types


@pytest.mark.parametrize("view", ALL_VIEWS, ids=lambda v: v.name)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_through_plane_axis_is_the_intended_original_axis(view, axis):
    shape = [5, 6, 7]
    ramp = torch.arange(shape[axis], dtype=torch.float32).reshape([-1 if a == axis else 1 for a in range(3)])
    x = ramp.expand(*shape).reshape(1, 1, *shape)  # varies only along original `axis`
    y = view.apply(x)[0, 0]
    varies = [bool((y - y.mean(dim=d, keepdim=True)).abs().max() > 0) for d in range(3)]
    if axis == view.through_axis:
        assert varies == [False, False, True]  # constant in-plane: the ramp runs through the slices
    else:
        assert varies[2] is False and any(varies[:2])  # constant through-plane, varies in-plane


def test_named_views_slice_along_the_anatomical_axes():
    views = {v.name: v for v in make_views(3)}
    assert (views["axial"].through_axis, views["coronal"].through_axis, views["sagittal"].through_axis) == (2, 1, 0)
    assert set(views["coronal"].inplane_axes) == {0, 2} and set(views["sagittal"].inplane_axes) == {1, 2}
    assert make_views(1) == [views["axial"]]


@pytest.mark.parametrize("n", [3, 6])
def test_views_are_distinct_and_cubic_shapes_are_kept(n):
    views = make_views(n)
    assert len({(v.perm, v.k_rot) for v in views}) == n and len({v.name for v in views}) == n
    x = torch.randn(1, 1, 6, 6, 6, generator=torch.Generator().manual_seed(1))
    outs = [v.apply(x) for v in views]
    assert all(o.shape == x.shape for o in outs)
    for a, b in itertools.combinations(outs, 2):
        assert not torch.equal(a, b)


@pytest.mark.parametrize("n", [0, 2, 4, 5, 7])
def test_unsupported_view_counts_raise(n):
    with pytest.raises(ValueError, match="1, 3 or 6"):
        make_views(n)


def test_bad_view_definitions_raise():
    with pytest.raises(ValueError, match="permutation"):
        View("bad", (0, 0, 1))
    with pytest.raises(ValueError, match="k_rot"):
        View("bad", (0, 1, 2), 4)
    with pytest.raises(ValueError, match="at least 3"):
        make_views(1)[0].apply(torch.zeros(4, 4))


def test_stack_and_unstack_round_trip():
    views = make_views(3)
    x = torch.randn(2, 1, 8, 8, 8, generator=torch.Generator().manual_seed(2))
    stacked = stack_views(x, views)
    assert stacked.shape == (2, 3, 8, 8, 8)
    back = unstack_views(stacked.unsqueeze(2), views)  # as if each view's "network" were the identity
    assert back.shape == (2, 3, 1, 8, 8, 8)
    assert all(torch.equal(back[:, i], x) for i in range(3))
    with pytest.raises(ValueError, match="cubic"):
        stack_views(torch.zeros(1, 1, 8, 8, 4), views)


def test_views_permute_space_never_channels():
    """A 2-channel patch: view i's block of the stacked input holds channel 0 then channel 1, each
    permuted in space exactly as a one-channel patch would be."""
    views = make_views(3)
    x = torch.randn(2, 2, 8, 8, 8)
    stacked = stack_views(x, views)
    assert stacked.shape == (2, 6, 8, 8, 8)
    for i, v in enumerate(views):
        for c in range(2):
            assert torch.equal(stacked[:, 2 * i + c], v.apply(x[:, c:c + 1])[:, 0])
