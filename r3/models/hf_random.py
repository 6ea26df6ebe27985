"""Random-weight Hugging Face models of the classes the `hf-composite` backend loads, built from config dicts
(the parts of configs/models/*.json) with hand-made byte-level tokenizers: nothing is downloaded or read from
the hub. For bench/real_step.py (real architecture sizes) and tests/hf_fixtures.py (tiny checkpoints).

The tokenizers have no learned merges beyond the few given, so prompts tokenize into more tokens than with the
real tokenizers; only their special tokens and the judge's single-token answers match what r3.models.hf_text
expects.
"""

import copy

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
from torch import nn
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

from r3.models.hf_text import VlmText

QWEN_SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                "<|image_pad|>", "<|video_pad|>"]
JUDGE_MERGES = [("y", "e"), ("ye", "s"), ("n", "o")]
"""BPE merges that make the judge's answers single tokens."""
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""Qwen's ChatML layout, image placeholder included."""


# ----- tokenizers -----

def byte_alphabet() -> list[str]:
    return sorted(pre_tokenizers.ByteLevel.alphabet())


def qwen_tokenizer(merges: list[tuple[str, str]] = JUDGE_MERGES) -> Qwen2Tokenizer:
    """Byte-level BPE over `merges` with Qwen's special tokens (no chat template: callers set or ship it)."""
    vocab = {c: i for i, c in enumerate(byte_alphabet())}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tokenizer = Qwen2Tokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIAL})
    return tokenizer


def clip_tokenizer(max_length: int) -> CLIPTokenizer:
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in byte_alphabet():
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def t5_tokenizer() -> T5Tokenizer:
    letters = "abcdefghijklmnopqrstuvwxyz0123456789"
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(c, -3.0) for c in letters] + [("▁" + c, -3.0) for c in letters]
    return T5Tokenizer(vocab=pieces, extra_ids=0)


# ----- random-weight models -----

def qwen_vl(settings: dict, tokenizer: Qwen2Tokenizer, device: torch.device,
            dtype: torch.dtype) -> Qwen2_5_VLForConditionalGeneration:
    """The Qwen2.5-VL of config `settings`, its special-token ids replaced by `tokenizer`'s."""
    token = tokenizer.convert_tokens_to_ids
    settings = copy.deepcopy(settings)
    settings["text_config"] |= {"bos_token_id": None, "eos_token_id": token("<|im_end|>"),
                                "pad_token_id": token("<|endoftext|>")}
    settings |= {"image_token_id": token("<|image_pad|>"), "video_token_id": token("<|video_pad|>"),
                 "vision_start_token_id": token("<|vision_start|>"), "vision_end_token_id": token("<|vision_end|>")}
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(Qwen2_5_VLConfig(**settings), dtype=dtype)
    model.generation_config = GenerationConfig(eos_token_id=[token("<|im_end|>"), token("<|endoftext|>")])
    return model


def build_vlm(part: dict, device: torch.device, dtype: torch.dtype, max_new_tokens: int) -> VlmText:
    """The Qwen2.5-VL of a configs/models vlm `part` with the hand-made tokenizer and the part's image processor."""
    tokenizer = qwen_tokenizer()
    tokenizer.chat_template = CHAT_TEMPLATE
    model = qwen_vl(part["model"], tokenizer, device, dtype)
    return VlmText(model, tokenizer, Qwen2VLImageProcessorPil(**part["image_processor"]), max_new_tokens)


def clip_encoder(settings: dict, projection: bool, device: torch.device, dtype: torch.dtype) -> CLIPTextModel:
    config = CLIPTextConfig(**settings, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    with torch.device(device):
        return (CLIPTextModelWithProjection if projection else CLIPTextModel)._from_config(config, dtype=dtype)


def t5_encoder(settings: dict, device: torch.device, dtype: torch.dtype) -> T5EncoderModel:
    with torch.device(device):
        return T5EncoderModel._from_config(T5Config(**settings, decoder_start_token_id=0), dtype=dtype)


def diffusers_model(cls, settings: dict, device: torch.device, dtype: torch.dtype):
    with torch.device(device):
        return cls.from_config(settings).to(dtype)


def build_pipeline(part: dict, device: torch.device, dtype: torch.dtype, transformer: nn.Module | None = None):
    """The StableDiffusion3Pipeline (generator) or FluxKontextPipeline (editor) of a configs/models `part`.

    A given `transformer` is used instead of building the part's: a caller that builds it first draws its random
    weights before the VAE's, which is how tests/hf_fixtures.py has always seeded its checkpoints.
    """
    clip = clip_tokenizer(part["text_encoder"]["max_position_embeddings"])
    vae = diffusers_model(AutoencoderKL, part["vae"], device, dtype)
    if transformer is None:
        kind = SD3Transformer2DModel if part["kind"] == "generator" else FluxTransformer2DModel
        transformer = diffusers_model(kind, part["transformer"], device, dtype)
    if part["kind"] == "generator":
        return StableDiffusion3Pipeline(
            transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
            text_encoder=clip_encoder(part["text_encoder"], True, device, dtype), tokenizer=clip,
            text_encoder_2=clip_encoder(part["text_encoder_2"], True, device, dtype), tokenizer_2=clip,
            text_encoder_3=t5_encoder(part["text_encoder_3"], device, dtype), tokenizer_3=t5_tokenizer(),
        )
    return FluxKontextPipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae,
        text_encoder=clip_encoder(part["text_encoder"], False, device, dtype), tokenizer=clip,
        text_encoder_2=t5_encoder(part["text_encoder_2"], device, dtype), tokenizer_2=t5_tokenizer(),
    )
