"""Tiny random-weight Hugging Face checkpoints of the real classes the `hf-composite` backend loads, built by
r3.models.hf_random and saved locally (no network): a Qwen2.5-VL model with a byte-level BPE tokenizer, chat
template and image processor; a Stable Diffusion 3 pipeline; a FLUX.1-Kontext pipeline. About 270k parameters in
all, 32x32 images, 16x16x4 latents.
"""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing below may download

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from diffusers import FluxTransformer2DModel, SD3Transformer2DModel
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from r3.models.hf_random import (
    CHAT_TEMPLATE,
    JUDGE_MERGES,
    build_pipeline,
    clip_tokenizer,
    diffusers_model,
    qwen_tokenizer,
    qwen_vl,
    t5_tokenizer,
)

RESOLUTION = 32
CPU = torch.device("cpu")
WORD_MERGES = [*JUDGE_MERGES, ("Ġ", "a"), ("r", "e"), ("Ġ", "re"), ("Ġre", "d")]
"""A few merges so that the judge words (and some prompt words) are single tokens."""
CLIP = dict(vocab_size=len(clip_tokenizer(16)), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, projection_dim=16)
T5 = dict(vocab_size=len(t5_tokenizer()), d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
          relative_attention_num_buckets=8)


@dataclass(frozen=True)
class HfParts:
    vlm: Path
    generator: Path
    editor: Path


def vae(scaling: float, shift: float) -> dict:
    """Two blocks: 2x downscale, 4 latent channels."""
    return dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                latent_channels=4, norm_num_groups=4, sample_size=RESOLUTION, scaling_factor=scaling,
                shift_factor=shift)


GENERATOR = {
    "kind": "generator",
    "transformer": dict(sample_size=RESOLUTION // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=1,
                        attention_head_dim=8, num_attention_heads=4, joint_attention_dim=32,
                        caption_projection_dim=32, pooled_projection_dim=32),
    "vae": vae(1.5305, 0.0609), "text_encoder": CLIP, "text_encoder_2": CLIP, "text_encoder_3": T5,
}
EDITOR = {
    "kind": "editor",
    "transformer": dict(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16,
                        num_attention_heads=2, joint_attention_dim=32, pooled_projection_dim=16,
                        guidance_embeds=True, axes_dims_rope=(4, 4, 8)),
    "vae": vae(0.3611, 0.1159), "text_encoder": CLIP, "text_encoder_2": T5,
}


def save_vlm(path: Path) -> None:
    tokenizer = qwen_tokenizer(WORD_MERGES)
    model = qwen_vl(dict(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16,
        ),
    ), tokenizer, CPU, torch.float32)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # as Qwen-VL repos ship it: for the processor, beside a tokenizer that may have none
    (path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    pixels = RESOLUTION * RESOLUTION
    Qwen2VLImageProcessorPil(patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=pixels,
                             max_pixels=pixels).save_pretrained(path)


def save_pipeline(part: dict, path: Path) -> None:
    # the transformer is drawn before the VAE and the encoders, as these fixtures always were (same weights)
    kind = SD3Transformer2DModel if part["kind"] == "generator" else FluxTransformer2DModel
    transformer = diffusers_model(kind, part["transformer"], CPU, torch.float32)
    build_pipeline(part, CPU, torch.float32, transformer).save_pretrained(path, safe_serialization=True)


def build_parts(root: Path) -> HfParts:
    torch.manual_seed(0)
    parts = HfParts(root / "vlm", root / "generator", root / "editor")
    save_vlm(parts.vlm)
    save_pipeline(GENERATOR, parts.generator)
    save_pipeline(EDITOR, parts.editor)
    return parts


@pytest.fixture(scope="session")
def hf_parts(tmp_path_factory: pytest.TempPathFactory) -> HfParts:
    return build_parts(tmp_path_factory.mktemp("hf_parts"))
