"""The `rl` stage: Tree-RL (DESIGN.md section 3) from the SFT checkpoint, with exact resume.

Steps alternate in a fixed cycle (`reason_steps` reason steps, then `refine_steps` reflect-refine
steps). Each step samples its groups with the current policy (r3.rl.rollout), then takes `epochs`
AdamW steps on text GRPO + w_image * image Flow-GRPO loss, against the behaviour log-probs stored
at sampling time and a frozen copy of the SFT model as the KL reference.

How this departs from the textbook (besides the batching notes in r3.rl.rollout):
  * the learning rate is constant: RL starts from a warmed-up policy and the PPO clip bounds each
    update, so there is no warm-up or decay to resume;
  * the reward defaults to the verifier's *partial* credit: the strict 0/1 verifier gives an SFT
    model (strict accuracy ~0.1) mostly all-zero groups, i.e. zero advantages and no signal. Strict
    held-out accuracy is still logged every `eval_every` steps beside the training reward: it is the
    reward-hacking monitor, whatever reward trains the policy.

Resume: every `checkpoint_every` steps the whole trainer state (weights, optimizer, numpy / torch /
python RNG states, rollout buffer, step, history) is written to out_dir/resume/step-NNNNNN, built in a
temporary directory and renamed into place, so a killed run never leaves a half-written checkpoint.
A new run with the same configuration and SFT checkpoint continues from the latest one and ends with
the same weights as an uninterrupted run (same machine and thread count, float round-off aside).

Several processes (r3.train.distributed, DDP or FSDP): each samples its own groups (a step trains on N times
`prompts_per_step` / `nodes_per_step` groups) into its own rollout buffer, from its own random streams
(rank 0 keeps a one-process run's seeds), and gradients are averaged. Only the main process evaluates,
writes and logs; the training stats it logs are its own share. A resume checkpoint holds every process's
random states and buffer (gathered to the main process, which writes them) and belongs to one process
count; every process reads it from out_dir, so out_dir must be one directory they all see. Under FSDP the
policy and its optimizer state are sharded; each process samples its rollouts from an unsharded copy of the
policy that every process refreshes from the shards after each optimizer step, the frozen reference stays
whole, and checkpoints, evaluation and the final model hold the whole (gathered) weights and optimizer state.
"""

import copy
import hashlib
import json
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from accelerate.utils import broadcast_object_list, gather_object
from pydantic import Field, model_validator
from torch import Tensor
from tqdm import tqdm

from r3.config import BaseConfig, Config
from r3.data.table import Table
from r3.evals import heldout
from r3.models.interface import SamplingConfig, TrainableUnifiedModel
from r3.models.registry import load_checkpoint
from r3.rewards.base import Reward, RewardConfig, build_reward
from r3.rl.buffer import Node, RolloutBuffer
from r3.rl.losses import image_policy_loss, text_policy_loss, total_loss
from r3.rl.rollout import RolloutSettings, Rollouts, reason_rollouts, refine_rollouts
from r3.rl.schedule import sde_step_index, step_kind
from r3.train.data import SftTask, SynthSplit, task_loss
from r3.train.distributed import Learner, make_accelerator, rank_seed_words
from r3.train.ema import ema_update
from r3.train.heldout_view import evaluate_heldout, sample_grids, skill_headline

MetricLogger = Callable[[dict[str, float], int], None]
log_ = logging.getLogger(__name__)

RESUME_DIR = "resume"
STEP_PREFIX = "step-"


