"""The `rl` stage: Tree-RL (docs/method.md) from the SFT checkpoint, with exact resume.

Steps alternate in a fixed cycle (`reason_steps` reason steps, then `refine_steps` reflect-refine
steps). Each step samples its groups with the current policy (r3.rl.rollout), then takes `epochs`
AdamW steps on text GRPO + w_image * image Flow-GRPO loss, against the behaviour log-probs stored
at sampling time and a frozen copy of the SFT model as the KL reference.

How this departs from the textbook (besides the batching notes in r3.rl.rollout):
  * the learning rate is constant: RL starts from a warmed-up policy and the PPO clip bounds each
    update, so there is no warm-up or decay to resume;
  * groups whose rewards are all equal leave the loss (rl.drop_equal_groups): with the strict 0/1 reward most
    groups of an SFT policy are all right or all wrong. A step keeps drawing groups until it holds
    rl.min_informative_groups informative ones (DAPO's dynamic sampling), at most rl.max_draws draws, and takes no
    optimizer step when it falls short.
    Strict held-out accuracy is logged every `eval_every` steps beside the training reward: it is the
    reward-hacking monitor, whatever reward trains the policy.

Settings: r3.rl.config. Resume: every `checkpoint_every` steps the whole trainer state is saved (r3.rl.checkpoint);
a new run with the same configuration and SFT checkpoint continues from the latest one.

Several processes (r3.train.distributed, DDP or FSDP): each samples its own groups (a step trains on N times
`prompts_per_step` / `nodes_per_step` groups) into its own rollout buffer, from its own random streams
(rank 0 keeps a one-process run's seeds), and gradients are averaged. Only the main process evaluates,
writes and logs; the training stats it logs are its own share. Under FSDP the
policy and its optimizer state are sharded; each process samples its rollouts from an unsharded copy of the
policy that every process refreshes from the shards after each optimizer step, the frozen reference stays
whole, and checkpoints, evaluation and the final model hold the whole (gathered) weights and optimizer state.
"""

import copy
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import broadcast_object_list
from torch import Tensor
from tqdm import tqdm

from r3.config import BaseConfig
from r3.data.table import Table, spread_index, spread_rows
from r3.data.tiif_suite import prompt_table
from r3.evals import heldout
from r3.models.interface import TrainableUnifiedModel
from r3.models.registry import load_checkpoint
from r3.rewards.base import Reward, build_reward
from r3.rl.checkpoint import TrainerState, fresh_state, latest_resume, load_resume, run_identity, save_resume
from r3.rl.config import RlConfig
from r3.rl.objective import image_policy_loss, sde_step_index, step_kind, text_policy_loss, total_loss
from r3.rl.rollout import (Rollouts, concat_rollouts, loss_rows, reason_rollouts, refine_rollouts, take_texts,
                           take_transitions)
from r3.train.data import SynthSplit, task_loss
from r3.train.distributed import Learner, make_accelerator
from r3.train.ema import ema_update
from r3.train.frame import MetricLogger, TrainResult, finish, history_file, other_process_result
from r3.train.heldout_view import sample_grids

log_ = logging.getLogger(__name__)


# ----- the loss -----

