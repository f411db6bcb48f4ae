"""Process-level runtime helpers."""

from __future__ import annotations

import pytest


def test_bf16_conv3d_warning_only_for_3d_bf16_on_cpu():
    import warnings

    from medssl.core.runtime import warn_bf16_conv3d_on_cpu

    with pytest.warns(RuntimeWarning, match="precision '32' for 3D on CPU"):
        assert warn_bf16_conv3d_on_cpu("cpu", 3, "bf16")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not warn_bf16_conv3d_on_cpu("cpu", 2, "bf16")
        assert not warn_bf16_conv3d_on_cpu("cpu", 3, "32")
        assert not warn_bf16_conv3d_on_cpu("cuda", 3, "bf16")
