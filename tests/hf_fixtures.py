"""Tiny random-weight Hugging Face checkpoints of the real classes the `hf-composite` backend loads, built and
saved locally (no network): a Qwen2.5-VL model with a byte-level BPE tokenizer, chat template and image
processor; a Stable Diffusion 3 pipeline; a FLUX.1-Kontext pipeline. Tokenizers are written from hand-made
vocabularies. About 270k parameters in all, 32x32 images, 16x16x4 latents.
"""

import json
import os

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing below may download

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxKontextPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from tokenizers import pre_tokenizers
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    GenerationConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    T5Config,
    T5EncoderModel,
    T5Tokenizer,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

RESOLUTION = 32
QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
WORD_MERGES = [("y", "e"), ("ye", "s"), ("n", "o"), ("Ġ", "a"), ("r", "e"), ("Ġ", "re"), ("Ġre", "d")]
"""A few merges so that the judge words (and some prompt words) are single tokens."""
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's ChatML layout, image placeholder included."""


@dataclass(frozen=True)
class HfParts:
    vlm: Path
    generator: Path
    editor: Path


def byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def save_vlm(path: Path) -> None:
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    for a, b in WORD_MERGES:
        vocab[a + b] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=WORD_MERGES)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    token = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [1, 1, 2]},
            bos_token_id=None, eos_token_id=token("<|im_end|>"), pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=4, spatial_merge_size=2,
            temporal_patch_size=2, out_hidden_size=32, fullatt_block_indexes=[0], window_size=16,
        ),
        image_token_id=token("<|image_pad|>"), video_token_id=token("<|video_pad|>"),
        vision_start_token_id=token("<|vision_start|>"), vision_end_token_id=token("<|vision_end|>"),
    )
    model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = GenerationConfig(eos_token_id=[token("<|im_end|>"), tokenizer.pad_token_id])
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    # as Qwen-VL repos ship it: for the processor, beside a tokenizer that may have none
    (path / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}))
    pixels = RESOLUTION * RESOLUTION
    Qwen2VLImageProcessorPil(patch_size=4, temporal_patch_size=2, merge_size=2, min_pixels=pixels,
                             max_pixels=pixels).save_pretrained(path)


def clip_tokenizer() -> CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in byte_alphabet():
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16)


def t5_tokenizer() -> T5Tokenizer:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in letters] + [("▁" + c, -3.0) for c in letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=64)


def clip_encoder(vocab: int, projection: bool) -> CLIPTextModel:
    config = CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                            num_attention_heads=2, max_position_embeddings=16, projection_dim=16,
                            bos_token_id=0, eos_token_id=1, pad_token_id=1)
    return CLIPTextModelWithProjection(config) if projection else CLIPTextModel(config)


def t5_encoder(vocab: int) -> T5EncoderModel:
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=32, d_kv=8, d_ff=32, num_layers=1, num_heads=4,
                                   relative_attention_num_buckets=8, decoder_start_token_id=0))


def vae(scaling: float, shift: float) -> AutoencoderKL:
    """Two blocks: 2x downscale, 4 latent channels."""
    return AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                         up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8), layers_per_block=1,
                         latent_channels=4, norm_num_groups=4, sample_size=RESOLUTION, scaling_factor=scaling,
                         shift_factor=shift)


def save_generator(path: Path) -> None:
    clip, t5 = clip_tokenizer(), t5_tokenizer()
    transformer = SD3Transformer2DModel(
        sample_size=RESOLUTION // 2, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=4, joint_attention_dim=32, caption_projection_dim=32, pooled_projection_dim=32,
    )
    StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae(1.5305, 0.0609),
        text_encoder=clip_encoder(len(clip), True), tokenizer=clip,
        text_encoder_2=clip_encoder(len(clip), True), tokenizer_2=clip,
        text_encoder_3=t5_encoder(len(t5)), tokenizer_3=t5,
    ).save_pretrained(path, safe_serialization=True)


def save_editor(path: Path) -> None:
    clip, t5 = clip_tokenizer(), t5_tokenizer()
    transformer = FluxTransformer2DModel(
        patch_size=1, in_channels=16, num_layers=1, num_single_layers=1, attention_head_dim=16, num_attention_heads=2,
        joint_attention_dim=32, pooled_projection_dim=16, guidance_embeds=True, axes_dims_rope=(4, 4, 8),
    )
    FluxKontextPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae(0.3611, 0.1159),
        text_encoder=clip_encoder(len(clip), False), tokenizer=clip,
        text_encoder_2=t5_encoder(len(t5)), tokenizer_2=t5, transformer=transformer,
    ).save_pretrained(path, safe_serialization=True)


def build_parts(root: Path) -> HfParts:
    torch.manual_seed(0)
    parts = HfParts(root / "vlm", root / "generator", root / "editor")
    save_vlm(parts.vlm)
    save_generator(parts.generator)
    save_editor(parts.editor)
    return parts


@pytest.fixture(scope="session")
def hf_parts(tmp_path_factory: pytest.TempPathFactory) -> HfParts:
    return build_parts(tmp_path_factory.mktemp("hf_parts"))
