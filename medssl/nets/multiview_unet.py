"""Multi-view U-Net with asymmetric 3D kernels: one independent sub-network per view, one call.

UMCT (Xia et al., "3D Semi-Supervised Learning with Uncertainty-Aware Multi-View Co-Training",
WACV 2020, arXiv 1811.12506) trains one 3D network per view of the volume
(:mod:`medssl.transforms.umct_views`). Each network uses *asymmetric* kernels: in-plane 3x3x1
convolutions, which can be initialised from a 2D network trained on slices, plus 1x1x3
through-plane ones. Since every view slices the volume along a different axis, the sub-networks
learn different features, which is what makes their disagreement useful for co-training.

Here the N sub-networks are fused into one module with grouped convolutions
(``groups=num_views``): channels ``[i * c, (i + 1) * c)`` of every layer belong to view i. Grouped
convolutions, per-channel instance norms, max pooling and element-wise dropout never mix groups,
and skip connections are concatenated per view, so the views share no parameter and no
activation (tested) while each layer is one kernel launch for all views. Layout::

    input (B, N*in, S1, S2, S3)                                   view i = channels of group i
      encoder.0  block(in -> c0)      ------------------------------ skip ----+
      maxpool 2x2x2, encoder.1  block(c0 -> c1)  -------------- skip --+      |
      ...                                                              |      |
      maxpool, encoder.{L-1}  block(c_{L-2} -> c_{L-1}), dropout       |      |
      decoder.j: up-conv 2x2x2 stride 2, concat skip per view, block, dropout
      head: 1x1x1 conv -> (B, N, out, S1, S2, S3)

    block = conv_in (3, 3, 1) -> Norm -> LeakyReLU                  (the whole block in 2D)
            -> conv_through (1, 1, 3) -> Norm -> [+ in-plane pre-activation] -> LeakyReLU
    (Norm: InstanceNorm, or BatchNorm with norm="batch")
            ([...] with residual=True, the default)

``spatial_dims=2`` builds the 2D twin (3x3 convs, no through-plane convs, 2x2 pooling) with the
same parameter names, so :func:`init_inplane_from_2d` can copy a 2D network trained on slices
(e.g. with ``num_views=1`` on axial slices) into every view of the 3D one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
import torch
import torch.nn as nn

from medssl.errors import DataError

__all__ = [
    "MultiViewAsymUNet",
    "enable_mc_dropout",
    "init_inplane_from_2d",
    "load_view_state_dict",
    "view_state_dict",
]

_DROPOUTS = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)
# per-channel norms never mix view groups: instance (medssl's default) or batch (as the 2D U-Net of
# Chaitanya et al.'s official code; an instance norm makes the features invariant to a per-image affine
# intensity change, so the intensity-only copies of their local loss would be identical up to borders)
_NORMS = {"instance": {2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}, "batch": {2: nn.BatchNorm2d, 3: nn.BatchNorm3d}}


class _AsymBlock(nn.Module):
    """In-plane conv + norm + act, then (3D only) through-plane conv + norm + act, all grouped.

    With ``residual=True`` the through-plane branch is added to the in-plane pre-activation
    before the last LeakyReLU, and its norm's scale starts at 0: the block then starts as exactly
    its 2D twin applied slice by slice (up to instance-norm statistics, which are taken over the
    3D patch). With ``residual=False`` the block is the plain sequence, and the through-plane
    conv starts as the identity (Dirac), so no information crosses slices at the start.
    """

    def __init__(self, cin: int, cout: int, groups: int, spatial_dims: int, residual: bool, negative_slope: float,
                 norm_kind: str = "instance"):
        super().__init__()
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        norm = _NORMS[norm_kind][spatial_dims]
        k_in, pad_in = ((3, 3, 1), (1, 1, 0)) if spatial_dims == 3 else ((3, 3), (1, 1))
        # no conv bias where an instance norm follows: the norm removes it anyway
        self.conv_in = conv(groups * cin, groups * cout, k_in, padding=pad_in, groups=groups, bias=False)
        self.norm_in = norm(groups * cout, affine=True)
        self.act = nn.LeakyReLU(negative_slope)
        self.residual = residual
        self.conv_through: nn.Module | None = None
        self.norm_through: nn.Module | None = None
        if spatial_dims == 3:
            self.conv_through = nn.Conv3d(
                groups * cout, groups * cout, (1, 1, 3), padding=(0, 0, 1), groups=groups, bias=False
            )
            self.norm_through = _NORMS[norm_kind][3](groups * cout, affine=True)
            nn.init.dirac_(self.conv_through.weight, groups=groups)  # centre tap 1: identity per view
            if residual:
                nn.init.zeros_(self.norm_through.weight)  # branch output 0: block == 2D block at start

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.norm_in(self.conv_in(x))
        h = self.act(a)
        if self.conv_through is None:
            return h
        b = self.norm_through(self.conv_through(h))
        return self.act(a + b) if self.residual else self.act(b)


class _UpStage(nn.Module):
    """Decoder stage: grouped transposed conv (x2), per-view concat with the skip, block, dropout."""

    def __init__(
        self, cin: int, cout: int, groups: int, spatial_dims: int, residual: bool, negative_slope: float, dropout: float,
        norm_kind: str = "instance",
    ):
        super().__init__()
        tconv = nn.ConvTranspose3d if spatial_dims == 3 else nn.ConvTranspose2d
        self.groups = groups
        self.up = tconv(groups * cin, groups * cout, 2, stride=2, groups=groups)
        self.block = _AsymBlock(2 * cout, cout, groups, spatial_dims, residual, negative_slope, norm_kind)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.up(x)
        b, spatial = up.shape[0], up.shape[2:]
        # concatenate per view: (B, N, c, ...) + (B, N, c, ...) -> (B, N, 2c, ...) keeps the groups
        cat = torch.cat(
            [up.reshape(b, self.groups, -1, *spatial), skip.reshape(b, self.groups, -1, *spatial)], dim=2
        ).reshape(b, -1, *spatial)
        return self.dropout(self.block(cat))


class MultiViewAsymUNet(nn.Module):
    """N independent U-Nets with asymmetric kernels, one per view, run as one grouped network.

    Xia et al., WACV 2020 (arXiv 1811.12506): each view's sub-network is a 3D
    encoder-decoder whose kernels are in-plane 3x3x1 plus through-plane 1x1x3, so that 2D
    weights can initialise it (:func:`init_inplane_from_2d`). Dropout in the bottleneck and the
    decoder provides the MC-dropout uncertainty of the paper's label fusion (with
    :func:`enable_mc_dropout`).

    Args:
        num_views: N, the number of views (sub-networks).
        in_channels: input channels per view (1 for a single-modality scan).
        out_channels: classes including background; logits per view.
        channels: feature channels per resolution level (per view); ``len(channels) - 1`` max
            poolings, so patch sides must be divisible by ``2 ** (len(channels) - 1)``.
        dropout: element-wise dropout probability after the bottleneck and every decoder block.
        spatial_dims: 3 (asymmetric 3D network) or 2 (its 2D twin, same parameter names).
        residual: add the through-plane branch to the in-plane response (see the module
            docstring); with it the 3D network starts as its 2D twin applied slice by slice.
        negative_slope: LeakyReLU slope.
        squeeze_views: with ``num_views=1``, return plain ``(B, out_channels, *spatial)`` logits
            (a single-view asymmetric U-Net for the supervised method).
        norm: ``"instance"`` or ``"batch"`` normalisation after every convolution.

    Shapes:
        input ``(B, N * in_channels, *spatial)``, view-major on the channel axis (channels
        ``[i * in_channels, (i + 1) * in_channels)`` are view i, e.g. from
        :func:`medssl.transforms.umct_views.stack_views`); output ``(B, N, out_channels, *spatial)``.
    """

    def __init__(
        self,
        num_views: int = 3,
        in_channels: int = 1,
        out_channels: int = 2,
        channels: Sequence[int] = (16, 32, 64, 128),
        dropout: float = 0.2,
        spatial_dims: int = 3,
        residual: bool = True,
        negative_slope: float = 0.01,
        squeeze_views: bool = False,
        norm: str = "instance",
    ):
        super().__init__()
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {sorted(_NORMS)}, got {norm!r}")
        if squeeze_views and num_views != 1:
            raise ValueError(f"squeeze_views needs num_views=1, got {num_views}")
        self.squeeze_views = squeeze_views
        channels = tuple(int(c) for c in channels)
        if num_views < 1:
            raise ValueError(f"num_views must be at least 1, got {num_views}")
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if len(channels) < 2 or min(channels) < 1:
            raise ValueError(f"channels needs at least 2 positive levels, got {channels}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.num_views, self.in_channels, self.out_channels = num_views, in_channels, out_channels
        self.channels, self.spatial_dims, self.dropout_p = channels, spatial_dims, dropout
        self.residual, self.negative_slope, self.norm = residual, negative_slope, norm

        n, args = num_views, (num_views, spatial_dims, residual, negative_slope)
        self.encoder = nn.ModuleList(
            _AsymBlock(cin, cout, *args, norm) for cin, cout in zip((in_channels,) + channels[:-1], channels)
        )
        self.pool = (nn.MaxPool3d if spatial_dims == 3 else nn.MaxPool2d)(2)
        self.bottleneck_dropout = nn.Dropout(dropout)
        rev = channels[::-1]
        self.decoder = nn.ModuleList(_UpStage(cin, cout, *args, dropout, norm) for cin, cout in zip(rev[:-1], rev[1:]))
        conv = nn.Conv3d if spatial_dims == 3 else nn.Conv2d
        self.head = conv(n * channels[0], n * out_channels, 1, groups=n)

    def load_foreign_state(self, state) -> tuple[list[str], list[str]]:
        """Initialise from another network's weights: a 2D twin or a 1-view network fills the
        in-plane kernels of every view (:func:`init_inplane_from_2d`); used by
        :func:`medssl.core.weights.init_from_checkpoint` (``init_from`` of a config)."""
        return init_inplane_from_2d(self, state)

    @property
    def divisor(self) -> int:
        """Patch sides must be multiples of this (``2 ** number of poolings``)."""
        return 2 ** (len(self.channels) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """All views' logits in one call.

        Args:
            x: ``(B, N * in_channels, S1, S2, S3)`` (``(B, N * in_channels, H, W)`` in 2D), each
                view's transformed patch stacked on the channel axis, view-major.

        Returns:
            ``(B, N, out_channels, S1, S2, S3)`` (``(B, N, out_channels, H, W)``): view i's logits
            in view i's frame (map back with :meth:`medssl.transforms.umct_views.View.invert`).
        """
        self._check_input(x)
        out = self.head(self.decode(self.encode(x)))
        if self.squeeze_views:
            return out
        return out.reshape(out.shape[0], self.num_views, self.out_channels, *out.shape[2:])

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features of every level, finest first; the last one is the bottleneck.

        Returns:
            ``[f_0, ..., f_{L-1}]`` with ``f_l`` of shape ``(B, N * channels[l], *spatial / 2**l)``.
        """
        feats, h = [], x
        for level, block in enumerate(self.encoder):
            if level:
                h = self.pool(h)
            h = block(h)
            feats.append(h)
        return feats

    def decode(self, feats: list[torch.Tensor], num_blocks: int | None = None) -> torch.Tensor:
        """Run the first ``num_blocks`` decoder stages (all by default) on :meth:`encode`'s output.

        Returns:
            the decoder feature map after ``num_blocks`` stages,
            ``(B, N * channels[L-1-num_blocks], *spatial / 2**(L-1-num_blocks))``.
        """
        n = len(self.decoder) if num_blocks is None else int(num_blocks)
        if not 0 <= n <= len(self.decoder):
            raise ValueError(f"num_blocks must be in 0..{len(self.decoder)}, got {num_blocks}")
        skips = list(feats)
        h = self.bottleneck_dropout(skips.pop())
        for stage in self.decoder[:n]:
            h = stage(h, skips.pop())
        return h

    def _check_input(self, x: torch.Tensor) -> None:
        want = self.num_views * self.in_channels
        if x.ndim != self.spatial_dims + 2 or x.shape[1] != want:
            raise ValueError(
                f"MultiViewAsymUNet(num_views={self.num_views}, in_channels={self.in_channels}, "
                f"spatial_dims={self.spatial_dims}) needs input (B, {want}, *{self.spatial_dims} spatial), "
                f"got shape {tuple(x.shape)}"
            )
        spatial = tuple(x.shape[2:])
        if any(s % self.divisor for s in spatial):
            raise ValueError(
                f"patch size {spatial} must be divisible by {self.divisor} along every axis "
                f"(2 ** {len(self.channels) - 1} poolings for {len(self.channels)} levels)"
            )


