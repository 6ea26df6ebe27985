"""Exponential moving average of model weights, kept by both training stages."""

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, step: int, decay: float) -> None:
    """ema <- d * ema + (1 - d) * model, with d ramped up as (1 + step) / (10 + step) early in training
    so that the average is not dominated by the random initialisation."""
    d = min(decay, (1 + step) / (10 + step))
    ema_params, params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(ema_params, params, 1 - d)
