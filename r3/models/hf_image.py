"""The image half of `hf-composite`: a Stable Diffusion 3 pipeline generates and a FLUX.1-Kontext pipeline edits.

Both are used as velocity functions on VAE latents for r3.models.sampling (never through the pipelines'
own `__call__`), so the Flow-GRPO SDE steps, their log-probs and classifier-free guidance are the ones
docs/method.md specifies. Both models are flow-matching transformers with our convention: x_t = (1 - t) x0 + t noise,
the velocity is noise - x0, and t is the scheduler's sigma (SD3 reads the timestep on a 0..1000 scale, Flux on
0..1). Prompts are encoded by each pipeline's own `encode_prompt`; text encoders and VAEs stay frozen.

Latents are kept unpacked, (B, C, h, w) with h = H / vae_scale. Kontext packs them into 2x2 patch tokens and
appends the packed source latents as extra image tokens whose position ids carry 1 in their first axis (the
Kontext convention); its velocity is read off the target tokens only.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class FlowCondition:
    """Encoded prompts (and, for editing, source latents) an image is generated from."""

    embeds: Tensor
    """(B, L, D) text embeddings of the prompts."""
    pooled: Tensor
    """(B, P) pooled text embeddings."""
    sources: Tensor | None
    """(B, C, h, w) scaled latents of the images to edit; None for generation."""
    text_ids: Tensor | None
    """(L, 3) Flux position ids of the text tokens; None for SD3."""


def vae_scale(vae: nn.Module) -> int:
    """Pixels per latent cell along each side."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def encode_images(vae: nn.Module, images: Tensor) -> Tensor:
    """(B, 3, H, W) in [0, 1] -> (B, C, h, w) latents, scaled as the pipelines do (the posterior mode, no noise)."""
    latents = vae.encode((images * 2 - 1).to(vae.dtype)).latent_dist.mode()  # (B, C, h, w)
    shift = vae.config.shift_factor or 0.0
    return ((latents.float() - shift) * vae.config.scaling_factor).float()


def decode_latents(vae: nn.Module, latents: Tensor) -> Tensor:
    """(B, C, h, w) scaled latents -> (B, 3, H, W) images in [0, 1]."""
    shift = vae.config.shift_factor or 0.0
    pixels = vae.decode((latents / vae.config.scaling_factor + shift).to(vae.dtype)).sample  # (B, 3, H, W)
    return (pixels.float().clamp(-1, 1) + 1) / 2


