"""Self-attention for open_clip's transformer blocks without nn.MultiheadAttention's layout copies.

open_clip's `ResidualAttentionBlock` calls `nn.MultiheadAttention(x, x, x, need_weights=False)`.
In training mode that goes through `F.multi_head_attention_forward`, which works sequence-first
on a transposed view of the batch-first input: it makes the packed q/k/v projection contiguous
again after splitting it (a copy of a batch x tokens x 3*width tensor) and copies the attention
output back into sequence-first order before the output projection. Those copies happen forward
and backward in every block; under `torch.compile` they stay as copies around the matmul and
attention kernels.

`FusedSelfAttention` computes the same function from the same parameters batch-first: one packed
projection viewed as (3, batch, heads, tokens, head_dim), `scaled_dot_product_attention` on those
views, and the output projection. It is a subclass swapped onto the existing module
(`use_fused_attention`), so parameter names, the state dict and checkpoints are unchanged and a
saved model loads in plain open_clip. Anything it does not cover (cross-attention, a key padding
mask, attention weights asked for, sequence-first modules, bias_k/bias_v) is handed to
nn.MultiheadAttention's own forward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FusedSelfAttention(nn.MultiheadAttention):
    """nn.MultiheadAttention whose batch-first self-attention avoids the sequence-first copies."""

    def forward(self, query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                average_attn_weights=True, is_causal=False):
        if (need_weights or key_padding_mask is not None or is_causal or query.is_nested or query.dim() != 3
                or not (query is key and key is value) or not _mask_fits(attn_mask, query, self.num_heads)):
            return super().forward(query, key, value, key_padding_mask=key_padding_mask, need_weights=need_weights,
                                   attn_mask=attn_mask, average_attn_weights=average_attn_weights,
                                   is_causal=is_causal)
        batch, tokens, width = query.shape
        heads = self.num_heads
        qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(batch, tokens, 3, heads, width // heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=_sdpa_mask(attn_mask, batch, heads),
                                             dropout_p=self.dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(batch, tokens, width)
        return F.linear(out, self.out_proj.weight, self.out_proj.bias), None


def _mask_fits(attn_mask: torch.Tensor | None, query: torch.Tensor, heads: int) -> bool:
    """A mask nn.MultiheadAttention accepts for this query: (tokens, tokens) or (batch*heads, tokens,
    tokens). Anything else goes to its own forward, which raises the error it would."""
    if attn_mask is None:
        return True
    batch, tokens = query.shape[0], query.shape[1]
    return tuple(attn_mask.shape) in ((tokens, tokens), (batch * heads, tokens, tokens))


def _sdpa_mask(attn_mask: torch.Tensor | None, batch: int, heads: int) -> torch.Tensor | None:
    """nn.MultiheadAttention's mask in scaled_dot_product_attention's convention.

    Both add a float mask to the scores. A boolean mask means the opposite in the two: True is
    "may not attend" for nn.MultiheadAttention and "takes part" for SDPA. A 3-D mask is per
    (batch x heads).
    """
    if attn_mask is None:
        return None
    if attn_mask.dtype == torch.bool:
        attn_mask = ~attn_mask
    if attn_mask.dim() == 3:
        attn_mask = attn_mask.view(batch, heads, *attn_mask.shape[-2:])
    return attn_mask


def _eligible(module: nn.Module) -> bool:
    return (type(module) is nn.MultiheadAttention and module.batch_first and module._qkv_same_embed_dim
            and module.bias_k is None and module.bias_v is None and not module.add_zero_attn)


def use_fused_attention(model: nn.Module) -> int:
    """Swap every eligible nn.MultiheadAttention in `model` to FusedSelfAttention; how many were."""
    swapped = 0
    for module in model.modules():
        if _eligible(module):
            module.__class__ = FusedSelfAttention
            swapped += 1
    return swapped
