"""The 2D two-channel phantoms: a 2D network given both channels beats the same network given one
(the second channel carries the class, the first the shapes)."""

from __future__ import annotations

import numpy as np
import torch

from medssl.data.phantom_channels import make_channel_phantom


def _train_and_score(channels: list[int], steps: int = 120) -> float:
    from monai.networks.nets import UNet

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    train = [make_channel_phantom(rng, (48, 48)) for _ in range(8)]
    test = [make_channel_phantom(np.random.default_rng(100 + i), (48, 48)) for i in range(6)]
    x = torch.from_numpy(np.stack([c.images[channels] for c in train]))
    y = torch.from_numpy(np.stack([c.label for c in train]).astype(np.int64))
    net = UNet(2, len(channels), 3, channels=(8, 16, 32), strides=(2, 2), num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(x), y)
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pred = net(torch.from_numpy(np.stack([c.images[channels] for c in test]))).argmax(1).numpy()
    lab = np.stack([c.label for c in test])
    dice = [2 * ((pred == k) & (lab == k)).sum() / max(1, (pred == k).sum() + (lab == k).sum()) for k in (1, 2)]
    return float(np.mean(dice))


def test_2d_network_needs_both_channels():
    both, first, second = _train_and_score([0, 1]), _train_and_score([0]), _train_and_score([1])
    assert both > 0.85, both
    assert both > first + 0.2 and both > second + 0.2, (both, first, second)
