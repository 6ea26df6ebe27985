"""Seconds per step, memory and throughput of the hf-composite backend at real architecture sizes, random weights.

Builds the Qwen2.5-VL + SD3 + FLUX.1-Kontext model of a profile from the configs under configs/models/ (sizes from
the public model cards; weights random, built offline on the device by r3.models.hf_random, nothing read from the
hub), with LoRA as in docs/real-models.md's worked example, and a frozen reference (the KL target of RL) that
shares the policy's frozen text encoders and VAEs. Tokenizers are hand-made byte-level ones with the models' real
vocabulary *sizes*, so prompts tokenize into more tokens than with the real tokenizers (an upper bound) and random
weights write every text to its token limit. Then 1 warm-up + N timed repetitions of:
  * sft: one SFT step (generation, editing and VQA losses, batch `sft_batch` each), r3.train.sft.step_losses;
  * rl_reason, rl_refine: one Tree-RL cycle (group 8, real SDE rollouts, params.yaml's rl section with the
    profile's sampling), r3.rl.train.train_step, split into sampling / reward / training as it reports them;
  * r3_loop: the R3 inference loop on 8 prompts, one reflect-refine round, r3.evals.r3_loop.run_r3.
FLOPs are counted (torch FlopCounterMode) on the warm-up repetition and divided by the timed seconds.

Profile `tiny-64` instead times the project's own stages on the embedded tiny model at canvas 64: synth, sft
(N steps, from scratch), rl (N steps), evaluate (one prompt per tag, one round), at params.yaml's settings otherwise.

    python bench/real_step.py --profile sd35-qwen7b [--steps 3] [--device auto|cpu|cuda] [--dtype bf16|fp32]
Prints one JSON object per line, one per measurement; GPU memory is null on the CPU.
"""

import argparse
import contextlib
import copy
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers.utils import logging as diffusers_logging
from torch.utils.flop_counter import FlopCounterMode
from transformers.utils import logging as transformers_logging

from r3.config import BaseConfig
from r3.data.synth import TABLES, SynthConfig, build_table, heldout_pool
from r3.data.table import Table
from r3.evals.evaluate import EvaluateConfig, run_evaluate
from r3.evals.r3_loop import run_r3
from r3.models.hf_composite import HfCompositeConfig, HfCompositeModel, HfLoraConfig
from r3.models.hf_image import KontextEditor, Sd3Generator
from r3.models.hf_random import build_pipeline, build_vlm
from r3.models.hf_text import VlmText
from r3.models.interface import SamplingConfig
from r3.params import read_params, section
from r3.rewards.base import build_reward
from r3.rewards.verifier import VerifierReward
from r3.rl.rollout import RolloutBuffer
from r3.rl.checkpoint import TrainerState, make_optimizer
from r3.rl.config import RlConfig
from r3.rl.train import train_rl, train_step
from r3.train.data import SynthSplit
from r3.train.distributed import Learner, make_accelerator
from r3.train.sft import SftConfig, param_groups, step_losses, train_sft

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "models"
DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
SFT_TASKS = ("generate", "edit", "answer")
"""The SFT step's tasks: one generation, one editing and one text (VQA, with an image) batch."""
GROUP = 8
"""Rollouts per RL group, and prompts of the R3 loop."""


@dataclass(frozen=True)
class Profile:
    """The model parts and run settings of one --profile."""

    parts: dict[str, str]
    """Config file (under configs/models) of the vlm, the generator and the editor."""
    resolution: int
    """Image side in pixels (the synth canvas too)."""
    sft_batch: int
    """Examples per SFT task in the SFT step."""
    lora_rank: int
    """LoRA rank (alpha = rank) on the VLM's and both transformers' attention projections."""
    sft_lr: float
    """AdamW learning rate of the SFT step."""
    rl: dict[str, object]
    """Overrides of params.yaml's rl section besides the group layout (rollout sampling, lr, text length)."""
    r3_sampling: SamplingConfig
    """Image ODE and reasoning of the R3 loop."""
    max_sequence_length: int
    """T5 tokens of the SD3 and Kontext prompt encodings."""


