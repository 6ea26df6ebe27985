"""Supervised losses of every trainable backend, for the SFT stage: next-token CE and conditional flow matching.

Flow matching uses x_t = (1 - t) x_data + t noise with velocity target noise - x_data, where x_data is the
backend's flow space (`to_latents`: tiny's exact codec latents, hf-composite's scaled VAE latents).
Training times default to logit-normal (SD3), which spends the small CPU budget on mid times where layout and
colour are decided rather than on t near 0 (almost clean, little to learn) or near 1 (almost pure noise). A probe
here (16 one-object prompts, batch 16, 300 steps, one seed) gave centre-colour accuracy 0.33 (logit-normal) vs
0.23 (uniform) at CFG 3 and 0.10 vs 0.13 at CFG 1: weak evidence, so `TinyConfig.timestep_sampling` keeps both.
"""

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from r3.models.interface import ImageCondition, TextQuery, TrainableUnifiedModel


@dataclass(frozen=True)
class TextBatch:
    """Text examples of one task: the query and the target text of each example."""

    query: TextQuery
    targets: list[str]

    def __post_init__(self) -> None:
        if len(self.targets) != len(self.query.contexts):
            raise ValueError(f"TextBatch has {len(self.targets)} targets for {len(self.query.contexts)} contexts")


@dataclass(frozen=True)
class ImageBatch:
    """Image examples: the condition (generation or editing) and the target image of each example."""

    condition: ImageCondition
    targets: Tensor
    """(B, 3, H, W) in [0, 1]."""

    def __post_init__(self) -> None:
        if self.targets.shape[0] != len(self.condition.prompts):
            raise ValueError(f"ImageBatch has {self.targets.shape[0]} targets, {len(self.condition.prompts)} prompts")


def text_loss(model: TrainableUnifiedModel, batch: TextBatch) -> Tensor:
    """Mean next-token cross-entropy over the target span (target words and <eos>)."""
    targets = model.encode_targets(batch.targets)  # (B, T)
    logp = model.text_logprobs(batch.query, targets)  # (B, T)
    mask = targets.to(logp.device) != model.pad_id  # (B, T)
    return -(logp * mask).sum() / mask.sum()


def train_timesteps(
    n: int, kind: Literal["uniform", "logit_normal"], generator: torch.Generator | None = None
) -> Tensor:
    """(n,) flow-matching training times in (0, 1)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator)
    return torch.sigmoid(torch.randn(n, generator=generator))


def drop_condition(condition: ImageCondition, drop: Tensor) -> ImageCondition:
    """Replace the texts of examples where drop (B,) is True by the unconditional (empty) texts."""
    dropped = drop.tolist()

    def blank(texts: list[str] | None) -> list[str] | None:
        return None if texts is None else ["" if d else text for text, d in zip(texts, dropped, strict=True)]

    return ImageCondition(blank(condition.prompts), blank(condition.reasoning), condition.sources)


def flow_matching_loss(
    model: TrainableUnifiedModel, batch: ImageBatch, generator: torch.Generator | None = None
) -> Tensor:
    """MSE between predicted and target velocity, with condition dropout (`cfg_dropout`) for CFG.

    Gradients flow through the condition encoding into whatever the backend trains with it (tiny: the LM).
    """
    data = model.to_latents(batch.targets, batch.condition.is_edit).float()  # (B, C, h, w)
    b = data.shape[0]
    noise = torch.randn(data.shape, generator=generator).to(data.device)  # (B, C, h, w)
    t = train_timesteps(b, model.config.timestep_sampling, generator).to(data.device)  # (B,)
    x_t = (1 - t[:, None, None, None]) * data + t[:, None, None, None] * noise  # (B, C, h, w)
    drop = torch.rand(b, generator=generator) < model.config.cfg_dropout  # (B,)
    condition = model.encode_condition(drop_condition(batch.condition, drop))
    v = model.velocity(condition, x_t, t)  # (B, C, h, w)
    return torch.mean((v.float() - (noise - data)) ** 2)
