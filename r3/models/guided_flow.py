"""The image methods every flow backend shares, given how it encodes a condition and predicts a velocity.

A backend supplies `encode_condition(ImageCondition)`, `velocity(encoded, x_t, t)` and `sample_images(...)`
(its latent space and decoding differ); generation, editing and the RL re-evaluation of recorded SDE
steps are then the same code for all of them, so classifier-free guidance is applied identically when
sampling and when log-probs are recomputed.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from r3.models.interface import ImageCondition, ImageSample, SamplingConfig, SdeTransitions
from r3.models.sampling import StepDistribution, VelocityFn, guided, transition_distribution


class GuidedFlowMethods:
    """generate / edit / transition_distribution of `UnifiedModel` on top of the backend's flow model."""

    def guided_velocity(self, condition: ImageCondition, cfg_scale: float) -> VelocityFn:
        """The CFG velocity function of one batch of conditions (one unconditional encoding when scale != 1)."""
        cond = self.encode_condition(condition)
        uncond = self.encode_condition(condition.unconditional()) if cfg_scale != 1.0 else cond
        return guided(lambda x, t: self.velocity(cond, x, t), lambda x, t: self.velocity(uncond, x, t), cfg_scale)

    def generate(
        self,
        prompts: Sequence[str],
        reasoning: Sequence[str] | None,
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        condition = ImageCondition(list(prompts), None if reasoning is None else list(reasoning))
        return self.sample_images(condition, sampling, noise, generator)

    def edit(
        self,
        images: Tensor,
        instructions: Sequence[str],
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        return self.sample_images(ImageCondition(list(instructions), sources=images), sampling, noise, generator)

    def transition_distribution(self, transitions: SdeTransitions) -> StepDistribution:
        velocity_fn = self.guided_velocity(transitions.condition, transitions.cfg_scale)
        return transition_distribution(velocity_fn, transitions.steps)