PROFILES = {
    "sd35-qwen7b": Profile(  # docs/real-models.md's worked example
        parts={"vlm": "qwen2.5-vl-7b-instruct.json", "generator": "sd3.5-medium.json",
               "editor": "flux.1-kontext-dev.json"},
        resolution=512, sft_batch=4, lora_rank=16, sft_lr=1e-4,
        rl={"sample_steps": 10, "timestep_shift": 3.0, "cfg_scale": 4.5, "lr": 1e-5},
        r3_sampling=SamplingConfig(steps=28, timestep_shift=3.0, cfg_scale=4.5, temperature=0.0, max_new_tokens=48),
        max_sequence_length=256,
    ),
    "tiny-real": Profile(
        parts={"vlm": "tiny-real/vlm.json", "generator": "tiny-real/generator.json",
               "editor": "tiny-real/editor.json"},
        resolution=32, sft_batch=2, lora_rank=4, sft_lr=1e-4,
        rl={"sample_steps": 3, "timestep_shift": 3.0, "cfg_scale": 4.5, "lr": 1e-5, "max_new_tokens": 6,
            "replay_batch": 2},
        r3_sampling=SamplingConfig(steps=3, timestep_shift=3.0, cfg_scale=4.5, temperature=0.0, max_new_tokens=6),
        max_sequence_length=16,
    ),
}


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def read_part(name: str) -> dict:
    return json.loads((CONFIGS / name).read_text())


# ----- random-weight models from the config files (r3.models.hf_random) -----

def build_models(profile: Profile, config: HfCompositeConfig, device: torch.device,
                 dtype: torch.dtype) -> tuple[HfCompositeModel, HfCompositeModel]:
    """The LoRA policy and its frozen reference: a copy of the VLM and both transformers (what training moves),
    the text encoders and VAEs shared (frozen in both)."""
    vlm = build_vlm(read_part(profile.parts["vlm"]), device, dtype, config.max_new_tokens)
    sd3 = build_pipeline(read_part(profile.parts["generator"]), device, dtype)
    kontext = build_pipeline(read_part(profile.parts["editor"]), device, dtype)
    reference_vlm = VlmText(copy.deepcopy(vlm.model), vlm.tokenizer, vlm.image_processor, config.max_new_tokens)
    reference_sd3 = type(sd3)(**{**sd3.components, "transformer": copy.deepcopy(sd3.transformer)})
    reference_kontext = type(kontext)(**{**kontext.components, "transformer": copy.deepcopy(kontext.transformer)})
    n, guidance = config.max_sequence_length, config.editor_guidance
    reference = HfCompositeModel(config.model_copy(update={"lora": None}), reference_vlm,
                                 Sd3Generator(reference_sd3, n), KontextEditor(reference_kontext, n, guidance))
    policy = HfCompositeModel(config, vlm, Sd3Generator(sd3, n), KontextEditor(kontext, n, guidance))
    return policy, reference.eval().requires_grad_(False)


# ----- measuring -----

@dataclass
class Tally:
    """What a model sampled (text tokens, images) and how many target tokens it scored for a loss."""

    tokens: int = 0
    images: int = 0
    target_tokens: int = 0


@contextlib.contextmanager
def tally(model: torch.nn.Module) -> Iterator[Tally]:
    """Count what `model`'s sampling methods and `encode_targets` return inside the block (instance attributes
    shadow the methods while it runs)."""
    counts = Tally()

    def counting(method: Callable, add: Callable[[object], None]) -> Callable:
        def counted(*args, **kwargs):
            out = method(*args, **kwargs)
            add(out)
            return out
        return counted

    def add_tokens(sample) -> None:
        counts.tokens += int(sample.mask.sum())

    def add_images(sample) -> None:
        counts.images += sample.images.shape[0]

    def add_targets(ids: torch.Tensor) -> None:
        counts.target_tokens += int((ids != model.pad_id).sum())

    adders = {"reason": add_tokens, "reflect": add_tokens, "answer": add_tokens, "generate": add_images,
              "edit": add_images, "encode_targets": add_targets}
    for name, add in adders.items():
        setattr(model, name, counting(getattr(model, name), add))
    try:
        yield counts
    finally:
        for name in adders:
            delattr(model, name)


