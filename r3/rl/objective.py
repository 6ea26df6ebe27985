"""The Tree-RL objective (docs/method.md), in the order of its sections: rewards, groups and advantages, the text
loss, the image loss, the total loss, the schedule. Each formula is a short pure function; r3.rl.rollout calls the
reward and advantage ones while it samples a step, r3.rl.train the losses and the schedule.

Alignment rewards r are in [0, 1]; r == 1 means the image satisfies the prompt. A strict verifier gives exactly 0
or 1; partial-credit rewards reach 1.0 only when every fact holds, and PERFECT_TOL absorbs float round-off there.

The losses run in float32. Behaviour log-probs (logp_old), reference log-probs/means and the SDE std are constants
of the objective, so they are detached here: gradients only flow through the current policy's logp_new / mean_new.

Stats (returned detached, 0-dim):
  clip_frac  fraction of (unmasked) elements whose gradient the clip zeroed:
             ratio > 1 + c with A > 0, or ratio < 1 - c with A < 0.
  kl         mean of the penalty term against the reference (text: k3 per token;
             image: (mu - mu_ref)^2 / std^2 per image).
  approx_kl  k3 estimate of KL(old || new) = mean((ratio - 1) - log ratio), as in cleanrl.
  policy_loss  the clipped-surrogate part of the loss alone.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

StepKind = Literal["reason", "refine"]
PERFECT_TOL = 1e-6


# ----- rewards -----

def is_perfect(alignment: Tensor | float) -> Tensor | bool:
    """True where the alignment reward counts as r == 1."""
    return alignment >= 1.0 - PERFECT_TOL


def _check_group(what: str, **tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or any(len(s) != 1 for s in shapes.values()):
        raise ValueError(f"{what}: expected 1-D tensors of one group size (G,), got {shapes}")


def reason_rewards(format_ok: Tensor, alignment: Tensor) -> tuple[Tensor, Tensor]:
    """Reason step: text reward f * (r + 1), image reward r.

    format_ok: (G,) 1 if the reasoning text parses, else 0 (bool or float).
    alignment: (G,) r in [0, 1] of each generated image.
    Returns (text_reward (G,), image_reward (G,)), float32.
    """
    _check_group("reason_rewards", format_ok=format_ok, alignment=alignment)
    f = format_ok.float()  # (G,)
    r = alignment.float()  # (G,)
    return f * (r + 1.0), r


def refine_rewards(
    format_ok: Tensor, r_old: float | Tensor, r_new: Tensor, stopped: Tensor, wrong_stop_delta: float = 0.0
) -> tuple[Tensor, Tensor, Tensor]:
    """Reflect-refine step: rewards of G children of one buffer node.

    format_ok: (G,) 1 if the reflection text parses, else 0.
    r_old: alignment of the node's image, a float or (G,) (the same value repeated).
    r_new: (G,) alignment of each child's edited image.
    stopped: (G,) bool, True where the model gave the stop answer. Whether an unparseable
        reflection counts as a stop is the caller's decision.

    On stop the image is returned unchanged, so the child's alignment *is* r_old: we use r_old
    there whatever r_new holds (no need to re-score an image that did not change).
    delta = r_new - r_old, except delta = 1 when r_old == 1 and the model stopped
    (stopping on a perfect image is the best possible answer), and delta = wrong_stop_delta when
    r_old < 1 and the model stopped (textbook: 0; a negative value is a departure that keeps a
    policy with a weak editor from learning to always stop, see RlConfig.wrong_stop_delta).
    Returns (text_reward f * (1 + delta) (G,), image_reward r_new (G,), image_mask (G,)):
    the mask is 0 where the model stopped (no image was generated, so no image loss) else 1.
    """
    _check_group("refine_rewards", format_ok=format_ok, r_new=r_new, stopped=stopped)
    if stopped.dtype != torch.bool:
        raise ValueError(f"refine_rewards: stopped must be a bool tensor, got {stopped.dtype}")
    if isinstance(r_old, Tensor) and r_old.ndim > 0 and r_old.shape != r_new.shape:
        raise ValueError(
            f"refine_rewards: r_old must be a scalar or shaped like r_new {tuple(r_new.shape)}, "
            f"got {tuple(r_old.shape)}"
        )
    f = format_ok.float()  # (G,)
    r_old_t = torch.as_tensor(r_old, dtype=torch.float32, device=r_new.device).expand_as(r_new)  # (G,)
    r_new = torch.where(stopped, r_old_t, r_new.float())  # (G,)
    delta = r_new - r_old_t  # (G,)
    perfect = is_perfect(r_old_t)  # (G,)
    delta = torch.where(stopped & perfect, torch.ones_like(delta), delta)  # (G,)
    delta = torch.where(stopped & ~perfect, torch.full_like(delta, wrong_stop_delta), delta)  # (G,)
    image_mask = (~stopped).float()  # (G,)
    return f * (1.0 + delta), r_new, image_mask


# ----- groups and advantages -----

def group_advantages(rewards: Tensor, normalize_std: bool = False, eps: float = 1e-6,
                     members: Tensor | None = None) -> Tensor:
    """A = R - mean_group(R), optionally divided by the group's std.

    rewards: (N, G), N groups of G samples that share one prompt/node, noise and SDE step.
    members: (N, G) bool, the samples that make up their group's baseline (default: all); the others get A = 0.
    The std is the population std (correction 0), so a group of one is defined (A = 0);
    eps keeps a constant group at A = 0 instead of 0/0.
    """
    if rewards.ndim != 2:
        raise ValueError(f"group_advantages: rewards must be (N, G), got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    if members is None:
        centred = rewards - rewards.mean(dim=1, keepdim=True)  # (N, G)
        std = rewards.std(dim=1, keepdim=True, correction=0)  # (N, 1)
    else:
        if members.shape != rewards.shape:
            raise ValueError(f"group_advantages: members {tuple(members.shape)} must match rewards "
                             f"{tuple(rewards.shape)}")
        weight = members.float()  # (N, G)
        count = weight.sum(dim=1, keepdim=True).clamp(min=1)  # (N, 1)
        centred = (rewards - (rewards * weight).sum(dim=1, keepdim=True) / count) * weight  # (N, G)
        std = ((centred**2).sum(dim=1, keepdim=True) / count).sqrt()  # (N, 1)
    if not normalize_std:
        return centred
    return centred / (std + eps)  # (N, G)


def informative(rewards: Tensor, drop_equal_groups: bool) -> Tensor:
    """(N G,) float, 1 for the members of groups that carry a learning signal, 0 for the others.

    rewards: (N, G). A group whose rewards are all equal has all-zero advantages: its policy-gradient term is 0 and
    what it would add to the update is its KL pull and, through the per-token mean, a smaller step for the others.
    Without drop_equal_groups every member counts.
    """
    spread = rewards.max(dim=1).values - rewards.min(dim=1).values  # (N,)
    keep = spread > PERFECT_TOL if drop_equal_groups else torch.ones_like(spread, dtype=torch.bool)  # (N,)
    return keep.float().repeat_interleave(rewards.shape[1])  # (N G,)


def group_has_signal(text_mask: Tensor, image_mask: Tensor, group_size: int) -> Tensor:
    """(N,) bool: the groups whose text or image samples enter the loss (`informative`'s masks).

    text_mask, image_mask: (N G,) masks over every sample of the step (a refine step's image mask before it is cut
    to the edited children).
    """
    text = text_mask.view(-1, group_size).amax(dim=1) > 0  # (N,)
    image = image_mask.view(-1, group_size).amax(dim=1) > 0  # (N,)
    return text | image


def permuted_within_groups(rewards: Tensor, order: Tensor) -> Tensor:
    """The null control: each group's rewards handed out among its own samples in a random order.

    rewards: (N, G); order: (N, G) a permutation of 0..G-1 per row (one draw shared by a sample's text and image
    rewards). The group keeps its rewards, hence its mean, spread and whether it is informative; which sample earned
    which reward is lost, so the update holds no information about what the prompt asked for.
    """
    if order.shape != rewards.shape:
        raise ValueError(f"permuted_within_groups: order {tuple(order.shape)} must match rewards "
                         f"{tuple(rewards.shape)}")
    return rewards.gather(1, order)  # (N, G)


def random_orders(groups: int, group_size: int, generator: torch.Generator) -> Tensor:
    """(N, G) int64, an independent uniform permutation of 0..G-1 per group."""
    return torch.rand(groups, group_size, generator=generator).argsort(dim=1)


# ----- text loss: GRPO with a k3 KL -----

def _masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of x over mask == 1 (where, not x * mask: a masked NaN stays out); 0 if the mask is empty."""
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum() / mask.sum().clamp_min(1.0)


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """x with masked-out entries replaced by 0 (mask (B,) or (B, T), broadcast over x's trailing dims).

    Done before any math, so a masked placeholder (even NaN or inf) gets exactly zero value and
    zero gradient; multiplying by the mask afterwards would leak NaN through exp's backward.
    """
    keep = mask.reshape(tuple(mask.shape) + (1,) * (x.ndim - mask.ndim)) > 0
    return torch.where(keep, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))


