"""The tiny model's image head: a latent-space `diffusers` SD3 transformer with padding-aware joint attention.

`MaskedJointAttnProcessor` is diffusers' `JointAttnProcessor2_0` (diffusers 0.42) with one change: it passes
`attention_mask` to scaled_dot_product_attention, so padded conditioning tokens are never attended and an
image does not depend on how long the other prompts of its batch are. (The QK-norm branches are dropped:
the tiny head does not use them.)
"""

import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn


class MaskedJointAttnProcessor:
    """Joint (image + context) attention; attention_mask (B, 1, 1, N_img + N_ctx) bool, True = attend."""

    def __call__(
        self,
        attn: Attention,
        hidden_states: Tensor,
        encoder_hidden_states: Tensor,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        batch, num_image = hidden_states.shape[:2]

        def heads(image_proj: nn.Module, context_proj: nn.Module) -> Tensor:  # (B, heads, N_img + N_ctx, d)
            x = torch.cat([image_proj(hidden_states), context_proj(encoder_hidden_states)], dim=1)  # (B, N, D)
            return x.view(batch, x.shape[1], attn.heads, -1).transpose(1, 2)

        query, key, value = (
            heads(attn.to_q, attn.add_q_proj), heads(attn.to_k, attn.add_k_proj), heads(attn.to_v, attn.add_v_proj)
        )
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask)  # (B, heads, N, d)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * query.shape[-1])  # (B, N_img + N_ctx, D)
        image_out, context_out = out[:, :num_image], out[:, num_image:]
        if not attn.context_pre_only:
            context_out = attn.to_add_out(context_out)
        image_out = attn.to_out[1](attn.to_out[0](image_out))
        return image_out, context_out


def build_image_head(
    channels: int, side: int, width: int, layers: int, heads: int, condition_dim: int
) -> SD3Transformer2DModel:
    """SD3 transformer at patch 1 on a side x side latent of 2 * channels (noisy latent + edit source or zeros)
    predicting a `channels` velocity."""
    if width % heads:
        raise ValueError(f"image head width {width} is not divisible by its {heads} heads")
    head = SD3Transformer2DModel(
        sample_size=side,
        patch_size=1,
        in_channels=2 * channels,
        out_channels=channels,
        num_layers=layers,
        attention_head_dim=width // heads,
        num_attention_heads=heads,
        joint_attention_dim=condition_dim,
        caption_projection_dim=width,
        pooled_projection_dim=condition_dim,
        pos_embed_max_size=side,
    )
    head.set_attn_processor(MaskedJointAttnProcessor())
    return head
