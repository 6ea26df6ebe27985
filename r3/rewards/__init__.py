"""Pluggable alignment rewards behind one protocol (see base.py)."""

from r3.rewards.base import (
    REGISTRY,
    Reward,
    RewardConfig,
    WeightedReward,
    ZeroReward,
    build_reward,
    no_reward,
    score_with_components,
)
from r3.rewards.intrinsic import IntrinsicReward
from r3.rewards.judge import JudgeReward, JudgeUnavailableError
from r3.rewards.tiif import TiifReward
from r3.rewards.verifier import VerifierReward

__all__ = [
    "REGISTRY",
    "IntrinsicReward",
    "JudgeReward",
    "JudgeUnavailableError",
    "Reward",
    "RewardConfig",
    "TiifReward",
    "VerifierReward",
    "WeightedReward",
    "ZeroReward",
    "build_reward",
    "no_reward",
    "score_with_components",
]
