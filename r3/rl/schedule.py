"""Which Tree-RL step comes next, and which sampling step is stochastic."""

from __future__ import annotations

from typing import Literal

import numpy as np

StepKind = Literal["reason", "refine"]

REFINE_SDE_CHOICES = 2
"""Refine steps make one of the first this-many sampling steps stochastic."""


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