@dataclass(frozen=True)
class Call:
    """One timed call of a measured part."""

    seconds: float
    parts: dict[str, float]
    """The part's own split of its time (sampling_s, reward_s, training_s), as far as it reports one."""
    counts: Tally
    flops: int | None
    """FLOPs counted by torch's FlopCounterMode (warm-up calls only: counting slows a call down)."""


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def call(fn: Callable[[], dict[str, float]], model: torch.nn.Module, device: torch.device,
         count_flops: bool = False) -> Call:
    with tally(model) as counts:
        sync(device)
        started = time.perf_counter()
        if count_flops:
            with FlopCounterMode(display=False) as counter:
                parts = fn()
        else:
            parts = fn()
        sync(device)
        seconds = time.perf_counter() - started
    return Call(seconds, parts, counts, counter.get_total_flops() if count_flops else None)


def peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def per_second(count: int, seconds: float) -> float | None:
    return round(count / seconds, 3) if count and seconds > 0 else None


def mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4)


def summary(warm_up: Call, timed: list[Call], trains: bool) -> dict:
    """Seconds per call and per part, throughput, and achieved FLOP/s (warm-up FLOPs over the timed seconds).

    A training part (sft) counts image examples and target text tokens per second of the step; a sampling part
    (rl, r3) counts sampled images and text tokens per second of its sampling."""
    seconds = sum(c.seconds for c in timed)
    split = {key: mean([c.parts[key] for c in timed]) if key in warm_up.parts else None
             for key in ("sampling_s", "reward_s", "training_s")}
    sampling = sum(c.parts["sampling_s"] for c in timed) if "sampling_s" in warm_up.parts else seconds
    images = sum(c.parts.get("trained_images", 0) if trains else c.counts.images for c in timed)
    tokens = sum(c.counts.target_tokens if trains else c.counts.tokens for c in timed)
    return {"steps": len(timed), "seconds_per_step": mean([c.seconds for c in timed]), **split,
            "images_per_s": per_second(images, seconds if trains else sampling),
            "tokens_per_s": per_second(tokens, seconds if trains else sampling),
            "flop_per_step": warm_up.flops,
            "tflop_per_s": round(warm_up.flops * len(timed) / seconds / 1e12, 4) if warm_up.flops else None}


# ----- the real-size profiles -----

def write_synth(base: BaseConfig, out_dir: Path) -> None:
    """Small train and held-out splits of every synth table at base.canvas."""
    synth = SynthConfig(train_per_tag=4, heldout_per_tag=1, train_pairs=64, heldout_pairs_per_tag=2,
                        candidates_per_tag=50)
    pool = heldout_pool(base, synth)
    for split in ("train", "heldout"):
        for table in TABLES:
            build_table(table, split, base, synth, pool, out_dir / split / f"{table}.parquet")


def rl_config(profile: Profile, params: str) -> RlConfig:
    """params.yaml's rl section, one group of GROUP rollouts per step, and the profile's overrides."""
    cfg = section(read_params(params), "rl", RlConfig, params)
    return RlConfig.model_validate({**cfg.model_dump(), "group_size": GROUP, "prompts_per_step": 1,
                                    "nodes_per_step": 1, **profile.rl})


