"""The `sft` stage: multitask supervised warm-up of every skill the RL stage needs.

Each optimisation step sums the weighted losses of the tasks scheduled for it: the `every_step` tasks
(generation, the slowest skill to learn, and reasoning, which is cheap and keeps improving with updates),
the other tasks in a fixed rotation so that each of them sees the same number of examples per cycle.
Learning rate: linear warm-up then cosine decay.

Under a multi-process launch (r3.train.distributed) every process trains on its own batches, so a step sees
N * batch_size examples per task; only the main process evaluates and writes. Under DDP it alone keeps the EMA;
under FSDP every process keeps its shard of the EMA, and the main process evaluates and saves the gathered EMA.
"""

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from typing import Literal

from pydantic import Field, PositiveInt, model_validator
from tqdm import tqdm

from r3.config import BaseConfig, Config
from r3.models.interface import HELDOUT_SAMPLING, SamplingConfig, TrainableUnifiedModel
from r3.models.registry import ModelConfig, build_model, load_init
from r3.models.tiny import TinyConfig
from r3.train.data import SFT_TASKS, SftTask, SynthSplit, task_loss
from r3.train.distributed import Learner, fsdp_settings, full_state_dict, make_accelerator, rank_seed_words
from r3.train.ema import ema_update
from r3.train.frame import MetricLogger, TrainResult, finish, history_file, other_process_result
from r3.train.heldout_view import evaluate_heldout, sample_grids, skill_headline


class TaskWeights(Config):
    """Loss weight of each SFT task (0 removes the task)."""

    generate: float = Field(1.0, ge=0)
    """Flow matching on prompt + reasoning -> image."""
    edit: float = Field(1.0, ge=0)
    """Flow matching on source image + instruction -> fixed image."""
    reason: float = Field(1.0, ge=0)
    """Prompt -> layout text."""
    reflect: float = Field(1.0, ge=0)
    """Image + prompt -> stop answer or edit instruction."""
    answer: float = Field(1.0, ge=0)
    """VQA: image + question -> answer."""
    judge: float = Field(1.0, ge=0)
    """ITA: image + prompt -> yes / no."""
    caption: float = Field(1.0, ge=0)
    """Image -> prompt (what the GvU intrinsic reward scores)."""


class SftConfig(Config):
    """The `sft` section of params.yaml."""

    steps: int = Field(1200, ge=1)
    """Optimisation steps."""
    batch_size: int = Field(32, ge=1)
    """Examples per task in a step (but the tasks of `batch_sizes`)."""
    batch_sizes: dict[SftTask, PositiveInt] = {}
    """Examples per step of the tasks named here, instead of `batch_size` (a cheaper step: `{edit: 16}` with generation
    in rotation halves it but costs held-out accuracy, docs/measured.md)."""
    every_step: tuple[SftTask, ...] = ("generate", "reason", "reflect", "edit")
    """Tasks trained at every step. Reasoning (text only, ~1/10 of a generation batch) is here because its
    layout validity keeps rising with updates (docs/experiments.md)."""
    rotating_tasks_per_step: int = Field(1, ge=1)
    """How many of the other tasks (in rotation) each step trains besides `every_step`."""
    init: Literal["base", "scratch"] = "base"
    """A tiny model starts from the shipped pretrained base model (models/base, whose config must equal `model`)
    or from random weights; an hf-composite model always starts from its pretrained parts."""
    lr: float = Field(1e-3, gt=0)
    """Peak AdamW learning rate of every parameter outside the image head (the LM: understanding and text)."""
    head_lr: float | None = Field(1e-3, gt=0)
    """Peak AdamW learning rate of the image head (modules named `image_head`); None = `lr`."""
    warmup_steps: int = Field(50, ge=0)
    """Linear warm-up steps."""
    min_lr_ratio: float = Field(0.05, ge=0, le=1)
    """Final learning rate as a fraction of the peak (cosine decay)."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    ema_decay: float = Field(0.995, ge=0, lt=1)
    """Decay of the exponential moving average of the weights that is evaluated and saved (0 = raw weights)."""
    weights: TaskWeights = TaskWeights()
    """Loss weight per task."""
    model: ModelConfig = TinyConfig()
    """The model: `tiny` (trained from scratch) or `hf-composite` (pretrained parts, r3.models.registry)."""
    sampling: SamplingConfig = HELDOUT_SAMPLING
    """Image sampling used for the held-out generation and editing metrics (ODE)."""
    eval_every: int = Field(600, ge=1)
    """Steps between quick held-out evaluations (logged as curves)."""
    quick_eval_rows: int = Field(128, ge=1)
    """Rows per metric in the quick evaluations, spread over each held-out table so that they cover every tag
    (SynthSplit.spread; the final evaluation uses every held-out row)."""
    log_every: int = Field(10, ge=1)
    """Steps between logged loss values."""

    @property
    def starts_from_base(self) -> bool:
        """Whether training starts from the shipped base model."""
        return self.init == "base" and isinstance(self.model, TinyConfig)

    @model_validator(mode="after")
    def _has_tasks(self) -> "SftConfig":
        if all(getattr(self.weights, t) == 0 for t in SFT_TASKS):
            raise ValueError("every task weight is 0: nothing to train")
        if self.sampling.sde_steps:
            raise ValueError("sampling.sde_steps must be empty: held-out metrics use ODE sampling")
        return self


def lr_factor(step: int, cfg: SftConfig) -> float:
    """Multiplier of the peak learning rate at `step`: linear warm-up, cosine to min_lr_ratio."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def tasks_for_step(step: int, cfg: SftConfig) -> list[str]:
    """The weighted `every_step` tasks, plus `rotating_tasks_per_step` of the other weighted tasks in turn."""
    weighted = [t for t in SFT_TASKS if getattr(cfg.weights, t) > 0]
    tasks = [t for t in weighted if t in cfg.every_step]
    others = [t for t in weighted if t not in cfg.every_step]
    k = min(cfg.rotating_tasks_per_step, len(others))
    return tasks + [others[(step * k + i) % len(others)] for i in range(k)]


