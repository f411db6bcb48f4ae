"""Projection / prediction heads of the self-supervised methods: vectors in, vectors out.

* :class:`MLPHead`: ``Linear-BN-ReLU`` blocks and a last ``Linear`` (optionally followed by a
  BatchNorm without affine parameters, as the projectors and predictors of SimSiam and MoCo v3).
  It serves as SimCLR/NNCLR projector, BYOL/SimSiam/MoCo v3 projector and predictor, and the
  Barlow Twins/VICReg expander.
* :class:`DINOHead`: MLP to an l2-normalised bottleneck followed by a weight-normalised linear
  layer without bias (Caron et al., "Emerging Properties in Self-Supervised Vision
  Transformers", ICCV 2021, Sec. 3.1 and Appendix; facebookresearch/dino ``DINOHead``).

Both take ``(B, in_dim)`` features, i.e. what a backbone of ``medssl.nets`` returns, so they do
not depend on ``spatial_dims``.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn


def _check_features(x: torch.Tensor, in_dim: int, name: str) -> None:
    if x.ndim != 2 or x.shape[1] != in_dim:
        raise ValueError(f"{name} expects features of shape (B, {in_dim}), got {tuple(x.shape)}")


def _mlp_layers(
    in_dim: int,
    hidden_dim: int,
    out_dim: int,
    num_layers: int,
    *,
    bn: bool,
    act: Callable[[], nn.Module],
    hidden_bias: bool,
    last_bias: bool,
) -> list[nn.Module]:
    """``num_layers`` Linear layers ``in_dim -> hidden_dim -> ... -> out_dim``, the shared body of the heads.

    Every layer but the last is ``Linear -> BatchNorm1d (if bn) -> act()``; the last is a bare
    ``Linear``. Layers are created in order, so the same seed gives the same initial weights.

    Args:
        in_dim: input feature size.
        hidden_dim: width of the hidden layers.
        out_dim: output size of the last Linear.
        num_layers: number of Linear layers (>= 1).
        bn: BatchNorm1d after each hidden Linear.
        act: makes the activation module of each hidden block.
        hidden_bias: bias of the hidden Linear layers.
        last_bias: bias of the last Linear.

    Raises:
        ValueError: ``num_layers < 1``.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    layers: list[nn.Module] = []
    for i in range(num_layers - 1):
        layers.append(nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim, bias=hidden_bias))
        if bn:
            layers.append(nn.BatchNorm1d(hidden_dim))
        layers.append(act())
    layers.append(nn.Linear(in_dim if num_layers == 1 else hidden_dim, out_dim, bias=last_bias))
    return layers


class MLPHead(nn.Module):
    """Multi-layer perceptron head ``in_dim -> hidden_dim -> ... -> out_dim``.

    Every layer but the last is ``Linear -> BatchNorm1d -> ReLU`` (BatchNorm dropped when
    ``bn=False``). The last layer is a ``Linear``, followed by ``BatchNorm1d(affine=False)`` when
    ``last_bn=True`` (SimSiam, Chen & He, CVPR 2021, Sec. 4.4 "BN on the output of the projection
    MLP"; MoCo v3 ``_build_mlp``). A Linear directly followed by BatchNorm has no bias (the BN
    shift makes it redundant), as in MoCo v3.

    Args:
        in_dim: input feature size.
        hidden_dim: width of the hidden layers.
        out_dim: output size.
        num_layers: number of Linear layers (>= 1); 1 gives a single linear map.
        last_bn: BatchNorm without affine parameters after the last Linear.
        bn: BatchNorm in the hidden blocks.
        bias: ``False`` drops every bias (the global head of Chaitanya et al.'s official code,
            ``use_bias=False``); default: a bias wherever no BatchNorm follows.

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``. With BatchNorm in training mode ``B`` must be > 1.
    """

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        last_bn: bool = False,
        bn: bool = True,
        bias: bool | None = None,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        # a Linear followed by BatchNorm has no bias (the BN shift makes it redundant), as in MoCo v3
        relu = partial(nn.ReLU, inplace=True)
        hidden_bias, last_bias = (not bn, not last_bn) if bias is None else (bias and not bn, bias and not last_bn)
        layers = _mlp_layers(
            in_dim, hidden_dim, out_dim, num_layers, bn=bn, act=relu, hidden_bias=hidden_bias, last_bias=last_bias
        )
        if last_bn:
            layers.append(nn.BatchNorm1d(out_dim, affine=False))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)``."""
        _check_features(x, self.in_dim, type(self).__name__)
        return self.mlp(x)


class DINOHead(nn.Module):
    """DINO projection head: MLP, l2-normalised bottleneck, weight-normalised last layer.

    ``x -> MLP (Linear-GELU blocks) -> bottleneck_dim -> l2-normalise -> WeightNorm Linear ->
    out_dim`` (Caron et al. 2021, Appendix "Projection head"). The last layer is
    ``W = g * V / ||V||`` row-wise with ``g`` initialised to 1; with ``norm_last_layer=True``
    ``g`` is frozen at 1, so each output is a cosine between the bottleneck and a unit prototype
    (DINO's default, which the authors report stabilises training).

    Defaults are smaller than DINO's (out_dim 65536, hidden 2048) for 28 px MedMNIST images and
    small backbones: out_dim 2048, hidden 512, bottleneck 256.

    Args:
        in_dim: backbone feature size.
        out_dim: number of prototypes (softmax dimension of the DINO loss).
        hidden_dim: width of the hidden MLP layers.
        bottleneck_dim: size of the l2-normalised bottleneck.
        num_layers: Linear layers in the MLP before the bottleneck (>= 1), 3 in DINO.
        norm_last_layer: freeze the weight-norm gain ``g`` at 1.
        bn: BatchNorm in the hidden MLP blocks (DINO's ``use_bn``, off by default).

    Shapes:
        ``(B, in_dim) -> (B, out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int = 2048,
        hidden_dim: int = 512,
        bottleneck_dim: int = 256,
        num_layers: int = 3,
        norm_last_layer: bool = True,
        bn: bool = False,
    ) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        # DINO keeps the biases of Linear layers followed by BatchNorm (its ``use_bn``)
        layers = _mlp_layers(
            in_dim, hidden_dim, bottleneck_dim, num_layers, bn=bn, act=nn.GELU, hidden_bias=True, last_bias=True
        )
        self.mlp = nn.Sequential(*layers)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        last = nn.Linear(bottleneck_dim, out_dim, bias=False)
        self.last_layer = nn.utils.parametrizations.weight_norm(last, dim=0)
        gain = self.last_layer.parametrizations.weight.original0  # g, shape (out_dim, 1)
        with torch.no_grad():
            gain.fill_(1.0)
        gain.requires_grad_(not norm_last_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_dim) -> (B, out_dim)`` logits (before the temperature softmax)."""
        _check_features(x, self.in_dim, type(self).__name__)
        x = nn.functional.normalize(self.mlp(x), dim=-1, p=2)
        return self.last_layer(x)
