"""SSL augmentation recipes: preset shapes, determinism, per-sample parameters, vectorisation."""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode

from medssl.transforms import image_ssl_ops as A
from medssl.transforms.image_ssl_augment import PRESETS, SSLAugment

from tests.transforms.image_ssl_helpers import SHAPES
from tests.transforms.image_ssl_helpers import gen as _gen
from tests.transforms.image_ssl_helpers import img as _img


# ------------------------------------------------------------------------------------------
# presets end to end


@pytest.mark.parametrize("shape", SHAPES, ids=["2d-gray", "2d-rgb", "3d"])
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_shapes_and_dtypes(preset, shape):
    aug = SSLAugment(preset, spatial_dims=len(shape) - 2)
    x = torch.randint(0, 256, shape, dtype=torch.uint8, generator=_gen())
    v1, v2 = aug.two_views(x, generator=_gen())
    for v in (v1, v2):
        assert v.shape == shape and v.dtype == torch.float32
        assert v.min() >= -1.0 - 1e-6 and v.max() <= 1.0 + 1e-6  # [0, 1] normalised by 0.5 / 0.5
    crops = aug.multi_crop(x, generator=_gen())
    if preset == "dino":
        assert len(crops) == 2 + 8
        assert [c.shape for c in crops[:2]] == [shape] * 2
        assert all(c.shape == shape[:2] + (12,) * (len(shape) - 2) for c in crops[2:])
    else:
        assert len(crops) == 2


def test_determinism_with_a_seeded_generator():
    x = _img(4, 1, 28, 28)
    aug = SSLAugment("byol")
    a, b = aug.two_views(x, generator=_gen(7)), aug.two_views(x, generator=_gen(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = aug.two_views(x, generator=_gen(8))
    assert not torch.equal(a[0], c[0])
    assert not torch.equal(a[0], a[1])  # the two views draw independent parameters
    torch.manual_seed(3)  # the global RNG works as well
    d = aug.two_views(x)
    torch.manual_seed(3)
    assert torch.equal(d[0], aug.two_views(x)[0])


def test_samples_in_a_batch_get_different_parameters():
    x = _img(1, 1, 28, 28).expand(6, -1, -1, -1).contiguous()  # six copies of one image
    crops = A.random_resized_crop(x, generator=_gen())
    assert all(not torch.equal(crops[0], crops[i]) for i in range(1, 6))
    v1, _ = SSLAugment("simclr").two_views(x, generator=_gen())
    assert len({tuple(v.flatten().tolist()[:50]) for v in v1}) == 6


def test_byol_and_dino_presets_are_asymmetric():
    for name in ("byol", "mocov3", "barlow", "vicreg", "nnclr"):
        v1, v2 = PRESETS[name]["views"]
        assert (v1["blur_p"], v2["blur_p"]) == (1.0, 0.1)
        assert (v1.get("solarize_p", 0.0), v2["solarize_p"]) == (0.0, 0.2)
    dino = SSLAugment("dino", n_local=3, local_size=8)
    assert dino.views[0].crop_scale == (0.4, 1.0) and dino.local.crop_scale == (0.05, 0.4)
    assert len(dino.multi_crop(_img(2, 1, 28, 28))) == 5
    assert SSLAugment("light").views[0].crop_scale == (0.8, 1.0)


def test_overrides_and_bad_arguments():
    aug = SSLAugment("simclr", blur_sigma=(0.1, 2.0), noise_p=0.5)
    assert all(v.blur_sigma == (0.1, 2.0) and v.noise_p == 0.5 for v in aug.views)
    assert aug.describe()["views"][0]["noise_p"] == 0.5
    with pytest.raises(ValueError, match="unknown augmentation preset"):
        SSLAugment("mae")
    with pytest.raises(ValueError, match="unknown augmentation options"):
        SSLAugment("simclr", blurr_p=1.0)
    with pytest.raises(ValueError, match="no local crops"):
        SSLAugment("simclr", n_local=2)
    with pytest.raises(ValueError, match="spatial_dims=3"):
        SSLAugment("simclr", spatial_dims=3).two_views(_img(2, 1, 28, 28))
    with pytest.raises(TypeError, match="uint8 or floating"):
        A.to_float(torch.zeros(1, 1, 4, 4, dtype=torch.int16))


def test_identity_view_is_exact_identity():
    x = torch.randint(0, 256, (3, 1, 28, 28), dtype=torch.uint8, generator=_gen())
    aug = SSLAugment("light", mean=0.0, std=1.0, crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0)
    v1, v2 = aug.two_views(x, generator=_gen())
    assert torch.equal(v1, x.float() / 255) and torch.equal(v2, x.float() / 255)


# ------------------------------------------------------------------------------------------
# vectorisation: no op loops over the batch in Python


class _CountTorchCalls(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("preset", ["simclr", "byol", "dino"])
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_number_of_torch_calls_does_not_grow_with_batch_size(preset, spatial_dims):
    aug = SSLAugment(preset, spatial_dims=spatial_dims, n_local=2 if preset == "dino" else None)
    counts = []
    for batch in (2, 16):
        x = torch.randint(0, 256, (batch, 1, *([16] * spatial_dims)), dtype=torch.uint8)
        with _CountTorchCalls() as mode:
            aug.multi_crop(x, generator=_gen())
        counts.append(mode.calls)
    assert counts[0] == counts[1] > 0
