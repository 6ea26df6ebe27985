"""Group-relative advantages (GRPO): each sample is judged against its own group."""

from __future__ import annotations

from torch import Tensor


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