class RlConfig(Config):
    """The `rl` section of params.yaml."""

    steps: int = Field(200, ge=1)
    """Training steps (reason and refine steps together)."""
    group_size: int = Field(8, ge=2)
    """G: samples per group (one prompt or node, one noise, one SDE step index)."""
    prompts_per_step: int = Field(2, ge=1)
    """Groups (train prompts) per reason step."""
    nodes_per_step: int = Field(2, ge=1)
    """Groups (buffer nodes) per reflect-refine step."""
    reason_steps: int = Field(1, ge=1)
    """Reason steps per cycle."""
    refine_steps: int = Field(1, ge=0)
    """Reflect-refine steps per cycle; 0 is the reason-only ablation."""
    p_perfect: float = Field(0.15, ge=0, le=1)
    """Probability that a refine step draws a node with r == 1 (else one with r < 1)."""
    buffer_capacity: int = Field(256, ge=1)
    """Rollout buffer size (FIFO: the oldest reason-step nodes leave first)."""
    epochs: int = Field(1, ge=1)
    """Optimisation steps on each step's rollouts (1: the PPO ratio is 1 at the only update)."""
    clip: float = Field(0.2, gt=0)
    """PPO clip range of both the text and the image ratio."""
    kl: bool = True
    """KL penalties to the frozen SFT reference; False sets both betas to 0 and skips the reference passes."""
    beta_text: float = Field(0.001, ge=0)
    """Weight of the per-token k3 KL of the text loss (DESIGN.md: 0.001; params.yaml uses 0.05, under which
    sampled layouts stay valid: validity 0.70 -> 0.14 at 0.001, -> 0.64 at 0.05 over 400 steps)."""
    beta_image: float = Field(0.001, ge=0)
    """Weight of the (mu - mu_ref)^2 / std^2 penalty of the image loss."""
    w_text: float = Field(1.0, ge=0)
    """Weight of the text loss in the total loss."""
    w_image: float = Field(2.0, ge=0)
    """Weight of the image loss in the total loss."""
    normalize_std: bool = False
    """Divide group advantages by the group's reward std (DESIGN.md: mean-centring only)."""
    eta_reason: float = Field(0.7, gt=0)
    """SDE noise scale `a` of reason-step image sampling."""
    eta_refine: float = Field(1.0, gt=0)
    """SDE noise scale `a` of refine-step (editing) sampling."""
    sample_steps: int = Field(16, ge=2)
    """Flow-integration steps of rollout images (one of them stochastic)."""
    timestep_shift: float = Field(1.0, gt=0)
    """SD3 time shift of the rollout schedule."""
    cfg_scale: float = Field(3.0, ge=0)
    """Classifier-free guidance of rollout images (re-applied identically in the loss)."""
    temperature: float = Field(1.0, gt=0)
    """Text sampling temperature of reasoning and reflections (> 0: RL needs exploration)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of rollout texts."""
    max_new_tokens: int = Field(48, ge=1)
    """Longest reasoning or reflection a rollout writes."""
    lr: float = Field(1e-4, gt=0)
    """Constant AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    reward: RewardConfig = RewardConfig(name="verifier", params={"mode": "partial"})
    """Alignment reward r (see the module docstring for why partial credit)."""
    checkpoint_every: int = Field(25, ge=1)
    """Steps between resume checkpoints."""
    reasoning_format: Literal["parses", "satisfies"] = "parses"
    """Format reward f of reason steps: the layout text parses (DESIGN.md), or also satisfies the prompt
    (exact ShapeWorld check; a departure that stops sampled layouts drifting off the prompt)."""
    wrong_stop_delta: float = Field(0.0, le=0)
    """Refine delta when the model stops on an image with r < 1. DESIGN.md gives 0, so stopping is never
    worse than an edit that does not help; with a weak SFT editor most edits hurt and the policy learns to
    always stop (stop rate 0.60 -> 0.99 in 400 steps). A negative value makes a wrong stop cost reward."""
    refine_image_baseline: Literal["group", "edited"] = "group"
    """Baseline of a refine step's image advantages: the mean image reward of the whole group, stopped children
    included with the node's reward (DESIGN.md), or of the edited children only. With a weak editor most edits
    lose to stopping, so under "group" nearly every edited image gets a negative advantage."""
    replay_weight: float = Field(0.0, ge=0)
    """Weight of an SFT loss on the synth train tables added to every step's loss (InstructGPT's PPO-ptx; not in
    DESIGN.md, 0 turns it off). RL moves the LM and image head that every skill shares; without replay the skills
    RL does not reward drift: over 400 steps ITA 0.581 -> 0.500, VQA 0.565 -> 0.542, editing 0.115 -> 0.042;
    with params.yaml's replay (1.0, edit / answer / judge, 8 each): ITA 0.585, VQA 0.608, editing 0.104."""
    replay_tasks: tuple[SftTask, ...] = ("edit", "answer", "judge")
    """SFT tasks of the replay loss, each a batch of `replay_batch` examples per step."""
    replay_batch: int = Field(8, ge=1)
    """Examples per replay task and step."""
    ema_decay: float = Field(0.0, ge=0, lt=1)
    """Decay of an exponential moving average of the policy weights that the held-out checks evaluate and the
    stage saves, as the SFT stage does (0 = the raw weights, DESIGN.md). Rollouts always use the raw policy.
    Same training runs evaluated both ways (params.yaml's 0.99 vs 0): ITA 0.585 -> 0.615 and 0.550 -> 0.581,
    VQA 0.608 -> 0.619 and 0.573 -> 0.585 (seeds 0 and 1); generation partial credit +0.02 / -0.03."""
    eval_every: int = Field(50, ge=1)
    """Steps between held-out strict accuracy checks (the reward-hacking monitor)."""
    eval_rows: int = Field(64, ge=1)
    """Held-out prompts in those checks (the final evaluation uses all of them)."""
    eval_sampling: SamplingConfig = SamplingConfig()
    """ODE sampling of held-out metrics; keep it equal to the SFT stage's so the numbers compare."""

    @model_validator(mode="after")
    def _consistent(self) -> "RlConfig":
        if self.eval_sampling.sde_steps:
            raise ValueError("rl.eval_sampling.sde_steps must be empty: held-out metrics use ODE sampling")
        if self.w_text == 0 and self.w_image == 0 and self.replay_weight == 0:
            raise ValueError("rl: w_text, w_image and replay_weight are all 0: nothing to train")
        if self.replay_weight > 0 and not self.replay_tasks:
            raise ValueError("rl: replay_weight > 0 needs at least one replay_tasks entry")
        return self

    def rollout_settings(self) -> RolloutSettings:
        text = SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
        image = SamplingConfig(steps=self.sample_steps, timestep_shift=self.timestep_shift, cfg_scale=self.cfg_scale)
        return RolloutSettings(self.group_size, text, image, self.eta_reason, self.eta_refine, self.normalize_std,
                               self.reasoning_format, self.wrong_stop_delta, self.refine_image_baseline)


