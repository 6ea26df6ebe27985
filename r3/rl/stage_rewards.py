"""Per-sample rewards of the two Tree-RL step kinds (docs/method.md).

Alignment rewards r are in [0, 1]; r == 1 means the image satisfies the prompt. A strict
verifier gives exactly 0 or 1; partial-credit rewards reach 1.0 only when every fact holds,
and PERFECT_TOL absorbs float round-off there.
"""

from __future__ import annotations

import torch
from torch import Tensor

PERFECT_TOL = 1e-6


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