# ---------------------------------------------------------------------------- helpers


def enable_mc_dropout(module: nn.Module) -> nn.Module:
    """Switch only the dropout layers to train mode, for MC-dropout inference.

    Call after ``module.eval()``: norms and everything else stay in inference mode, while each
    forward pass draws a new dropout mask (Gal & Ghahramani 2016, as in UMCT's uncertainty estimate). ``eval()``
    switches dropout off again.

    Returns:
        ``module``, for chaining.
    """
    for m in module.modules():
        if isinstance(m, _DROPOUTS):
            m.train()
    return module


def view_state_dict(net: MultiViewAsymUNet, view: int) -> dict[str, torch.Tensor]:
    """One view's sub-network as the state dict of a 1-view :class:`MultiViewAsymUNet`.

    Every parameter of the grouped network is view-major along its first axis (conv weights
    ``(N * out, in, ...)``, transposed-conv weights ``(N * in, out, ...)``, norm and bias
    vectors ``(N * c,)``), so view i's part is the i-th of N equal slices.

    Args:
        net: the multi-view network.
        view: index in ``[0, num_views)``.

    Returns:
        cloned tensors, loadable into ``MultiViewAsymUNet(num_views=1, ...)`` with the same
        other arguments.
    """
    n = net.num_views
    if not 0 <= view < n:
        raise ValueError(f"view must be in [0, {n}), got {view}")
    out = {}
    for name, t in net.state_dict().items():
        if t.ndim == 0:  # a BatchNorm's step counter: shared, not per view
            out[name] = t.clone()
            continue
        size = t.shape[0] // n
        out[name] = t[view * size : (view + 1) * size].clone()
    return out