@dataclass(frozen=True)
class RlResult:
    checkpoint: Path
    metrics: dict
    history: Path
    samples: list[Path]


@dataclass
class TrainerState:
    """Everything a step changes; saved and restored as a whole for exact resume."""

    step: int
    """Steps done."""
    policy: TrainableUnifiedModel
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    """Prompt and node choice, SDE indices, noise seeds."""
    generator: torch.Generator
    """Text tokens and SDE noise of rollouts."""
    buffer: RolloutBuffer
    history: list[str]
    """The history.jsonl lines written so far."""
    ema: TrainableUnifiedModel | None = None
    """The moving average of the policy weights (main process, cfg.ema_decay > 0), else None."""


# ----- the loss -----

def policy_loss(policy: TrainableUnifiedModel, reference: TrainableUnifiedModel, rollouts: Rollouts,
                cfg: RlConfig) -> tuple[Tensor, dict[str, float]]:
    """w_text * text GRPO loss + w_image * image Flow-GRPO loss of one step's rollouts, and its stats."""
    text = rollouts.text
    logp = policy.text_logprobs(text.query, text.token_ids, text.temperature)  # (B, T)
    with torch.no_grad():
        logp_ref = reference.text_logprobs(text.query, text.token_ids, text.temperature) if cfg.kl else logp.detach()
    beta_text, beta_image = (cfg.beta_text, cfg.beta_image) if cfg.kl else (0.0, 0.0)
    mask = text.mask.to(logp.device).float()  # (B, T)
    advantages = rollouts.text_advantages.to(logp.device)  # (B,)
    text_loss, text_stats = text_policy_loss(logp, text.logprobs, logp_ref, mask, advantages, cfg.clip, beta_text)
    stats = {
        "losses/text": float(text_loss.detach()), "losses/clip_frac_text": float(text_stats["clip_frac"]),
        "losses/kl_text": float(text_stats["kl"]), "losses/approx_kl": float(text_stats["approx_kl"]),
    }
    steps = rollouts.image.steps
    dist = policy.transition_distribution(rollouts.image)  # mean (B_img, 1, 3, H, W), logprob (B_img, 1)
    with torch.no_grad():
        mean_ref = reference.transition_distribution(rollouts.image).mean if cfg.kl else dist.mean.detach()
    image_adv = rollouts.image_advantages.to(dist.logprob.device)  # (B_img,)
    image_mask = rollouts.image_mask.to(dist.logprob.device)  # (B_img,)
    image_loss, image_stats = image_policy_loss(
        dist.logprob[:, 0], steps.logprob[:, 0].to(dist.logprob.device), image_adv, image_mask,
        dist.mean[:, 0], mean_ref[:, 0], dist.std[0], cfg.clip, beta_image,
    )
    stats |= {
        "losses/image": float(image_loss.detach()), "losses/clip_frac_image": float(image_stats["clip_frac"]),
        "losses/kl_image": float(image_stats["kl"]), "losses/approx_kl_image": float(image_stats["approx_kl"]),
    }
    return total_loss(text_loss, image_loss, cfg.w_text, cfg.w_image), stats