def policy_loss(policy: TrainableUnifiedModel, reference: TrainableUnifiedModel, rollouts: Rollouts,
                cfg: RlConfig) -> tuple[Tensor, dict[str, float]]:
    """w_text * text GRPO loss + w_image * image Flow-GRPO loss of one step's rollouts, and its stats.

    Only the rows the rollouts' masks keep are run through the models (with drop_equal_groups, the groups that
    carry a learning signal): a mean over the kept rows equals the masked mean over all of them.
    """
    text_rows = loss_rows(rollouts.text_mask)  # (R,)
    text = take_texts(rollouts.text, text_rows)
    logp = policy.text_logprobs(text.query, text.token_ids, text.temperature)  # (R, T)
    with torch.no_grad():
        logp_ref = reference.text_logprobs(text.query, text.token_ids, text.temperature) if cfg.kl else logp.detach()
    beta_text, beta_image = (cfg.beta_text, cfg.beta_image) if cfg.kl else (0.0, 0.0)
    kept = rollouts.text_mask[text_rows].to(logp.device)  # (R,)
    mask = text.mask.to(logp.device).float() * kept[:, None]  # (R, T)
    advantages = rollouts.text_advantages[text_rows].to(logp.device)  # (R,)
    text_loss, text_stats = text_policy_loss(logp, text.logprobs, logp_ref, mask, advantages, cfg.clip, beta_text)
    stats = {
        "losses/text": float(text_loss.detach()), "losses/clip_frac_text": float(text_stats["clip_frac"]),
        "losses/kl_text": float(text_stats["kl"]), "losses/approx_kl": float(text_stats["approx_kl"]),
    }
    image_rows = loss_rows(rollouts.image_mask)  # (R_img,)
    transitions = take_transitions(rollouts.image, image_rows)
    dist = policy.transition_distribution(transitions)  # mean (R_img, 1, 3, H, W), logprob (R_img, 1)
    with torch.no_grad():
        mean_ref = reference.transition_distribution(transitions).mean if cfg.kl else dist.mean.detach()
    image_adv = rollouts.image_advantages[image_rows].to(dist.logprob.device)  # (R_img,)
    image_mask = rollouts.image_mask[image_rows].to(dist.logprob.device)  # (R_img,)
    image_loss, image_stats = image_policy_loss(
        dist.logprob[:, 0], transitions.steps.logprob[:, 0].to(dist.logprob.device), image_adv, image_mask,
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


def full_update(rollouts: Rollouts, learner: Learner, min_groups: int) -> bool:
    """Whether the step's draws hold `min_groups` informative groups per process, counted over all processes
    (all processes step together, or none does)."""
    kept = torch.tensor([float(rollouts.informative_groups)], device=learner.accelerator.device)
    if learner.accelerator.num_processes > 1:
        kept = learner.accelerator.reduce(kept, reduction="sum")
    return bool(kept.item() >= min_groups * learner.accelerator.num_processes)


def draw_rollouts(state: TrainerState, sampler: TrainableUnifiedModel, reference: TrainableUnifiedModel,
                  reward: Reward, prompts: Table, cfg: RlConfig, kind: str, sde_index: int) -> Rollouts:
    """Step `state.step`'s groups: draws of `prompts_per_step` prompts (reason; their nodes join the buffer) or
    `nodes_per_step` buffer nodes (refine) until they hold min_informative_groups informative groups or max_draws
    draws are made (dynamic sampling, rl.min_informative_groups)."""
    settings = cfg.rollout_settings()
    groups = cfg.prompts_per_step if kind == "reason" else cfg.nodes_per_step
    draws: list[Rollouts] = []
    while len(draws) < cfg.max_draws and sum(d.informative_groups for d in draws) < cfg.min_informative_groups:
        seeds = state.rng.integers(0, 2**31 - 1, size=groups).tolist()
        if kind == "reason":
            index = state.rng.choice(len(prompts), size=groups, replace=False)
            rollouts, nodes = reason_rollouts(sampler, reference, reward, prompts.records(index), settings,
                                              sde_index, seeds, state.generator)
            state.buffer.extend(nodes)
        else:
            nodes = [state.buffer.sample_node(state.rng, cfg.p_perfect) for _ in range(groups)]
            rollouts = refine_rollouts(sampler, reference, reward, nodes, settings, sde_index, seeds, state.generator)
        draws.append(rollouts)
    return concat_rollouts(draws)


def train_step(state: TrainerState, reference: TrainableUnifiedModel, reward: Reward, prompts: Table,
               cfg: RlConfig, learner: Learner | None = None, replay_data: SynthSplit | None = None) -> dict[str, float]:
    """Sample step `state.step`'s groups (reason or refine, by the schedule), push reason nodes, optimise; its
    metrics. The caller counts the step (state.step += 1) once it has used them.

    `learner` steps state.policy's optimizer in this launch (default: one process, for callers besides train_rl);
    `replay_data` (the synth train tables) is needed when cfg.replay_weight > 0.
    """
    started = time.perf_counter()
    kind = step_kind(state.step, cfg.reason_steps, cfg.refine_steps)
    sde_index = sde_step_index(state.rng, cfg.sample_steps, kind)  # one per step, shared by its draws
    sampler = state.policy if learner is None else learner.sampling_model  # whole weights, also under FSDP
    sampler.eval()
    rollouts = draw_rollouts(state, sampler, reference, reward, prompts, cfg, kind, sde_index)
    sampler.train()
    trained = time.perf_counter()
    replay = None
    if cfg.replay_weight > 0:
        if replay_data is None:
            raise ValueError("rl: replay_weight > 0 but train_step got no replay_data")
        replay = Replay(replay_data, state.rng, state.generator)
    learner = learner or Learner(make_accelerator(), state.policy, state.optimizer)
    if full_update(rollouts, learner, cfg.min_informative_groups):
        stats = optimise(learner, reference, rollouts, cfg, replay) | {"train/skipped": 0.0}
    else:  # AdamW's moments would move the weights even on an all-zero gradient
        stats = {"train/skipped": 1.0}
    done = time.perf_counter()
    perfect, _ = state.buffer.counts()
    return {**rollouts.stats, **stats, "rl/buffer_size": float(len(state.buffer)),
            "rl/buffer_perfect": perfect / max(1, len(state.buffer)),
            "time/train_s": done - trained, "time/step_s": done - started}


# ----- evaluation -----

def quick_eval(policy: TrainableUnifiedModel, prompts: Table, cfg: RlConfig, base: BaseConfig) -> dict[str, float]:
    """Held-out generation accuracy with the exact verifier (strict and partial) per suite, on `prompts`."""
    policy.eval()
    gen = heldout.generation_accuracy(policy, prompts, cfg.eval_sampling, policy.config.canvas, base.seed)
    policy.train()
    return {**{f"heldout/generation_strict/{s}": v for s, v in gen["strict"]["overall"].items()},
            **{f"heldout/generation_partial/{s}": v for s, v in gen["partial"]["overall"].items()}}


def validation_split(prompts: Table, rows: int) -> tuple[Table, Table]:
    """(the train prompts RL draws from, `rows` validation rows evenly spread over them)."""
    held = spread_index(len(prompts), rows) if rows else np.zeros(0, dtype=np.int64)
    return prompts.take(np.setdiff1d(np.arange(len(prompts)), held)), prompts.take(held)


def validate(policy: TrainableUnifiedModel, validation: Table, cfg: RlConfig, base: BaseConfig) -> dict:
    """Strict and partial generation accuracy (greedy reasoning, held-out image sampling) on the validation rows."""
    policy.eval()
    result = heldout.generation_accuracy(policy, validation, cfg.eval_sampling, policy.config.canvas, base.seed)
    return {**result, "n": len(validation)}


def final_training_rewards(history: list[str], steps: int) -> dict[str, float]:
    """Mean training reward of each step kind over the last tenth of the run, to set beside held-out accuracy."""
    window = max(1, steps // 10)
    rows = [row for row in map(json.loads, history) if "time/step_s" in row and row["step"] >= steps - window]
    keys = ("reward/reason_mean", "reward/refine_mean", "rl/stop_rate")
    values = {key: [row[key] for row in rows if key in row] for key in keys}
    return {key: float(np.mean(v)) for key, v in values.items() if v}


# ----- the stage -----

def train_rl(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, synth_dir: Path, out_dir: Path,
             log: MetricLogger = lambda metrics, step: None) -> TrainResult:
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
    prompts, validation = validation_split(Table.load(synth_dir / "train" / "prompts.parquet"), cfg.validation_rows)
    if cfg.prompts == "tiif":  # RL draws none of the synth prompts: the validation rows stay as they are
        prompts = prompt_table(synth_dir, "train")
    if len(prompts) < cfg.prompts_per_step:
        raise ValueError(f"rl: {len(prompts)} train prompts (after {len(validation)} validation rows) < "
                         f"prompts_per_step={cfg.prompts_per_step}: lower rl.validation_rows or rl.prompts_per_step")
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
    samples_dir = out_dir / "samples"
    with history_file(out_dir, main, log, state.history) as record:

        def check_heldout() -> None:
            record(quick_eval(evaluated, monitor, cfg, base), state.step)
            sample_grids(evaluated, held, cfg.eval_sampling, base.canvas, base.seed, samples_dir, f"step{state.step:05d}")

        if main and state.step == 0:
            check_heldout()
        with tqdm(total=cfg.steps, initial=state.step, desc="rl", unit="step", disable=not main) as bar:
            while state.step < cfg.steps:
                metrics = train_step(state, reference, reward, prompts, cfg, learner, replay_data)
                if state.ema is not None:
                    ema_update(state.ema, learner.sampling_model, state.step, cfg.ema_decay)
                if main:
                    record(metrics, state.step)
                    bar.update(1)
                    bar.set_postfix(r=f"{metrics.get('reward/reason_mean', metrics.get('reward/refine_mean')):.3f}")
                state.step += 1
                if main and state.step % cfg.eval_every == 0 and state.step < cfg.steps:
                    check_heldout()
                if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                    save_resume(state, out_dir, identity, learner)
        if not main:
            return other_process_result(out_dir)
        extra = {"steps": cfg.steps, "final_training_rewards": final_training_rewards(state.history, cfg.steps),
                 "train_seconds": time.perf_counter() - started}
        if len(validation):
            extra["validation"] = validate(evaluated, validation, cfg, base)
            record({f"validation/generation_strict/{s}": v for s, v in
                    extra["validation"]["strict"]["overall"].items()}, cfg.steps)
        return finish(evaluated, held, cfg.eval_sampling, base.seed, out_dir, record, cfg.steps, extra, started)