def _expect_shape(x: Tensor, shape: tuple[int, ...], what: str) -> None:
    if tuple(x.shape) != shape:
        raise ValueError(f"{what} must have shape {shape}, got {tuple(x.shape)}")


def ppo_clip_loss(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, clip: float, mask: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """Per-element PPO clipped surrogate -min(ratio * A, clip(ratio, 1-c, 1+c) * A).

    logp_new, logp_old: (B,) or (B, T); advantages broadcastable to them (pass A[:, None] for tokens).
    mask: optional, shaped like logp_new; only used to restrict clip_frac to real elements.
    Returns (loss (B,) or (B, T), clip_frac 0-dim detached).
    """
    if logp_new.shape != logp_old.shape:
        raise ValueError(
            f"ppo_clip_loss: logp_new {tuple(logp_new.shape)} and logp_old {tuple(logp_old.shape)} differ"
        )
    if clip <= 0:
        raise ValueError(f"ppo_clip_loss: clip must be > 0, got {clip}")
    advantages = advantages.detach().float()
    ratio = torch.exp(logp_new.float() - logp_old.detach().float())  # (B,) or (B, T)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    loss = -torch.minimum(unclipped, clipped)
    was_clipped = ((ratio > 1.0 + clip) & (advantages > 0)) | ((ratio < 1.0 - clip) & (advantages < 0))
    weights = torch.ones_like(ratio) if mask is None else mask.float()
    clip_frac = _masked_mean(was_clipped.float(), weights).detach()
    return loss, clip_frac


def kl_k3(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """Schulman's k3 estimate of KL(policy || ref) per element: exp(ref - logp) - (ref - logp) - 1 >= 0."""
    log_ratio = logp_ref - logp
    return torch.exp(log_ratio) - log_ratio - 1.0


def _approx_kl_old_new(logp_new: Tensor, logp_old: Tensor, mask: Tensor) -> Tensor:
    log_ratio = (logp_new.float() - logp_old.float()).detach()
    return _masked_mean(torch.exp(log_ratio) - 1.0 - log_ratio, mask)


def _penalised_loss(pg: Tensor, kl: Tensor, beta_kl: float, mask: Tensor, clip_frac: Tensor, logp_new: Tensor,
                    logp_old: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """Masked mean of policy-gradient term + beta * KL, with the stats both policy losses report."""
    loss = _masked_mean(pg + beta_kl * kl, mask)
    stats = {
        "policy_loss": _masked_mean(pg, mask).detach(),
        "kl": _masked_mean(kl, mask).detach(),
        "clip_frac": clip_frac,
        "approx_kl": _approx_kl_old_new(logp_new, logp_old, mask),
    }
    return loss, stats


def text_policy_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor,
    mask: Tensor,
    advantages: Tensor,
    clip: float,
    beta_kl: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """GRPO text loss: per-token PPO clip + beta_kl * KL_k3 to the frozen reference.

    logp_new, logp_old, logp_ref, mask: (B, T), mask 1 on the sampled (response) tokens;
        padding positions may hold anything (they are zeroed before any math).
    advantages: (B,), one per sequence, shared by all its tokens.
    "Averaged per token" means over all unmasked tokens of the batch at once
    (sum / number of tokens), not per sequence then per batch: every token weighs the same,
    so long and short texts are not re-weighted against each other.
    """
    _expect_shape(logp_old, tuple(logp_new.shape), "text_policy_loss: logp_old")
    _expect_shape(logp_ref, tuple(logp_new.shape), "text_policy_loss: logp_ref")
    _expect_shape(mask, tuple(logp_new.shape), "text_policy_loss: mask")
    _expect_shape(advantages, (logp_new.shape[0],), "text_policy_loss: advantages")
    mask = mask.float()
    logp_new = _zero_masked(logp_new, mask)  # (B, T)
    logp_old = _zero_masked(logp_old.detach(), mask)  # (B, T)
    logp_ref = _zero_masked(logp_ref.detach(), mask)  # (B, T)
    pg, clip_frac = ppo_clip_loss(logp_new, logp_old, advantages[:, None], clip, mask)  # (B, T)
    kl = kl_k3(logp_new, logp_ref)  # (B, T)
    return _penalised_loss(pg, kl, beta_kl, mask, clip_frac, logp_new, logp_old)


# ----- image loss: Flow-GRPO on one SDE step -----

REFINE_SDE_CHOICES = 2
"""Refine steps make one of the first this-many sampling steps stochastic."""


def sde_step_index(rng: np.random.Generator, steps: int, stage: StepKind) -> int:
    """Index of the one stochastic (SDE) sampling step, drawn once and shared by a group.

    reason: uniform over [0, steps); refine: uniform over the first REFINE_SDE_CHOICES steps
    (as R3's max_sde_timestep_idx_for_edit = 2: an edit's content is decided in its first steps).
    """
    if steps < 1:
        raise ValueError(f"sde_step_index: steps must be >= 1, got {steps}")
    if stage == "reason":
        return int(rng.integers(steps))
    if stage == "refine":
        return int(rng.integers(min(REFINE_SDE_CHOICES, steps)))
    raise ValueError(f"sde_step_index: stage must be 'reason' or 'refine', got {stage!r}")


def image_policy_loss(
    logp_new: Tensor,
    logp_old: Tensor,
    advantages: Tensor,
    mask: Tensor,
    mean_new: Tensor,
    mean_ref: Tensor,
    std: Tensor | float,
    clip: float,
    beta_kl: float,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Flow-GRPO image loss on one stochastic SDE step per image.

    logp_new, logp_old: (B,) log-prob of the stored transition (mean over dimensions).
    advantages, mask: (B,); mask 0 (a child that stopped, no image) gives that sample no
        contribution and no gradient whatever placeholders it holds; the loss is the mean
        over unmasked images.
    mean_new, mean_ref: (B, ...) SDE transition means under the policy and the reference.
    std: the transition std, a float, (B,) or broadcastable to mean_new.
    Penalty: beta_kl * mean((mu - mu_ref)^2 / std^2), exactly as docs/method.md writes it
    (flow_grpo's code divides by 2 std^2, the true Gaussian KL; the factor 2 is absorbed in beta).
    """
    batch = (logp_new.shape[0],)
    _expect_shape(logp_new, batch, "image_policy_loss: logp_new")
    _expect_shape(logp_old, batch, "image_policy_loss: logp_old")
    _expect_shape(advantages, batch, "image_policy_loss: advantages")
    _expect_shape(mask, batch, "image_policy_loss: mask")
    _expect_shape(mean_ref, tuple(mean_new.shape), "image_policy_loss: mean_ref")
    if mean_new.shape[:1] != batch:
        raise ValueError(
            f"image_policy_loss: mean_new must be (B, ...) with B={batch[0]}, got {tuple(mean_new.shape)}"
        )
    mask = mask.float()
    logp_new = _zero_masked(logp_new, mask)  # (B,)
    logp_old = _zero_masked(logp_old.detach(), mask)  # (B,)
    mean_new = _zero_masked(mean_new, mask)  # (B, ...)
    mean_ref = _zero_masked(mean_ref.detach(), mask)  # (B, ...)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=mean_new.device).detach()
    if std_t.ndim >= 1:  # (B,) -> (B, 1, ..., 1) to broadcast over (B, ...)
        std_t = std_t.reshape(tuple(std_t.shape) + (1,) * (mean_new.ndim - std_t.ndim))
    pg, clip_frac = ppo_clip_loss(logp_new, logp_old, advantages, clip, mask)  # (B,)
    sq = (mean_new - mean_ref) ** 2 / std_t**2  # (B, ...)
    kl = sq.flatten(1).mean(dim=1)  # (B,)
    return _penalised_loss(pg, kl, beta_kl, mask, clip_frac, logp_new, logp_old)


# ----- total loss -----

def total_loss(text: Tensor, image: Tensor, w_text: float = 1.0, w_image: float = 2.0) -> Tensor:
    """Tree-RL objective: w_text * text_loss + w_image * image_loss."""
    return w_text * text + w_image * image


# ----- schedule -----

def step_kind(step: int, reason_steps: int = 1, refine_steps: int = 1) -> StepKind:
    """Kind of training step `step` (0-based) in a repeating cycle of reason then refine steps.

    (1, 1) alternates reason/refine; (2, 1) does two reason steps per refine step;
    (1, 0) is reason-only training. Each cycle starts with reason steps, so the rollout
    buffer is filled before the first refine step.
    """
    if step < 0:
        raise ValueError(f"step_kind: step must be >= 0, got {step}")
    if reason_steps < 1 or refine_steps < 0:
        raise ValueError(
            f"step_kind: need reason_steps >= 1 and refine_steps >= 0, got {reason_steps}, {refine_steps}"
        )
    return "reason" if step % (reason_steps + refine_steps) < reason_steps else "refine"