@dataclass(frozen=True)
class Replay:
    """Where the replay loss draws its SFT examples from: the synth train tables and the trainer's random streams."""

    data: SynthSplit
    rng: np.random.Generator
    generator: torch.Generator


def replay_loss(policy: TrainableUnifiedModel, replay: Replay, cfg: RlConfig) -> tuple[Tensor, dict[str, float]]:
    """Sum of the SFT losses of one fresh batch per replay task, and each task's loss."""
    losses = {t: task_loss(policy, replay.data, t, replay.rng, cfg.replay_batch, replay.generator)
              for t in cfg.replay_tasks}
    return sum(losses.values()), {f"losses/replay_{t}": float(v.detach()) for t, v in losses.items()}


def optimise(learner: Learner, reference: TrainableUnifiedModel, rollouts: Rollouts,
             cfg: RlConfig, replay: Replay | None = None) -> dict[str, float]:
    """`epochs` clipped AdamW steps on one step's rollouts (plus the replay loss); stats averaged over the epochs."""

    def loss_fn(policy: TrainableUnifiedModel) -> tuple[Tensor, dict[str, float]]:
        loss, stats = policy_loss(policy, reference, rollouts, cfg)
        if replay is None:
            return loss, stats
        extra, replay_stats = replay_loss(policy, replay, cfg)
        return loss + cfg.replay_weight * extra, stats | replay_stats

    totals: dict[str, float] = {}
    for _ in range(cfg.epochs):
        loss, stats, grad_norm = learner.step(loss_fn, cfg.grad_clip)
        for key, value in {**stats, "losses/total": float(loss.detach()), "train/grad_norm": grad_norm}.items():
            totals[key] = totals.get(key, 0.0) + value / cfg.epochs
    return totals


def train_step(state: TrainerState, reference: TrainableUnifiedModel, reward: Reward, prompts: Table,
               cfg: RlConfig, learner: Learner | None = None, replay_data: SynthSplit | None = None) -> dict[str, float]:
    """Sample one step's groups (reason or refine, by the schedule), push reason nodes, optimise.

    `learner` steps state.policy's optimizer in this launch (default: one process, for callers besides train_rl);
    `replay_data` (the synth train tables) is needed when cfg.replay_weight > 0.
    """
    started = time.perf_counter()
    kind = step_kind(state.step, cfg.reason_steps, cfg.refine_steps)
    settings = cfg.rollout_settings()
    sde_index = sde_step_index(state.rng, cfg.sample_steps, kind)
    groups = cfg.prompts_per_step if kind == "reason" else cfg.nodes_per_step
    seeds = state.rng.integers(0, 2**31 - 1, size=groups).tolist()
    sampler = state.policy if learner is None else learner.sampling_model  # whole weights, also under FSDP
    sampler.eval()
    if kind == "reason":
        index = state.rng.choice(len(prompts), size=groups, replace=False)
        rollouts, nodes = reason_rollouts(sampler, reference, reward, prompts.records(index), settings,
                                          sde_index, seeds, state.generator)
        state.buffer.extend(nodes)
    else:
        nodes = [state.buffer.sample_node(state.rng, cfg.p_perfect) for _ in range(groups)]
        rollouts = refine_rollouts(sampler, reference, reward, nodes, settings, sde_index, seeds, state.generator)
    sampler.train()
    trained = time.perf_counter()
    replay = None
    if cfg.replay_weight > 0:
        if replay_data is None:
            raise ValueError("rl: replay_weight > 0 but train_step got no replay_data")
        replay = Replay(replay_data, state.rng, state.generator)
    stats = optimise(learner or Learner(make_accelerator(), state.policy, state.optimizer), reference, rollouts, cfg,
                     replay)
    done = time.perf_counter()
    state.step += 1
    perfect, _ = state.buffer.counts()
    return {**rollouts.stats, **stats, "rl/buffer_size": float(len(state.buffer)),
            "rl/buffer_perfect": perfect / max(1, len(state.buffer)),
            "time/train_s": done - trained, "time/step_s": done - started}


