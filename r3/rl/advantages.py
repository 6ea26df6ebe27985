"""Group-relative advantages (GRPO): each sample is judged against its own group."""

from __future__ import annotations

from torch import Tensor


def group_advantages(rewards: Tensor, normalize_std: bool = False, eps: float = 1e-6) -> Tensor:
    """A = R - mean_group(R), optionally divided by the group's std.

    rewards: (N, G), N groups of G samples that share one prompt/node, noise and SDE step.
    The std is the population std (correction 0), so a group of one is defined (A = 0);
    eps keeps a constant group at A = 0 instead of 0/0.
    """
    if rewards.ndim != 2:
        raise ValueError(f"group_advantages: rewards must be (N, G), got shape {tuple(rewards.shape)}")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)  # (N, G)
    if not normalize_std:
        return centred
    std = rewards.std(dim=1, keepdim=True, correction=0)  # (N, 1)
    return centred / (std + eps)  # (N, G)
