"""The `hf-composite` backend on tiny random Qwen2.5-VL / SD3 / FLUX.1-Kontext checkpoints saved by the test
(hf_fixtures): configs, loading errors, every interface method, SDE ratios under CFG, one SFT and one RL step
end to end, save/load round trips, LoRA, and the sft -> rl -> evaluate stages on an hf-composite model."""

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from hf_fixtures import RESOLUTION, HfParts, hf_parts  # noqa: F401 (hf_parts is a fixture)
from pydantic import ValidationError

from r3.config import BaseConfig
from r3.data.synth import TABLES, SynthConfig, build_table, heldout_pool
from r3.data.tiif_suite import write_suite
from r3.data.table import Table
from r3.evals.evaluate import EvaluateConfig, run_evaluate
from r3.models.hf_composite import HfCompositeConfig, HfCompositeModel, HfLoraConfig
from r3.models.interface import ImageCondition, SamplingConfig, TextQuery, UnifiedModel
from r3.models.losses import ImageBatch, TextBatch, flow_matching_loss, text_loss
from r3.models.registry import MODEL_CONFIG, build_model, load_checkpoint, read_model_config
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.rewards import RewardConfig, build_reward
from r3.rl.rollout import RolloutBuffer
from r3.rl.checkpoint import TrainerState, make_optimizer
from r3.rl.config import RlConfig
from r3.rl.train import train_rl, train_step
from r3.train.sft import SftConfig, train_sft

PROMPTS = ["a red circle", "two blue squares"]
FAST = SamplingConfig(steps=3, cfg_scale=2.5, max_new_tokens=5)


def hf_config(parts: HfParts, **overrides) -> HfCompositeConfig:
    settings = dict(vlm=str(parts.vlm), generator=str(parts.generator), editor=str(parts.editor),
                    resolution=RESOLUTION, device="cpu", max_sequence_length=16)
    return HfCompositeConfig(**{**settings, **overrides})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are tiny: one thread is ~100x faster than two when other processes share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model(hf_parts: HfParts) -> HfCompositeModel:  # noqa: F811
    return HfCompositeModel.from_config(hf_config(hf_parts)).eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.rand(2, 3, RESOLUTION, RESOLUTION, generator=torch.Generator().manual_seed(0))


def gen(seed: int = 7) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> set[str]:
    return {name for name, p in module.named_parameters() if not torch.equal(before[name], p.detach())}


# ----- configs and loading -----

def test_model_config_union_defaults_to_tiny_and_rejects_unknown_keys(hf_parts: HfParts) -> None:  # noqa: F811
    assert isinstance(MODEL_CONFIG.validate_python({"canvas": 32}), TinyConfig)  # params written before backends
    hf = MODEL_CONFIG.validate_python(hf_config(hf_parts).model_dump())
    assert isinstance(hf, HfCompositeConfig) and hf.canvas == RESOLUTION
    assert SftConfig(model=hf.model_dump()).model == hf
    with pytest.raises(ValidationError):
        MODEL_CONFIG.validate_python({"backend": "hf-composite", "vlm": "x", "generator": "y", "lm_dim": 8})
    with pytest.raises(ValidationError):
        HfCompositeConfig(vlm="x", generator="y", device="gpu")


def test_old_tiny_checkpoints_without_backend_still_load(tmp_path: Path) -> None:
    config = TinyConfig(canvas=32, patch=8, lm_dim=16, lm_layers=1, lm_heads=2, lm_mlp=16, head_width=16,
                        head_layers=1, head_heads=2)
    build_model(config).save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    del saved["backend"]
    (tmp_path / "config.json").write_text(json.dumps(saved))
    assert read_model_config(tmp_path) == config
    assert isinstance(load_checkpoint(tmp_path, expected=config), TinyUnifiedModel)


def test_loading_failures_are_clear_one_line_errors(hf_parts: HfParts, model: HfCompositeModel,  # noqa: F811
                                                    tmp_path: Path) -> None:
    model.save_pretrained(tmp_path / "ckpt")
    cases = {
        "different HfCompositeConfig": lambda: load_checkpoint(tmp_path / "ckpt", hf_config(hf_parts, resolution=64)),
        "is a hf-composite model, expected tiny": lambda: load_checkpoint(tmp_path / "ckpt", TinyConfig()),
        "only pickled weights": lambda: build_model(hf_config(hf_parts, vlm=str(bin_only(hf_parts.vlm, tmp_path)))),
        "cannot load vlm": lambda: build_model(hf_config(hf_parts, vlm=str(tmp_path / "missing"))),
        "not divisible by 4": lambda: build_model(hf_config(hf_parts, resolution=34)),
    }
    for message, load in cases.items():
        with pytest.raises(ValueError, match=message) as error:
            load()
        assert "\n" not in str(error.value), message