# ----- resume checkpoints -----

def run_identity(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, processes: int) -> dict:
    """What a resume checkpoint must match: both configs, a digest of the SFT checkpoint's files and the number
    of processes (each has its own random streams and buffer)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in init_checkpoint.rglob("*") if p.is_file()):
        digest.update(path.relative_to(init_checkpoint).as_posix().encode())
        digest.update(path.read_bytes())
    return {"base": base.model_dump(mode="json"), "rl": cfg.model_dump(mode="json"), "init_sha256": digest.hexdigest(),
            "processes": processes}


def process_state(state: TrainerState) -> tuple[dict, dict[str, Tensor]]:
    """This process's own part of the trainer state, its random streams and rollout buffer: (JSON, tensors)."""
    nodes = list(state.buffer._nodes)  # RolloutBuffer has no public iterator; the FIFO order must survive as is
    meta = {
        "numpy_rng": state.rng.bit_generator.state,
        "python_rng": random.getstate(),
        "buffer": [
            {"record": n.record, "alignment": n.alignment, "seed": n.seed, "reasoning": n.reasoning} for n in nodes
        ],
    }
    tensors = {
        "torch_rng": torch.get_rng_state(),
        "generator": state.generator.get_state(),
        "buffer_images": torch.from_numpy(np.stack([n.image for n in nodes])) if nodes else torch.zeros(0),
    }
    return meta, tensors


def restore_process_state(meta: dict, tensors: dict[str, Tensor],
                          cfg: RlConfig) -> tuple[np.random.Generator, torch.Generator, RolloutBuffer]:
    """Set this process's global random states from `process_state`'s output; its numpy rng, generator, buffer."""
    torch.set_rng_state(tensors["torch_rng"])
    generator = torch.Generator()
    generator.set_state(tensors["generator"])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["numpy_rng"]
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    buffer = RolloutBuffer(cfg.buffer_capacity)
    images = tensors["buffer_images"].numpy()
    buffer.extend(
        Node(n["record"], images[i], n["alignment"], n["seed"], n["reasoning"]) for i, n in enumerate(meta["buffer"])
    )
    return rng, generator, buffer


def save_resume(state: TrainerState, out_dir: Path, identity: dict, learner: Learner) -> Path | None:
    """Write the trainer state to out_dir/resume/step-NNNNNN atomically; drop older checkpoints. Every process
    calls it; the main process writes every process's part and returns the path, the others return None.
    The weights and optimizer state are whole under FSDP too (the learner's sampling copy, a gathered state)."""
    parts = gather_object([process_state(state)])  # in rank order
    optimizer = learner.optimizer_state_dict()
    if not learner.accelerator.is_main_process:
        return None
    resume = out_dir / RESUME_DIR
    resume.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=resume))
    learner.sampling_model.save_pretrained(tmp / "model")
    if state.ema is not None:
        state.ema.save_pretrained(tmp / "ema")
    torch.save({"optimizer": optimizer, "ranks": [tensors for _, tensors in parts]}, tmp / "state.pt")
    meta = {"step": state.step, "identity": identity, "ranks": [meta for meta, _ in parts]}
    (tmp / "state.json").write_text(json.dumps(meta))
    (tmp / "history.jsonl").write_text("".join(state.history))
    final = resume / f"{STEP_PREFIX}{state.step:06d}"
    tmp.rename(final)  # atomic: a reader sees no checkpoint or a complete one
    for old in resume.glob(f"{STEP_PREFIX}*"):
        if old != final:
            shutil.rmtree(old)
    return final