def step_losses(model: TrainableUnifiedModel, data: SynthSplit, tasks: list[str], cfg: SftConfig,
                rng: np.random.Generator, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The weighted total loss of one step's tasks, and each task's loss."""
    losses = {t: task_loss(model, data, t, rng, cfg.batch_sizes.get(t, cfg.batch_size), generator) for t in tasks}
    return sum(getattr(cfg.weights, t) * loss for t, loss in losses.items()), losses


def param_groups(model: torch.nn.Module, cfg: SftConfig) -> list[dict]:
    """AdamW groups: the image head at `head_lr`, everything else at `lr`."""
    named = list(model.named_parameters())
    head = [p for n, p in named if n.startswith("image_head.")]
    rest = [p for n, p in named if not n.startswith("image_head.")]
    groups = [{"params": rest, "lr": cfg.lr}, {"params": head, "lr": cfg.head_lr or cfg.lr}]
    return [g for g in groups if g["params"]]


def initial_model(cfg: SftConfig, init_dir: Path | None) -> TrainableUnifiedModel:
    """The model training starts from: the base checkpoint in `init_dir` or a new one (`build_model`)."""
    if not cfg.starts_from_base:
        return build_model(cfg.model)
    if init_dir is None:
        raise ValueError("init: base needs the base model's directory")
    return load_init(init_dir, expected=cfg.model)


def train_sft(base: BaseConfig, cfg: SftConfig, synth_dir: Path, out_dir: Path, init_dir: Path | None = None,
              log: MetricLogger = lambda metrics, step: None, stage: str = "sft") -> TrainResult:
    """Train the model from `init_dir` (or from scratch) on the synth tables; write checkpoint, history, samples,
    metrics. `stage` names the progress bar.

    A non-main process of a multi-process launch trains alongside the main one and returns without evaluating
    or writing anything: its result's headline is empty and its paths do not exist.
    """
    torch.manual_seed(base.seed)
    accelerator = make_accelerator()
    torch.set_num_threads(base.num_threads)
    main, rank = accelerator.is_main_process, accelerator.process_index
    if cfg.model.canvas != base.canvas:
        raise ValueError(f"sft.model.canvas {cfg.model.canvas} != base.canvas {base.canvas}")
    train = SynthSplit.load(synth_dir / "train")
    held = SynthSplit.load(synth_dir / "heldout")
    quick_held = held.spread(cfg.quick_eval_rows)
    model = initial_model(cfg, init_dir).to(accelerator.device)
    sharded = fsdp_settings() is not None
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay > 0 and (main or sharded) else model
    evaluated = copy.deepcopy(model) if sharded and main else ema  # what evaluation and saving read
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    learner = Learner(accelerator, model, optimizer)
    schedule = torch.optim.lr_scheduler.LambdaLR(learner.optimizer, lambda step: lr_factor(step, cfg))
    if sharded and ema is not model:
        learner.shard(ema)  # each process lerps its own shard of the weights into the same shard of the EMA

    def gathered_ema() -> TrainableUnifiedModel:
        """The EMA weights as a whole model on the main process. Under FSDP every process takes part in the gather."""
        if sharded:
            weights = full_state_dict(ema)
            if main:
                evaluated.load_state_dict(weights)
        return evaluated

    rng = np.random.default_rng(rank_seed_words([base.seed, 3], rank))
    generator = torch.Generator().manual_seed(base.seed + rank)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with history_file(out_dir, main, log, []) as record, \
            tqdm(range(cfg.steps), desc=stage, unit="step", disable=not main) as bar:
        for step in bar:
            tasks = tasks_for_step(step, cfg)
            total, losses, grad_norm = learner.step(
                lambda m: step_losses(m, train, tasks, cfg, rng, generator), cfg.grad_clip)
            schedule.step()
            if ema is not model:
                ema_update(ema, model, step, cfg.ema_decay)
            if main and (step % cfg.log_every == 0 or step == cfg.steps - 1):
                record({**{f"loss/{t}": v.item() for t, v in losses.items()}, "loss/total": total.item(),
                        "train/grad_norm": grad_norm, "train/lr": schedule.get_last_lr()[0]}, step)
                bar.set_postfix(loss=f"{total.item():.3f}")
            if (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps:
                averaged = gathered_ema()
                if main:  # the others go on to the next step and wait there for the main process
                    quick = evaluate_heldout(averaged, quick_held, cfg.sampling, cfg.model.canvas, base.seed)
                    record({f"heldout/{k}": v for k, v in skill_headline(quick).items()}, step + 1)
                    sample_grids(averaged, held, cfg.sampling, cfg.model.canvas, base.seed, out_dir / "samples",
                                 f"step{step + 1:05d}")
        averaged = gathered_ema()
        if not main:
            return other_process_result(out_dir)
        train_seconds = time.perf_counter() - started
        return finish(averaged, held, cfg.sampling, base.seed, out_dir, record, cfg.steps,
                      {"train_seconds": train_seconds}, started)
