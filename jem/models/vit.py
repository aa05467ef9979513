"""``vit_tiny``: a Vision Transformer for small images (Dosovitskiy et al. 2021, arXiv:2010.11929,
with the DeiT-Ti sizes of Touvron et al. 2021, arXiv:2012.12877: width 192, 12 blocks, 3 heads,
MLP ratio 4).

Adapted for 8x8 to 96x96 inputs:
* small patches: ``patch_size`` 0 means automatic, 2 px up to 16 px images (8x8 digits -> a 4x4
  token grid), 4 px up to 64 px (28x28 -> 7x7, 32x32 -> 8x8), 8 px up to 128 px, else 16 px;
* no class token: the feature is the mean of the final-normalised patch tokens (global average
  pooling, as in MAE fine-tuning and BEiT linear probing). Masked-prediction methods such as
  data2vec never train a class token, and mean pooling also works when tokens are dropped;
* learned absolute position embeddings (the grids are tiny, no interpolation is needed);
* ``depth`` (``model.depth``) may be lowered from DeiT-Ti's 12 blocks for CPU budgets.

Blocks are pre-norm: ``x + Attn(LN(x))`` then ``x + MLP(LN(x))``. ``forward_tokens`` exposes
every block's output (data2vec's teacher targets) and accepts a token mask, either dropping the
masked tokens or replacing them with a given mask embedding (see :mod:`jem.models.masking`).
In training mode with ``mask_ratio > 0`` the plain ``forward`` drops a random ``mask_ratio`` of
the tokens (the masking augmentation); evaluation mode never masks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from jem.models.masking import drop_tokens, random_token_mask, replace_tokens

DIM, DEPTH, HEADS, MLP_RATIO = 192, 12, 3, 4


def auto_patch_size(image_size: int) -> int:
    """Patch size for ``patch_size: 0``: 2 px (<= 16 px images), 4 (<= 64), 8 (<= 128), else 16."""
    for limit, patch in ((16, 2), (64, 4), (128, 8)):
        if image_size <= limit:
            return patch
    return 16


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, d_h)
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(d_h)) v
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim, eps=1e-6), nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(), nn.Linear(mlp_ratio * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """Patch embedding + pre-norm transformer blocks + final LayerNorm + mean pooling -> (B, dim)."""

    def __init__(self, in_channels: int, image_size: int, patch_size: int = 0, dim: int = DIM, depth: int = DEPTH,
                 heads: int = HEADS, mlp_ratio: int = MLP_RATIO) -> None:
        super().__init__()
        p = patch_size or auto_patch_size(image_size)
        if image_size % p:
            raise ValueError(f"vit_tiny: image size {image_size} is not divisible by the patch size {p}; "
                             "set model.patch_size to a divisor")
        if dim % heads:
            raise ValueError(f"vit_tiny: width {dim} is not divisible by {heads} heads")
        self.patch_size, self.grid = p, image_size // p
        self.num_tokens = self.grid ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, kernel_size=p, stride=p)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.num_tokens, dim))
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.out_dim = dim
        self.mask_ratio = 0.0  # masking augmentation in training mode (jem.models.masking.set_mask_ratio)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        w = self.patch_embed.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))  # as a linear layer on flattened patches (MAE)
        # and, like every other linear layer here, a zero bias. PyTorch's default conv bias is
        # U(+-1/sqrt(fan_in)): +-0.036 for MAE's 16x16x3 patches, but +-0.5 for a 2x2x1 digits patch and
        # +-0.25 for 4x4x1 Fashion-MNIST patches, where it swamps the patch content: every token then
        # points the same way and the random-init ViT's kNN on digits fell to 0.37 (0.52 with a zero
        # bias, 12 blocks; std of normalised features 0.005 vs 0.026, healthy 0.072)
        assert self.patch_embed.bias is not None  # built with bias=True
        nn.init.zeros_(self.patch_embed.bias)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> patch tokens plus position embeddings (B, T, dim), row-major grid order."""
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                       mask_token: torch.Tensor | None = None, return_layers: bool = False
                       ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Tokens after the final norm and (optionally) every block's raw output.

        ``mask`` (B, T) bool, True = masked: with ``mask_token`` (dim,) the masked tokens are
        replaced by it (sequence length kept), otherwise they are dropped (B, V, dim).
        Returns (final tokens, [block 1 output, ..., block L output] or []).
        """
        h = self.embed(x)  # (B, T, D)
        if mask is not None:
            h = replace_tokens(h, mask, mask_token) if mask_token is not None else drop_tokens(h, mask)
        layers: list[torch.Tensor] = []
        for blk in self.blocks:
            h = blk(h)
            if return_layers:
                layers.append(h)
        return self.norm(h), layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, dim)
        mask = None
        if self.training and self.mask_ratio > 0:
            mask = random_token_mask(x.shape[0], self.num_tokens, self.mask_ratio, device=x.device)
        tokens, _ = self.forward_tokens(x, mask)
        return tokens.mean(dim=1)