def latest_resume(out_dir: Path, identity: dict) -> Path | None:
    """The newest complete resume checkpoint of this run, or None (a stale one of another config is removed)."""
    resume = out_dir / RESUME_DIR
    for leftover in resume.glob(".tmp-*"):  # a write interrupted by a kill
        shutil.rmtree(leftover)
    checkpoints = sorted(resume.glob(f"{STEP_PREFIX}*"))
    if not checkpoints:
        return None
    latest = checkpoints[-1]
    if json.loads((latest / "state.json").read_text())["identity"] != identity:
        log_.warning("rl: %s holds a checkpoint of another configuration; starting afresh", resume)
        shutil.rmtree(resume)
        return None
    return latest


def load_resume(path: Path, cfg: RlConfig, expected_model: TrainableUnifiedModel, rank: int = 0,
                device: torch.device | None = None) -> TrainerState:
    """The trainer state of process `rank` saved at `path`, its policy on `device`."""
    policy = load_checkpoint(path / "model", expected=expected_model.config).to(device)
    optimizer = make_optimizer(policy, cfg)
    saved = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    meta = json.loads((path / "state.json").read_text())
    optimizer.load_state_dict(saved["optimizer"])
    rng, generator, buffer = restore_process_state(meta["ranks"][rank], saved["ranks"][rank], cfg)
    history = (path / "history.jsonl").read_text().splitlines(keepends=True)
    ema = None
    if rank == 0 and (path / "ema").is_dir():  # only the main process keeps the moving average
        ema = load_checkpoint(path / "ema").to(device).requires_grad_(False)
    return TrainerState(meta["step"], policy, optimizer, rng, generator, buffer, history, ema)


def make_optimizer(policy: TrainableUnifiedModel, cfg: RlConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)


def fresh_state(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, rank: int = 0,
                device: torch.device | None = None) -> TrainerState:
    """Step 0 of process `rank`, the policy loaded from `init_checkpoint` onto `device`."""
    torch.manual_seed(base.seed + rank)
    random.seed(base.seed + rank)
    policy = load_checkpoint(init_checkpoint).to(device)
    rng = np.random.default_rng(rank_seed_words([base.seed, 4], rank))
    generator = torch.Generator().manual_seed(base.seed + 4 + rank)
    return TrainerState(0, policy, make_optimizer(policy, cfg), rng, generator, RolloutBuffer(cfg.buffer_capacity), [])


# ----- evaluation -----

def spread_rows(table: Table, n: int) -> Table:
    """n rows evenly spread over the table (held-out tables are sorted by tag: the first n would cover one tag)."""
    index = np.unique(np.linspace(0, len(table) - 1, min(n, len(table))).round().astype(int))
    return Table(table.frame[index], {name: images[index] for name, images in table.images.items()})


def quick_eval(policy: TrainableUnifiedModel, prompts: Table, cfg: RlConfig, base: BaseConfig) -> dict[str, float]:
    """Held-out generation accuracy with the exact verifier (strict and partial) per suite, on `prompts`."""
    policy.eval()
    gen = heldout.generation_accuracy(policy, prompts, cfg.eval_sampling, policy.config.canvas, base.seed)
    policy.train()
    return {**{f"heldout/generation_strict/{s}": v for s, v in gen["strict"]["overall"].items()},
            **{f"heldout/generation_partial/{s}": v for s, v in gen["partial"]["overall"].items()}}


