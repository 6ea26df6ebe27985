"""The reward protocol, the name -> constructor registry, and weighted sums of rewards.

Every reward maps a batch of images and their prompt records to one score per image in [0, 1].
Extra context (the models for the intrinsic reward) comes as keyword arguments:
    rewards = build_reward(RewardConfig(name="verifier", params={"mode": "partial"}))
    scores = rewards(images, records, policy=policy, reference=reference)  # (N,)
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, Sequence

import numpy as np
from pydantic import Field, model_validator

from r3.config import Config
from r3.rewards.inputs import check_batch
from r3.rewards.intrinsic import IntrinsicReward
from r3.rewards.judge import JudgeReward
from r3.rewards.tiif import TiifReward
from r3.rewards.verifier import VerifierReward


class Reward(Protocol):
    name: str
    """Unique label of this reward with its settings, e.g. 'verifier_partial' (used as a metric key)."""

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        """images (N, H, W, 3) uint8, N prompt records -> (N,) float scores in [0, 1]."""
        ...


WEIGHTED = "weighted"


class RewardConfig(Config):
    """Which reward to build; `weighted` nests one config per component."""

    name: str
    """A REGISTRY key ('verifier', 'intrinsic', 'judge', 'tiif', 'none') or 'weighted'."""
    params: dict[str, Any] = Field(default_factory=dict)
    """Keyword arguments of that reward's constructor, e.g. {'mode': 'strict'}; empty for 'weighted'."""
    components: tuple[RewardConfig, ...] = ()
    """For 'weighted': the rewards to sum (at least one)."""
    weights: tuple[float, ...] = ()
    """For 'weighted': one non-negative weight per component; they must sum to 1 so the total stays in [0, 1]."""

    @model_validator(mode="after")
    def _check_shape(self) -> RewardConfig:
        if self.name != WEIGHTED:
            if self.components or self.weights:
                raise ValueError(f"reward '{self.name}': components/weights are only for 'weighted'")
            return self
        if self.params:
            raise ValueError("reward 'weighted': takes no params, only components and weights")
        if not self.components or len(self.components) != len(self.weights):
            raise ValueError(
                f"reward 'weighted': needs >= 1 component and one weight each, "
                f"got {len(self.components)} components and {len(self.weights)} weights"
            )
        if any(w < 0 for w in self.weights) or abs(sum(self.weights) - 1.0) > 1e-6:
            raise ValueError(f"reward 'weighted': weights must be >= 0 and sum to 1, got {self.weights}")
        return self


class WeightedReward:
    """sum_k w_k * reward_k, with each component's scores available for logging.

    The RL loop calls score_components once (each reward, a judge in particular, runs once)
    and combine on the result; __call__ does both when the components are not needed.
    """

    def __init__(self, rewards: Sequence[Reward], weights: Sequence[float]) -> None:
        names = [reward.name for reward in rewards]
        if len(set(names)) != len(names):
            raise ValueError(f"WeightedReward: component names must be unique, got {names}")
        if len(rewards) != len(weights):
            raise ValueError(f"WeightedReward: {len(rewards)} rewards but {len(weights)} weights")
        self.rewards = tuple(rewards)
        self.weights = tuple(float(w) for w in weights)
        self.name = WEIGHTED

    def score_components(
        self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any
    ) -> dict[str, np.ndarray]:
        """{component name: (N,) scores}, in component order."""
        n = check_batch(images, records, self.name)
        components = {}
        for reward in self.rewards:
            scores = np.asarray(reward(images, records, **ctx), dtype=np.float64)
            if scores.shape != (n,):
                raise ValueError(f"{reward.name}: returned shape {scores.shape}, expected ({n},)")
            components[reward.name] = scores
        return components

    def combine(self, components: dict[str, np.ndarray]) -> np.ndarray:
        """(N,) weighted sum of score_components' output."""
        return sum(w * components[reward.name] for reward, w in zip(self.rewards, self.weights))

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        return self.combine(self.score_components(images, records, **ctx))


class ZeroReward:
    """Scores every image 0: no alignment signal at all."""

    name = "zero"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        return np.zeros(check_batch(images, records, self.name))


def no_reward(mode: str = "partial") -> WeightedReward:
    """The no-reward control: trains on alignment 0 for every sample (every image advantage is 0; reason texts
    keep only the format reward f, refine texts only f and wrong_stop_delta), with the verifier in `mode` as a
    weight-0 component, so that its score is still logged as reward/verifier_<mode>: the training-reward curve
    the default reward's run is compared with."""
    return WeightedReward([ZeroReward(), VerifierReward(mode)], [1.0, 0.0])


REGISTRY: dict[str, Callable[..., Reward]] = {
    "verifier": VerifierReward,
    "intrinsic": IntrinsicReward,
    "judge": JudgeReward,
    "tiif": TiifReward,
    "none": no_reward,
}


def score_with_components(
    reward: Reward, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(total (N,), {name: (N,)}) for any reward; a plain reward is its own single component."""
    if isinstance(reward, WeightedReward):
        components = reward.score_components(images, records, **ctx)
        return reward.combine(components), components
    scores = np.asarray(reward(images, records, **ctx), dtype=np.float64)
    return scores, {reward.name: scores}


def build_reward(spec: RewardConfig) -> Reward:
    """Construct the reward a config names (recursively for 'weighted')."""
    if spec.name == WEIGHTED:
        return WeightedReward([build_reward(c) for c in spec.components], spec.weights)
    if spec.name not in REGISTRY:
        valid = ", ".join(sorted([*REGISTRY, WEIGHTED]))
        raise ValueError(f"unknown reward {spec.name!r}; valid names: {valid}")
    try:
        return REGISTRY[spec.name](**spec.params)
    except TypeError as err:
        raise ValueError(f"reward {spec.name!r}: bad params {sorted(spec.params)}: {err}") from None