def bin_only(source: Path, tmp_path: Path) -> Path:
    """A copy of the VLM directory whose weights are a pickle (.bin) instead of safetensors."""
    target = tmp_path / "bin_only"
    shutil.copytree(source, target)
    (target / "model.safetensors").rename(target / "pytorch_model.bin")
    return target


# ----- the interface -----

def test_implements_every_method_of_the_interface() -> None:
    methods = {name: m for name, m in vars(UnifiedModel).items() if callable(m) and not name.startswith("_")}
    for name, method in methods.items():
        ours = inspect.signature(getattr(HfCompositeModel, name)).parameters
        assert list(ours) == list(inspect.signature(method).parameters), name


def test_text_tasks_return_batched_shapes_and_probabilities(model: HfCompositeModel, images: torch.Tensor) -> None:
    texts = (model.reason(PROMPTS, FAST, gen()), model.reflect(images, PROMPTS, FAST, gen()),
             model.answer(images, ["how many circles?"] * 2, 4))
    for sample in texts:
        assert len(sample.texts) == 2 and all(isinstance(t, str) for t in sample.texts)
        assert sample.token_ids.shape == sample.logprobs.shape == sample.mask.shape
        assert sample.token_ids.shape[0] == 2 and 1 <= sample.token_ids.shape[1] <= 5
        assert torch.all(sample.logprobs <= 0) and torch.all(sample.logprobs[~sample.mask] == 0)
        assert torch.all(sample.mask[:, 0])
    judged = model.judge(images, PROMPTS)
    assert judged.shape == (2,) and torch.all((judged > 0) & (judged < 1))
    score = model.prompt_likelihood(images, PROMPTS)
    assert score.shape == (2,) and torch.all((score > 0) & (score <= 1))
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, 32, 32\)"):
        model.judge(torch.rand(2, 3, 16, 16), PROMPTS)


def test_stored_text_log_probs_recompute_and_do_not_depend_on_the_batch(model: HfCompositeModel,
                                                                         images: torch.Tensor) -> None:
    for sample in (model.reason(PROMPTS, FAST, gen()), model.reflect(images, PROMPTS, FAST, gen())):
        recomputed = model.text_logprobs(sample.query, sample.token_ids, sample.temperature)
        assert torch.allclose(recomputed, sample.logprobs, atol=1e-5)
    query = TextQuery("answer", ["how many?", "what colour is the shape on the left?"], images)
    targets = model.encode_targets(["red", "two blue"])  # (2, T): different lengths, right-padded
    both = model.text_logprobs(query, targets)
    alone = model.text_logprobs(TextQuery("answer", query.contexts[1:], images[1:]), targets[1:])
    assert torch.allclose(both[1:], alone, atol=1e-5)


def test_images_are_in_range_and_sde_ratios_are_one_under_cfg(model: HfCompositeModel, images: torch.Tensor) -> None:
    sampling = FAST.model_copy(update={"sde_steps": (0, 2)})
    generated = model.generate(PROMPTS, ["red circle left", "blue squares right"], sampling, generator=gen())
    edited = model.edit(images, ["make the circle blue", "remove one square"], sampling, generator=gen())
    for out in (generated, edited):
        assert out.images.shape == (2, 3, RESOLUTION, RESOLUTION)
        assert out.images.min() >= 0 and out.images.max() <= 1
        steps = out.transitions.steps
        assert steps.x_t.shape == (2, 2, 4, RESOLUTION // 2, RESOLUTION // 2)  # latents of the 2x VAE
        ratio = torch.exp(model.transition_distribution(out.transitions).logprob - steps.logprob)
        assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-5)


def test_pixel_noise_becomes_shared_latent_noise(model: HfCompositeModel) -> None:
    noise = torch.randn(1, 3, RESOLUTION, RESOLUTION).repeat(2, 1, 1, 1)  # one group: the same start twice
    out = model.generate(["a red circle"] * 2, None, FAST, noise=noise)
    assert torch.equal(out.images[0], out.images[1])
    again = model.generate(["a red circle"], None, FAST, noise=noise[:1].flatten(1)[:, :4 * 16 * 16].view(1, 4, 16, 16))
    assert torch.allclose(again.images[0], out.images[0], atol=1e-6)
    with pytest.raises(ValueError, match="noise must have shape"):
        model.generate(["a red circle"], None, FAST, noise=torch.randn(1, 3, 8, 8))