def final_training_rewards(history: list[str], steps: int) -> dict[str, float]:
    """Mean training reward of each step kind over the last tenth of the run, to set beside held-out accuracy."""
    window = max(1, steps // 10)
    rows = [row for row in map(json.loads, history) if "time/step_s" in row and row["step"] >= steps - window]
    keys = ("reward/reason_mean", "reward/refine_mean", "rl/stop_rate")
    values = {key: [row[key] for row in rows if key in row] for key in keys}
    return {key: float(np.mean(v)) for key, v in values.items() if v}


# ----- the stage -----

def train_rl(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, synth_dir: Path, out_dir: Path,
             log: MetricLogger = lambda metrics, step: None) -> RlResult:
    """Tree-RL from the SFT checkpoint; resumes from out_dir/resume when it holds this run's checkpoint.

    Writes out_dir/{checkpoint/, history.jsonl, metrics.json, samples/} (grids at step 0, every eval_every
    steps and at the end). A non-main process of a multi-process launch trains alongside the main one and
    returns without evaluating or writing anything: its result's headline is empty and its paths do not exist.
    """
    accelerator = make_accelerator()
    torch.set_num_threads(base.num_threads)
    main, rank, device = accelerator.is_main_process, accelerator.process_index, accelerator.device
    started = time.perf_counter()
    reference = load_checkpoint(init_checkpoint).to(device).eval().requires_grad_(False)
    if reference.config.canvas != base.canvas:
        raise ValueError(
            f"rl: checkpoint {init_checkpoint} has canvas {reference.config.canvas}, base.canvas is {base.canvas}"
        )
    prompts = Table.load(synth_dir / "train" / "prompts.parquet")
    if len(prompts) < cfg.prompts_per_step:
        raise ValueError(f"rl: {len(prompts)} train prompts < prompts_per_step={cfg.prompts_per_step}")
    held = SynthSplit.load(synth_dir / "heldout")
    replay_data = SynthSplit.load(synth_dir / "train") if cfg.replay_weight > 0 else None
    monitor = spread_rows(held.enrichment, cfg.eval_rows)
    reward = build_reward(cfg.reward)

    identity = run_identity(base, cfg, init_checkpoint, accelerator.num_processes)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
    [resume] = broadcast_object_list([latest_resume(out_dir, identity) if main else None])  # main decides, cleans up
    if resume is not None:
        state = load_resume(resume, cfg, reference, rank, device)
        log_.info("rl: resuming from %s (step %d of %d)", resume, state.step, cfg.steps)
    else:
        state = fresh_state(base, cfg, init_checkpoint, rank, device)
    learner = Learner(accelerator, state.policy, state.optimizer, sampling_copy=True)
    state.optimizer = learner.optimizer  # under FSDP a new one, over the sharded policy
    if main and cfg.ema_decay > 0 and state.ema is None:
        state.ema = copy.deepcopy(learner.sampling_model).requires_grad_(False)
    evaluated = learner.sampling_model if state.ema is None else state.ema  # what the checks and the checkpoint read
    history_path, samples_dir = out_dir / "history.jsonl", out_dir / "samples"
    with open(history_path if main else os.devnull, "w") as history:
        history.writelines(state.history)

        def record(metrics: dict[str, float], step: int) -> None:
            line = json.dumps({"step": step, **metrics}) + "\n"
            history.write(line)
            history.flush()
            state.history.append(line)
            log(metrics, step)

        def check_heldout() -> None:
            record(quick_eval(evaluated, monitor, cfg, base), state.step)
            sample_grids(evaluated, held, cfg.eval_sampling, base.canvas, base.seed, samples_dir, f"step{state.step:05d}")

        if main and state.step == 0:
            check_heldout()
        with tqdm(total=cfg.steps, initial=state.step, desc="rl", unit="step", disable=not main) as bar:
            while state.step < cfg.steps:
                metrics = train_step(state, reference, reward, prompts, cfg, learner, replay_data)
                if state.ema is not None:
                    ema_update(state.ema, learner.sampling_model, state.step - 1, cfg.ema_decay)
                if main:
                    record(metrics, state.step - 1)
                    bar.update(1)
                    bar.set_postfix(r=f"{metrics.get('reward/reason_mean', metrics.get('reward/refine_mean')):.3f}")
                    if state.step % cfg.eval_every == 0 and state.step < cfg.steps:
                        check_heldout()
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                    save_resume(state, out_dir, identity, learner)
        if not main:
            return RlResult(out_dir / "checkpoint", {"headline": {}}, history_path, [])
        train_seconds = time.perf_counter() - started
        policy = evaluated.eval()
        final = evaluate_heldout(policy, held, cfg.eval_sampling, base.canvas, base.seed)
        record({f"heldout/{k}": v for k, v in skill_headline(final).items()}, cfg.steps)
    sample_grids(policy, held, cfg.eval_sampling, base.canvas, base.seed, samples_dir, "final")
    checkpoint = out_dir / "checkpoint"
    policy.save_pretrained(checkpoint)
    metrics = {"headline": skill_headline(final), **final, "steps": cfg.steps,
               "final_training_rewards": final_training_rewards(state.history, cfg.steps),
               "train_seconds": train_seconds, "total_seconds": time.perf_counter() - started}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return RlResult(checkpoint, metrics, history_path, sorted(samples_dir.glob("*.png")))
