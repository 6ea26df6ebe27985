"""bench/real_step.py: the tiny-real profile runs end to end on the CPU (one JSON line per measurement, the keys a
GPU run fills), and every configs/models file builds the classes and sizes it names (on the meta device: no
memory, no weights)."""

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
import real_step  # noqa: E402

MEASURED = {"steps", "seconds_per_step", "sampling_s", "reward_s", "training_s", "images_per_s", "tokens_per_s",
            "flop_per_step", "tflop_per_s", "peak_gpu_memory_gib"}


@pytest.fixture(scope="module")
def tiny_real_lines() -> list[dict]:
    threads, out = torch.get_num_threads(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        patch.delenv("ACCELERATE_USE_CPU", raising=False)  # main sets it for --device cpu; restored afterwards
        real_step.main(["--profile", "tiny-real", "--steps", "1", "--device", "cpu"])
    torch.set_num_threads(threads)
    return [json.loads(line) for line in out.getvalue().splitlines()]


def test_tiny_real_measures_every_part_on_the_cpu(tiny_real_lines: list[dict]) -> None:
    lines = {line["part"]: line for line in tiny_real_lines}
    assert list(lines) == ["build", "sft", "rl_reason", "rl_refine", "r3_loop"]
    assert all(line["device"] == "cpu" and line["dtype"] == "fp32" and line["gpu"] is None for line in lines.values())
    build = lines.pop("build")
    assert 0 < build["trainable_parameters"] < build["parameters"]  # LoRA only
    for part, line in lines.items():
        assert MEASURED <= set(line) and "error" not in line, part
        assert line["steps"] == 1 and line["seconds_per_step"] > 0, part
        assert line["peak_gpu_memory_gib"] is None, part
        assert line["images_per_s"] > 0 and line["tokens_per_s"] > 0, part
        assert line["flop_per_step"] > 0 and line["tflop_per_s"] > 0, part
    for part in ("rl_reason", "rl_refine"):
        line = lines[part]
        assert 0 < line["sampling_s"] + line["reward_s"] + line["training_s"] <= line["seconds_per_step"], part
    assert lines["sft"]["sampling_s"] is None and 0 < lines["sft"]["training_s"] <= lines["sft"]["seconds_per_step"]
    assert lines["r3_loop"]["training_s"] is None


def meta_size(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_qwen_config_builds_qwen2_5_vl_7b() -> None:
    part = real_step.read_part("qwen2.5-vl-7b-instruct.json")
    vlm = real_step.build_vlm(part, torch.device("meta"), torch.bfloat16, max_new_tokens=8)
    text, vision = vlm.model.config.text_config, vlm.model.config.vision_config
    assert type(vlm.model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.num_key_value_heads,
            text.intermediate_size, text.vocab_size) == (3584, 28, 28, 4, 18944, 152064)
    assert (vision.depth, vision.hidden_size, vision.out_hidden_size, vision.patch_size) == (32, 1280, 3584, 14)
    assert meta_size(vlm.model) == 8_292_166_656  # the hub's "8.29B params"


def test_sd35_medium_config_builds_the_mmdit_x_vae_and_three_encoders() -> None:
    pipeline = real_step.build_pipeline(real_step.read_part("sd3.5-medium.json"), torch.device("meta"), torch.bfloat16)
    transformer = pipeline.transformer.config
    assert type(pipeline).__name__ == "StableDiffusion3Pipeline"
    assert (transformer.num_layers, transformer.num_attention_heads * transformer.attention_head_dim,
            transformer.joint_attention_dim, transformer.qk_norm) == (24, 1536, 4096, "rms_norm")
    assert list(transformer.dual_attention_layers) == list(range(13))
    # 2.24B parameters + the 384 x 384 x 1536 position-embedding buffer = the model card's 2.5B
    assert meta_size(pipeline.transformer) == 2_243_171_520
    assert pipeline.vae.config.latent_channels == 16 and pipeline.vae_scale_factor == 8
    sizes = [meta_size(e) for e in (pipeline.text_encoder, pipeline.text_encoder_2, pipeline.text_encoder_3)]
    assert sizes == [123_650_304, 694_659_840, 4_762_310_656]  # CLIP-L, OpenCLIP bigG, T5 v1.1 XXL encoder


def test_flux_kontext_config_builds_the_12b_transformer() -> None:
    pipeline = real_step.build_pipeline(real_step.read_part("flux.1-kontext-dev.json"), torch.device("meta"),
                                        torch.bfloat16)
    transformer = pipeline.transformer.config
    assert type(pipeline).__name__ == "FluxKontextPipeline"
    assert (transformer.num_layers, transformer.num_single_layers, transformer.guidance_embeds) == (19, 38, True)
    assert 11.5e9 < meta_size(pipeline.transformer) < 12.5e9  # the model card's "12 billion parameter"
    assert pipeline.vae.config.latent_channels == 16 and pipeline.vae.config.scaling_factor == 0.3611


def test_every_profile_names_existing_parts_of_the_right_kind() -> None:
    for profile in real_step.PROFILES.values():
        for kind, name in profile.parts.items():
            assert real_step.read_part(name)["kind"] == kind
