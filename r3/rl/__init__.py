"""Tree-RL math (docs/method.md): rewards per step kind, advantages, losses, buffer, schedule."""

from r3.rl.advantages import group_advantages
from r3.rl.buffer import Node, RolloutBuffer
from r3.rl.losses import image_policy_loss, kl_k3, ppo_clip_loss, text_policy_loss, total_loss
from r3.rl.schedule import StepKind, sde_step_index, step_kind
from r3.rl.stage_rewards import is_perfect, reason_rewards, refine_rewards

__all__ = [
    "Node",
    "RolloutBuffer",
    "StepKind",
    "group_advantages",
    "image_policy_loss",
    "is_perfect",
    "kl_k3",
    "ppo_clip_loss",
    "reason_rewards",
    "refine_rewards",
    "sde_step_index",
    "step_kind",
    "text_policy_loss",
    "total_loss",
]
