"""Tree-RL policy losses: GRPO for text tokens, Flow-GRPO for images (docs/method.md).

All math runs in float32. Behaviour log-probs (logp_old), reference log-probs/means and the
SDE std are constants of the objective, so they are detached here: gradients only flow
through the current policy's logp_new / mean_new.

Stats (returned detached, 0-dim):
  clip_frac  fraction of (unmasked) elements whose gradient the clip zeroed:
             ratio > 1 + c with A > 0, or ratio < 1 - c with A < 0.
  kl         mean of the penalty term against the reference (text: k3 per token;
             image: (mu - mu_ref)^2 / std^2 per image).
  approx_kl  k3 estimate of KL(old || new) = mean((ratio - 1) - log ratio), as in cleanrl.
  policy_loss  the clipped-surrogate part of the loss alone.
"""

from __future__ import annotations

import torch
from torch import Tensor


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


def total_loss(text: Tensor, image: Tensor, w_text: float = 1.0, w_image: float = 2.0) -> Tensor:
    """Tree-RL objective: w_text * text_loss + w_image * image_loss."""
    return w_text * text + w_image * image