def run_real(name: str, steps: int, device: torch.device, dtype: torch.dtype, params: str) -> None:
    profile = PROFILES[name]
    common = {"profile": name, "device": device.type, "dtype": "bf16" if dtype == torch.bfloat16 else "fp32",
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
              "lora_rank": profile.lora_rank, "resolution": profile.resolution}
    rl_cfg = rl_config(profile, params)
    config = HfCompositeConfig(
        vlm=str(CONFIGS / profile.parts["vlm"]), generator=str(CONFIGS / profile.parts["generator"]),
        editor=str(CONFIGS / profile.parts["editor"]), dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
        device=str(device), resolution=profile.resolution, max_new_tokens=rl_cfg.max_new_tokens,
        max_sequence_length=profile.max_sequence_length,
        lora=HfLoraConfig(rank=profile.lora_rank, alpha=float(profile.lora_rank)),
    )
    base = BaseConfig(canvas=profile.resolution, num_threads=torch.get_num_threads())
    with tempfile.TemporaryDirectory() as tmp:
        write_synth(base, Path(tmp))
        prompts, train = Table.load(Path(tmp) / "train" / "prompts.parquet"), SynthSplit.load(Path(tmp) / "train")

    torch.manual_seed(base.seed)
    reset_peak(device)
    started = time.perf_counter()
    policy, reference = build_models(profile, config, device, dtype)
    sync(device)
    unique = {id(p): p for model in (policy, reference) for p in model.parameters()}
    emit({**common, "part": "build", "seconds": round(time.perf_counter() - started, 2),
          "parameters": sum(p.numel() for p in unique.values()),
          "trainable_parameters": sum(p.numel() for p in policy.parameters() if p.requires_grad),
          "peak_gpu_memory_gib": peak_gib(device)})

    def measure(parts: tuple[str, ...], fns: tuple[Callable[[], dict[str, float]], ...], trains: bool) -> None:
        """1 warm-up round and `steps` timed rounds of `fns` (called in turn: RL's reason then refine step), one
        line per part; a part that runs out of GPU memory gets a line with the error instead."""
        reset_peak(device)
        try:
            warm_up = [call(fn, policy, device, count_flops=True) for fn in fns]
            rounds = [[call(fn, policy, device) for fn in fns] for _ in range(steps)]
        except torch.OutOfMemoryError as error:
            torch.cuda.empty_cache()
            for part in parts:
                emit({**common, "part": part, "error": f"out of memory: {str(error).splitlines()[0]}",
                      "peak_gpu_memory_gib": peak_gib(device)})
            return
        for i, part in enumerate(parts):
            emit({**common, "part": part, **summary(warm_up[i], [r[i] for r in rounds], trains),
                  "peak_gpu_memory_gib": peak_gib(device)})

    # SFT: generation, editing and VQA losses in one step, through the stage's step function and learner
    sft_cfg = SftConfig(batch_size=profile.sft_batch, lr=profile.sft_lr, model=config)
    optimizer = torch.optim.AdamW(param_groups(policy, sft_cfg), betas=(0.9, 0.95), weight_decay=sft_cfg.weight_decay)
    sft_learner = Learner(make_accelerator(), policy, optimizer)
    rng, generator = np.random.default_rng(base.seed), torch.Generator().manual_seed(base.seed)

    def sft_step() -> dict[str, float]:
        policy.train()
        started = time.perf_counter()
        sft_learner.step(lambda m: step_losses(m, train, list(SFT_TASKS), sft_cfg, rng, generator), sft_cfg.grad_clip)
        sync(device)
        return {"training_s": time.perf_counter() - started, "trained_images": 2 * sft_cfg.batch_size}

    measure(("sft",), (sft_step,), trains=True)

    # RL: a reason step then a refine step (it grows children from the reason step's nodes), params.yaml's loss
    state = TrainerState(0, policy, make_optimizer(policy, rl_cfg), np.random.default_rng(base.seed),
                         torch.Generator().manual_seed(base.seed), RolloutBuffer(rl_cfg.buffer_capacity), [])
    rl_learner, reward = Learner(make_accelerator(), policy, state.optimizer), build_reward(rl_cfg.reward)

    def rl_step() -> dict[str, float]:
        metrics = train_step(state, reference, reward, prompts, rl_cfg, rl_learner, train)
        state.step += 1
        return {"sampling_s": metrics["time/sample_s"], "reward_s": metrics["time/reward_s"],
                "training_s": metrics["time/train_s"]}

    measure(("rl_reason", "rl_refine"), (rl_step, rl_step), trains=False)

    # the R3 loop on GROUP prompts, one reflect-refine round (random weights never answer the stop answer)
    index = np.linspace(0, len(prompts) - 1, GROUP).round().astype(int)
    records, texts, strict = prompts.records(index), prompts.texts("prompt", index), VerifierReward("strict")

    def r3_loop() -> dict[str, float]:
        policy.eval()
        run_r3(policy, records, texts, profile.r3_sampling, max_rounds=1, seed=base.seed,
               score_fn=lambda images, rows: strict(images, rows), canvas=profile.resolution, batch_size=GROUP)
        return {}

    measure(("r3_loop",), (r3_loop,), trains=False)


