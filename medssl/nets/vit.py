"""Small Vision Transformer backbone, 2D and 3D, in plain PyTorch.

Backbone contract: ``backbone(x) -> (B, backbone.out_dim)`` pooled features, here the final
(layer-normed) CLS token as in ViT (Dosovitskiy et al. 2021) and DINO (Caron et al. 2021), or
the mean of the patch tokens.

Why not ``monai.networks.nets.ViT``: it needs ``einops`` (not a dependency of this project), and
its position embedding is fixed to one input size, whereas DINO's multi-crop feeds the same ViT
smaller local crops; here the learned position embedding is interpolated to the input's token
grid as in DINO's ``interpolate_pos_encoding``. The blocks are ``nn.TransformerEncoderLayer``
in pre-norm form with GELU, which is the ViT block.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class ViTBackbone(nn.Module):
    """ViT with a CLS token and no classification head: pooled token features.

    The defaults are a ViT-Tiny width (192, 3 heads; DeiT, Touvron et al. 2021) at half its
    depth, with 4 px patches so that a 28 px MedMNIST image gives 7x7 = 49 tokens (7^3 = 343
    in 3D); about 2.7M parameters in 2D.

    Args:
        image_size: input side in pixels (every spatial axis) the position embedding is learned
            for. Other sizes divisible by ``patch_size`` work through interpolation of the
            position embedding (DINO local crops, e.g. 12 px).
        patch_size: patch side; must divide ``image_size``.
        in_channels: input channels.
        hidden_size: token width, the ``out_dim``.
        depth: transformer blocks.
        heads: attention heads (must divide ``hidden_size``).
        spatial_dims: 2 or 3.
        mlp_ratio: MLP width as a multiple of ``hidden_size``.
        pool: ``"cls"`` (final CLS token) or ``"mean"`` (mean of the final patch tokens).
        dropout: dropout rate inside the transformer blocks.
    """

    def __init__(
        self,
        image_size: int = 28,
        patch_size: int = 4,
        in_channels: int = 1,
        hidden_size: int = 192,
        depth: int = 6,
        heads: int = 3,
        spatial_dims: int = 2,
        mlp_ratio: float = 4.0,
        pool: str = "cls",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if image_size % patch_size:
            raise ValueError(f"patch_size {patch_size} must divide image_size {image_size}")
        if hidden_size % heads:
            raise ValueError(f"heads {heads} must divide hidden_size {hidden_size}")
        if pool not in ("cls", "mean"):
            raise ValueError(f"pool must be 'cls' or 'mean', got {pool!r}")
        self.spatial_dims = spatial_dims
        self.patch_size = patch_size
        self.pool = pool
        self.out_dim = hidden_size
        self.grid = image_size // patch_size
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.patch_embed = conv(in_channels, hidden_size, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid**spatial_dims, hidden_size))
        layer = nn.TransformerEncoderLayer(
            hidden_size,
            heads,
            dim_feedforward=int(hidden_size * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(hidden_size)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _pos_embed(self, grid: tuple[int, ...]) -> torch.Tensor:
        """Position embedding ``(1, 1 + prod(grid), hidden)`` for a token grid (interpolated if needed)."""
        if all(g == self.grid for g in grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        hidden = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, *([self.grid] * self.spatial_dims), hidden).movedim(-1, 1)
        mode = "bicubic" if self.spatial_dims == 2 else "trilinear"
        patch_pos = F.interpolate(patch_pos, size=grid, mode=mode, align_corners=False)
        return torch.cat([cls_pos, patch_pos.flatten(2).transpose(1, 2)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled features.

        Args:
            x: ``(B, in_channels, *spatial)`` with ``spatial_dims`` axes, each divisible by
                ``patch_size`` (normally ``image_size``).

        Returns:
            ``(B, hidden_size)``.
        """
        if x.ndim != 2 + self.spatial_dims:
            raise ValueError(f"expected a (B, C, {self.spatial_dims} spatial axes) input, got {tuple(x.shape)}")
        if any(s % self.patch_size for s in x.shape[2:]):
            raise ValueError(f"spatial shape {tuple(x.shape[2:])} not divisible by patch_size {self.patch_size}")
        tokens = self.patch_embed(x)  # (B, hidden, *grid)
        grid = tuple(tokens.shape[2:])
        tokens = tokens.flatten(2).transpose(1, 2)  # (B, N, hidden)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        tokens = self.norm(self.blocks(tokens + self._pos_embed(grid)))
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)


#: The factory of the network registry (``medssl.nets.NETWORKS["vit"]``): the class itself, which
#: takes plain keyword arguments, so the argument list is written once.
build_vit = ViTBackbone