def pack_latents(latents: Tensor) -> Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): Flux's 2x2 patch tokens in raster order."""
    b, c, h, w = latents.shape
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)  # (B, h/2, w/2, C, 2, 2)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack_latents(tokens: Tensor, h: int, w: int) -> Tensor:
    """(B, h/2 * w/2, 4C) -> (B, C, h, w), the inverse of pack_latents."""
    b, _, d = tokens.shape
    x = tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)  # (B, C, h/2, 2, w/2, 2)
    return x.reshape(b, d // 4, h, w)


def token_ids(h: int, w: int, image_index: int, device: torch.device) -> Tensor:
    """(h/2 * w/2, 3) Flux position ids (image index, row, column) of packed latent tokens."""
    rows = torch.arange(h // 2, device=device)[:, None].expand(h // 2, w // 2)  # (h/2, w/2)
    cols = torch.arange(w // 2, device=device)[None, :].expand(h // 2, w // 2)  # (h/2, w/2)
    ids = torch.stack([torch.full_like(rows, image_index), rows, cols], dim=-1)  # (h/2, w/2, 3)
    return ids.reshape(-1, 3).float()


class Sd3Generator(nn.Module):
    """Text-to-image with an SD3 pipeline's transformer, VAE and text encoders."""

    def __init__(self, pipeline, max_sequence_length: int) -> None:
        super().__init__()
        self.pipeline = pipeline  # keeps encode_prompt and save_pretrained; its modules are registered below
        self.transformer, self.vae = pipeline.transformer, pipeline.vae
        self.text_encoders = nn.ModuleList(
            [e for e in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3) if e is not None]
        )
        self.max_sequence_length = max_sequence_length

    def check_resolution(self, resolution: int) -> None:
        step = vae_scale(self.vae) * self.transformer.config.patch_size
        if resolution % step:
            raise ValueError(f"hf-composite: resolution {resolution} is not divisible by {step} (SD3 VAE x patch)")

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        side = resolution // vae_scale(self.vae)
        return self.vae.config.latent_channels, side, side

    @torch.no_grad()
    def encode(self, prompts: Sequence[str], device: torch.device) -> FlowCondition:
        embeds, _, pooled, _ = self.pipeline.encode_prompt(
            prompt=list(prompts), prompt_2=None, prompt_3=None, device=device, num_images_per_prompt=1,
            do_classifier_free_guidance=False, max_sequence_length=self.max_sequence_length,
        )
        return FlowCondition(embeds, pooled, None, None)

    def velocity(self, condition: FlowCondition, x_t: Tensor, t: Tensor) -> Tensor:
        """(B, C, h, w) velocity at latents x_t and times t (B,)."""
        dtype = self.transformer.dtype
        return self.transformer(
            hidden_states=x_t.to(dtype), timestep=(t * 1000).to(dtype),
            encoder_hidden_states=condition.embeds.to(dtype), pooled_projections=condition.pooled.to(dtype),
            return_dict=False,
        )[0].float()


class KontextEditor(nn.Module):
    """Instruction editing with a FLUX.1-Kontext pipeline's transformer, VAE and text encoders."""

    def __init__(self, pipeline, max_sequence_length: int, guidance: float) -> None:
        super().__init__()
        self.pipeline = pipeline
        self.transformer, self.vae = pipeline.transformer, pipeline.vae
        self.text_encoders = nn.ModuleList([pipeline.text_encoder, pipeline.text_encoder_2])
        self.max_sequence_length, self.guidance = max_sequence_length, guidance

    def check_resolution(self, resolution: int) -> None:
        step = vae_scale(self.vae) * 2
        if resolution % step:
            raise ValueError(f"hf-composite: resolution {resolution} is not divisible by {step} (Flux VAE x 2x2 pack)")

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        side = resolution // vae_scale(self.vae)
        return self.vae.config.latent_channels, side, side

    @torch.no_grad()
    def encode(self, instructions: Sequence[str], sources: Tensor, device: torch.device) -> FlowCondition:
        """Instructions through Kontext's text encoders, source images (B, 3, H, W) in [0, 1] through its VAE."""
        embeds, pooled, text_ids = self.pipeline.encode_prompt(
            prompt=list(instructions), prompt_2=None, device=device, num_images_per_prompt=1,
            max_sequence_length=self.max_sequence_length,
        )
        return FlowCondition(embeds, pooled, encode_images(self.vae, sources.to(device)), text_ids)

    def velocity(self, condition: FlowCondition, x_t: Tensor, t: Tensor) -> Tensor:
        """(B, C, h, w) velocity at latents x_t and times t (B,); the sources ride along as extra image tokens."""
        b, _, h, w = x_t.shape
        dtype, device = self.transformer.dtype, x_t.device
        target = pack_latents(x_t)  # (B, N, 4C)
        tokens = torch.cat([target, pack_latents(condition.sources)], dim=1)  # (B, 2N, 4C)
        ids = torch.cat([token_ids(h, w, 0, device), token_ids(h, w, 1, device)])  # (2N, 3)
        guidance = torch.full((b,), self.guidance, device=device) if self.transformer.config.guidance_embeds else None
        out = self.transformer(
            hidden_states=tokens.to(dtype), timestep=t.to(dtype), guidance=guidance,
            pooled_projections=condition.pooled.to(dtype), encoder_hidden_states=condition.embeds.to(dtype),
            txt_ids=condition.text_ids, img_ids=ids, return_dict=False,
        )[0]  # (B, 2N, 4C)
        return unpack_latents(out[:, : target.shape[1]].float(), h, w)