# ----- tiny-64: the project's stages on the embedded model -----

def run_tiny64(steps: int, device: torch.device, params: str) -> None:
    """Seconds of each stage (synth, sft from scratch, rl, evaluate) of a short pipeline at canvas 64, params.yaml's
    settings otherwise. sft and rl place the model through accelerate (the GPU when there is one); evaluate builds its
    models on the CPU."""
    raw = read_params(params)
    base = BaseConfig(canvas=64, num_threads=torch.get_num_threads())
    sft_cfg = section(raw, "sft", SftConfig, params)
    model = sft_cfg.model.model_copy(update={"canvas": 64})
    sft_cfg = SftConfig.model_validate({**sft_cfg.model_dump(), "model": model.model_dump(), "steps": steps,
                                        "init": "scratch", "warmup_steps": 1, "eval_every": steps,
                                        "quick_eval_rows": 8})
    rl_cfg = RlConfig.model_validate({**section(raw, "rl", RlConfig, params).model_dump(), "steps": steps,
                                      "eval_every": steps, "eval_rows": 8, "validation_rows": 8,
                                      "checkpoint_every": steps})
    eval_cfg = EvaluateConfig.model_validate({**section(raw, "evaluate", EvaluateConfig, params).model_dump(),
                                              "prompts": None, "per_tag": 1, "max_rounds": 1})
    common = {"profile": "tiny-64", "canvas": 64,
              "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)

        def stage(name: str, where: str, fn: Callable[[], object],
                  per_step: Callable[[object], float] | None = None) -> object:
            reset_peak(device)
            started = time.perf_counter()
            result = fn()
            sync(device)
            emit({**common, "part": name, "device": where, "seconds": round(time.perf_counter() - started, 2),
                  "steps": steps if per_step else None,
                  "seconds_per_step": round(per_step(result), 4) if per_step else None,
                  "peak_gpu_memory_gib": peak_gib(device)})
            return result

        def rl_step_seconds(result) -> float:
            rows = [json.loads(line) for line in result.history.read_text().splitlines()]
            return float(np.mean([row["time/step_s"] for row in rows if "time/step_s" in row]))

        stage("synth", "cpu", lambda: write_synth(base, root / "synth"))
        sft = stage("sft", device.type, lambda: train_sft(base, sft_cfg, root / "synth", root / "sft"),
                    lambda result: result.metrics["train_seconds"] / steps)  # no held-out check inside the loop
        rl = stage("rl", device.type, lambda: train_rl(base, rl_cfg, sft.checkpoint, root / "synth", root / "rl"),
                   rl_step_seconds)
        stage("evaluate", "cpu", lambda: run_evaluate(base, eval_cfg, {"sft": sft.checkpoint, "rl": rl.checkpoint},
                                                      root / "synth", root / "evaluate", model))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True, choices=[*PROFILES, "tiny-64"])
    parser.add_argument("--steps", type=int, default=3, help="timed repetitions after one warm-up (tiny-64: steps "
                        "of sft and of rl)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default=None, help="default: bf16 on cuda, fp32 on cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--params", default="params.yaml", help="rl (and for tiny-64 sft, evaluate) settings")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers_logging.set_verbosity_error()  # the pipelines warn about every prompt longer than CLIP's 77 tokens
    diffusers_logging.set_verbosity_error()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    if device.type == "cpu":
        os.environ["ACCELERATE_USE_CPU"] = "true"  # the stages' accelerator would otherwise take a GPU
    if args.profile == "tiny-64":
        run_tiny64(args.steps, device, args.params)
        return
    dtype = DTYPES[args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    run_real(args.profile, args.steps, device, dtype, args.params)


if __name__ == "__main__":
    main()