# ----- training -----

def sft_losses(model: HfCompositeModel, images: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three kinds of SFT loss on fixed batches (fixed noise, times and condition dropout)."""
    text = TextBatch(TextQuery("answer", ["how many circles?", "what colour?"], images), ["two", "red"])
    generation = ImageBatch(ImageCondition(PROMPTS, ["red circle left", "blue squares right"]), images)
    editing = ImageBatch(ImageCondition(["make it blue", "remove one"], sources=images), images.flip(-1))
    return {"text": text_loss(model, text), "generate": flow_matching_loss(model, generation, gen(1)),
            "edit": flow_matching_loss(model, editing, gen(2))}


def sft_step(model: HfCompositeModel, images: torch.Tensor, lr: float) -> tuple[dict, dict]:
    model.train()
    before = sft_losses(model, images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95))
    sum(before.values()).backward()
    optimizer.step()
    after = sft_losses(model, images)
    return {k: v.item() for k, v in before.items()}, {k: v.item() for k, v in after.items()}


def test_one_sft_step_trains_the_vlm_and_both_transformers_only(hf_parts: HfParts,  # noqa: F811
                                                                 images: torch.Tensor) -> None:
    model = HfCompositeModel.from_config(hf_config(hf_parts))
    frozen = [model.sd3.vae, model.sd3.text_encoders, model.kontext.vae, model.kontext.text_encoders]
    frozen_before = [params(m) for m in frozen]
    trained_before = {name: params(m) for name, m in model.trained_modules().items()}
    before, after = sft_step(model, images, lr=1e-3)
    assert all(np.isfinite(v) for v in [*before.values(), *after.values()])
    assert all(after[k] < before[k] for k in before), (before, after)
    for name, module in model.trained_modules().items():
        share = len(changed(trained_before[name], module)) / len(trained_before[name])
        assert share > 0.5, (name, share)
    assert not any(changed(b, m) for b, m in zip(frozen_before, frozen, strict=True))


def test_lora_trains_only_adapters_and_saves_only_them(hf_parts: HfParts, images: torch.Tensor,  # noqa: F811
                                                       tmp_path: Path) -> None:
    config = hf_config(hf_parts, lora=HfLoraConfig(rank=2, alpha=4.0))
    model = build_model(config)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert {n.split(".")[0] for n in trainable} == {"vlm", "sd3", "kontext"}
    before = params(model)
    sft_step(model, images, lr=1e-2)
    moved = changed(before, model)
    assert moved and moved <= trainable
    assert all(name in moved for name in trainable if "lora_B" in name)  # B starts at 0, so only B moves at step 1
    model.eval().save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "config.json", "editor_lora.safetensors", "generator_lora.safetensors", "vlm_lora.safetensors"]
    loaded = load_checkpoint(tmp_path, expected=config).eval()
    assert_same_outputs(model, loaded, images)


def assert_same_outputs(a: HfCompositeModel, b: HfCompositeModel, images: torch.Tensor) -> None:
    assert a.reason(PROMPTS, FAST, gen()).texts == b.reason(PROMPTS, FAST, gen()).texts
    assert torch.equal(a.judge(images, PROMPTS), b.judge(images, PROMPTS))
    assert torch.equal(a.generate(PROMPTS, None, FAST, generator=gen()).images,
                       b.generate(PROMPTS, None, FAST, generator=gen()).images)
    assert torch.equal(a.edit(images, PROMPTS, FAST, generator=gen()).images,
                       b.edit(images, PROMPTS, FAST, generator=gen()).images)


def test_save_load_round_trip_gives_identical_outputs(model: HfCompositeModel, images: torch.Tensor,
                                                      tmp_path: Path) -> None:
    model.save_pretrained(tmp_path)
    assert read_model_config(tmp_path) == model.config
    assert all(any((tmp_path / part).rglob("*.safetensors")) for part in ("vlm", "generator", "editor"))
    assert not any(tmp_path.rglob("*.bin"))
    assert_same_outputs(model, load_checkpoint(tmp_path, expected=model.config).eval(), images)


def test_rl_steps_with_real_rollouts_train_generator_then_editor(hf_parts: HfParts,  # noqa: F811
                                                                 tmp_path: Path) -> None:
    model = HfCompositeModel.from_config(hf_config(hf_parts))
    reference = HfCompositeModel.from_config(hf_config(hf_parts)).eval().requires_grad_(False)
    records = [{"tag": "single_object", "include": [{"class": "circle", "count": 1, "color": "red"}],
                "prompt": "a photo of a red circle"},
               {"tag": "counting", "include": [{"class": "square", "count": 2}], "prompt": "a photo of two squares"}]
    prompts = Table(pl.DataFrame({"prompt": [r["prompt"] for r in records],
                                  "metadata": [json.dumps(r) for r in records]}), {})
    # the intrinsic reward (the reference VLM's prompt likelihood) differs between any two images, so every
    # group has non-zero image advantages even for random weights
    cfg = RlConfig(group_size=2, prompts_per_step=1, nodes_per_step=1, sample_steps=2, cfg_scale=2.0,
                   max_new_tokens=4, lr=1e-3, reward=RewardConfig(name="intrinsic"), replay_weight=0.0,
                   drop_equal_groups=False)
    state = TrainerState(0, model, make_optimizer(model, cfg), np.random.default_rng(0), gen(0), RolloutBuffer(8), [])
    reward = build_reward(cfg.reward)
    for part, kind in (("generator", "reason"), ("editor", "refine")):
        before = {name: params(m) for name, m in model.trained_modules().items()}
        stats = train_step(state, reference, reward, prompts, cfg)
        state.step += 1
        assert np.isfinite(stats["losses/total"]) and stats["rl/sde_index"] >= 0
        assert len(state.buffer) == 2  # the reason step's nodes; the refine step draws from them
        moved = {name: changed(before[name], m) for name, m in model.trained_modules().items()}
        assert moved[part], kind
        idle = "editor" if kind == "reason" else "generator"
        assert not moved[idle], kind  # a step samples and trains only its own flow model


# ----- the stages -----

def test_sft_rl_and_evaluate_stages_run_on_a_lora_model(hf_parts: HfParts, tmp_path: Path) -> None:  # noqa: F811
    base = BaseConfig(seed=0, num_threads=1)
    synth = SynthConfig(train_per_tag=1, heldout_per_tag=1, train_pairs=4, heldout_pairs_per_tag=2,
                        candidates_per_tag=10)
    pool = heldout_pool(base, synth)
    for split in ("train", "heldout"):
        for table in TABLES:
            build_table(table, split, base, synth, pool, tmp_path / "synth" / split / f"{table}.parquet")
    write_suite(base, {"train": 1, "heldout": 1}, tmp_path / "synth" / "tiif")  # evaluate's TIIF suites
    config = hf_config(hf_parts, lora=HfLoraConfig(rank=2))
    two_steps = SamplingConfig(steps=2, cfg_scale=2.0, max_new_tokens=6)
    sft = train_sft(base, SftConfig(steps=2, batch_size=2, rotating_tasks_per_step=6, warmup_steps=1, eval_every=5,
                                    quick_eval_rows=2, model=config, sampling=two_steps), tmp_path / "synth",
                    tmp_path / "sft")
    assert sorted(p.name for p in sft.checkpoint.iterdir()) == [
        "config.json", "editor_lora.safetensors", "generator_lora.safetensors", "vlm_lora.safetensors"]
    rl = train_rl(base, RlConfig(steps=2, group_size=2, prompts_per_step=1, nodes_per_step=1, sample_steps=2,
                                 cfg_scale=2.0, max_new_tokens=4, eval_every=5, eval_rows=2, validation_rows=2,
                                 eval_sampling=two_steps,
                                 reward=RewardConfig(name="intrinsic"), replay_weight=0.0), sft.checkpoint,
                  tmp_path / "synth", tmp_path / "rl")
    assert read_model_config(rl.checkpoint) == config and np.isfinite(rl.metrics["headline"]["ita"])
    evaluation = run_evaluate(base, EvaluateConfig(per_tag=1, max_rounds=1, sampling=two_steps),
                              {"base": None, "sft": sft.checkpoint, "rl": rl.checkpoint}, tmp_path / "synth",
                              tmp_path / "evaluate", config)
    assert {"base/ita", "sft/ita", "rl/ita"} <= set(evaluation.metrics["headline"])
