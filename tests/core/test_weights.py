from __future__ import annotations

import pytest
import torch
from torch import nn

from medssl.core.weights import (
    adapt_input_channels,
    best_prefix,
    copy_matching,
    init_from_checkpoint,
    load_checkpoint,
    select_parts,
)
from medssl.errors import DataError


def test_best_prefix_picks_the_prefix_matching_most_names():
    target = {"encoder.0.weight", "encoder.0.bias", "head.weight"}
    state = {"module.net.encoder.0.weight": 0, "module.net.encoder.0.bias": 0, "module.net.head.weight": 0, "x.head.weight": 0}
    assert best_prefix(state, target) == "module.net."
    assert best_prefix({"other": 0}, target) == ""


def test_select_parts_is_by_whole_name_component():
    state = {"encoder.0.w": 1, "encoder10.w": 2, "decoder.0.w": 3, "decoder.1.w": 4}
    assert set(select_parts(state, ["encoder", "decoder.0"])) == {"encoder.0.w", "decoder.0.w"}
    assert select_parts(state, None) == state


def test_copy_matching_and_errors(tmp_path):
    net = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    src = {"0.weight": torch.ones(3, 2), "1.weight": torch.ones(5, 5)}
    loaded, skipped = copy_matching(net, src)
    assert loaded == ["0.weight"] and "1.weight" in skipped
    assert torch.equal(net[0].weight, torch.ones(3, 2))
    with pytest.raises(DataError, match="no parameter"):
        copy_matching(net, {"zzz": torch.ones(1)}, tmp_path / "f.pt")


def test_init_from_checkpoint_strips_prefix_and_respects_parts(tmp_path):
    net = nn.Sequential()
    net.add_module("encoder", nn.Linear(2, 2))
    net.add_module("decoder", nn.Linear(2, 2))
    ckpt = tmp_path / "run.ckpt"
    torch.save({"state_dict": {"net.encoder.weight": torch.full((2, 2), 7.0), "net.decoder.weight": torch.full((2, 2), 9.0)},
                "medssl": {"trained_parts": ["encoder"]}}, ckpt)
    before = net.decoder.weight.detach().clone()
    loaded, _, parts = init_from_checkpoint(net, ckpt)
    assert parts == ["encoder"] and loaded == ["encoder.weight"]
    assert torch.equal(net.encoder.weight, torch.full((2, 2), 7.0)) and torch.equal(net.decoder.weight, before)
    with pytest.raises(DataError, match="no network weights under"):
        init_from_checkpoint(net, ckpt, ["head"])


def test_load_checkpoint_is_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("code ran",))

    p = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, p)
    with pytest.raises(DataError, match="evil.pt.*weights-only"):
        load_checkpoint(p)


def test_adapt_input_channels():
    w = torch.randn(4, 3, 3, 3)
    assert torch.allclose(adapt_input_channels(w, 1), w.sum(1, keepdim=True))
    g = torch.randn(4, 1, 3, 3)
    assert torch.allclose(adapt_input_channels(g, 3).sum(1, keepdim=True), g)
    with pytest.raises(ValueError):
        adapt_input_channels(w, 2)