@torch.no_grad()
def load_view_state_dict(net: MultiViewAsymUNet, view: int, state: Mapping[str, torch.Tensor]) -> None:
    """Write a 1-view state dict (as from :func:`view_state_dict`) into view ``view`` of ``net``."""
    n = net.num_views
    if not 0 <= view < n:
        raise ValueError(f"view must be in [0, {n}), got {view}")
    target = net.state_dict()
    missing = sorted(set(target) - set(state))
    if missing:
        raise ValueError(f"state dict lacks {len(missing)} entries, e.g. {missing[:3]}")
    for name, t in target.items():
        if t.ndim == 0:  # a BatchNorm's step counter
            continue
        size = t.shape[0] // n
        t[view * size : (view + 1) * size].copy_(state[name])


@torch.no_grad()
def init_inplane_from_2d(
    net: MultiViewAsymUNet, source: Mapping[str, torch.Tensor] | nn.Module
) -> tuple[list[str], list[str]]:
    """Initialise a 3D network's in-plane weights from its 2D twin (as UMCT does from 2D weights).

    Every 2D kernel ``(out, in, kh, kw)`` becomes the 3D kernel ``(out, in, kh, kw, 1)``
    (in-plane 3x3 convs and the 1x1 head); the 2x2 up-convolutions become ``(..., 2, 2, 2)`` with
    the kernel repeated in both through-plane taps (2D up-conv + nearest upsampling through-plane).
    Norm parameters and biases are copied as they are. A 2D source with 1 view is tiled into all N
    view groups; one with N views is copied group by group. Through-plane convs have no 2D
    counterpart and keep their initialisation (identity, see :class:`MultiViewAsymUNet`), so with
    ``residual=True`` the 3D network starts as the 2D one applied slice by slice, except that
    instance norms and max pooling act over the 3D patch.

    Networks load no files: read a checkpoint with :func:`medssl.core.weights.load_checkpoint`
    (weights-only) and pass it here, or use :func:`medssl.core.weights.init_from_checkpoint`.

    Args:
        net: the 3D (or 2D) multi-view network to initialise in place.
        source: a state dict (or a Lightning checkpoint dict, its ``"state_dict"`` is used) or a
            module, whose keys may carry a prefix such as ``"net."`` (the prefix matching the most
            parameter names is stripped, :func:`medssl.core.weights.best_prefix`). A source of
            the same dimensionality also loads (every matching tensor is copied).

    Returns:
        ``(loaded, skipped)``: the names of ``net``'s parameters that were set, and of those
        left as they were (no counterpart, or a shape that does not match).

    Raises:
        DataError: no parameter matches.
    """
    from medssl.core.weights import best_prefix, state_dict_of

    if isinstance(source, nn.Module):
        state = source.state_dict()
    elif isinstance(source, Mapping):
        state = state_dict_of(source)
    else:
        raise TypeError(f"source must be a state dict or a module, got {type(source).__name__}")
    target = net.state_dict()
    prefix = best_prefix(state, target)

    # value shaped like the target up to the view-group axis 0, and the tiling factor it needs
    candidates = {}
    for name, dst in target.items():
        src = state.get(prefix + name)
        value = None if src is None else _inflate(src, dst)
        if value is not None and dst.shape[0] % value.shape[0] == 0:
            candidates[name] = (value, dst.shape[0] // value.shape[0])
    # the factor is N (a 1-view source, tiled into every view) or 1 (copied group by group); kernels
    # decide it (their shapes check in-channels and kernel size too), vectors must agree with them
    votes = Counter(r for v, r in candidates.values() if v.ndim > 1 and r in (1, net.num_views))
    tiles = votes.most_common(1)[0][0] if votes else None

    loaded, skipped = [], []
    for name, dst in target.items():
        value, ratio = candidates.get(name, (None, None))
        if value is None or ratio != tiles:
            skipped.append(name)
            continue
        dst.copy_(value.repeat(ratio, *([1] * (value.ndim - 1))))
        loaded.append(name)
    if not loaded:
        raise DataError(
            f"no parameter matches the {net.spatial_dims}D MultiViewAsymUNet(num_views={net.num_views}, "
            f"channels={net.channels}) (expected names like 'encoder.0.conv_in.weight' of a 2D twin "
            f"with the same channels and 1 or {net.num_views} views; found e.g. {sorted(state)[:3]})"
        )
    return loaded, skipped


def _inflate(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor | None:
    """``src`` shaped like ``dst`` up to the view-group axis 0, or None if it cannot be."""
    if src.ndim == 0 or dst.ndim == 0:  # a BatchNorm's step counter: nothing to initialise
        return None
    if src.ndim == dst.ndim - 1 and dst.ndim == 5:  # 2D kernel -> 3D kernel, repeated through-plane
        src = src.unsqueeze(-1).expand(*src.shape, dst.shape[-1])
    if src.ndim != dst.ndim or src.shape[1:] != dst.shape[1:] or src.shape[0] == 0:
        return None
    return src.to(dtype=dst.dtype)
