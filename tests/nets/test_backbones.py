"""The backbone factory of the image-level methods: names, defaults by image side, input layer."""

from __future__ import annotations

import pytest
import torch

from medssl.nets.backbones import ARCHS, build_backbone, default_arch_kwargs, input_layer


@pytest.mark.parametrize("arch", ARCHS)
def test_every_arch_builds_in_2d_with_its_defaults(arch):
    net = build_backbone(arch, 2, 3, **default_arch_kwargs(arch, 28)).eval()
    assert net(torch.rand(2, 3, 28, 28)).shape == (2, net.out_dim)
    layer = input_layer(net)
    assert layer is not None and net.state_dict()[layer].shape[1] == 3  # the first conv reads the input


def test_defaults_by_image_side_and_unknown_arch():
    assert default_arch_kwargs("resnet18", 28) == {"small_input": True}
    assert default_arch_kwargs("resnet50", 64) == {"small_input": False}
    assert default_arch_kwargs("vit_small", 28) == {"image_size": 28, "patch_size": 4}
    assert default_arch_kwargs("vit_small", 64)["patch_size"] == 8
    assert default_arch_kwargs("vit_small", 224)["patch_size"] == 16
    assert input_layer(torch.nn.Linear(2, 2)) is None
    with pytest.raises(ValueError, match="unknown arch"):
        build_backbone("resnet34", 2, 1)
