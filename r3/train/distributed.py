"""What the training loops need from `accelerate`: the run's Accelerator, which process may write, and the
model behind the wrappers.

A stage runs in one process with `python -m flows.sft`, or in several with
`accelerate launch --config_file configs/accelerate/fsdp.yaml -m flows.sft`. The launcher's environment
(RANK, WORLD_SIZE) says which process this is before any process group exists, so the flows can decide
who writes and logs without initialising anything.

The tiny model computes its losses in methods, not in forward(); DDP synchronises gradients and FSDP
gathers the root module's sharded parameters only around forward(), so a loop computes all the losses
of one optimizer step in one call of `LossForward` (`losses = wrapped(step_losses, batch)`), then
calls `accelerator.backward` once.
"""

import os
from collections.abc import Callable
from typing import Any

from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor, nn


def world_size() -> int:
    """Processes of this launch (1 under plain `python`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    """This process's global rank (0 under plain `python`)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the main process writes checkpoints, metrics and samples, and logs to MLflow."""
    return process_rank() == 0


def make_accelerator() -> Accelerator:
    """The run's Accelerator. Devices, process count, FSDP and mixed precision come from the launch config
    (under plain `python`: one process, on the GPU if there is one). A prepared LR scheduler steps once per
    optimizer step, whatever the number of processes, so schedules mean the same in every launch. Each task's
    loss uses only part of the model (text tasks skip the image head), so DDP looks for unused parameters."""
    ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
    return Accelerator(step_scheduler_with_optimizer=False, kwargs_handlers=[ddp])


class LossForward(nn.Module):
    """Runs `loss_fn(model, *args)` as this module's forward(), so that DDP / FSDP see every loss; it may
    return one loss or a dict of them."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return loss_fn(self.model, *args, **kwargs)


def unwrap(accelerator: Accelerator, wrapped: nn.Module) -> nn.Module:
    """The model inside `accelerator.prepare(LossForward(model))` (DDP: the same parameters the loop trains)."""
    inner = accelerator.unwrap_model(wrapped)
    return inner.model if isinstance(inner, LossForward) else inner


def full_state_dict(accelerator: Accelerator, wrapped: nn.Module) -> dict[str, Tensor]:
    """The whole model's weights, gathered from every FSDP shard (call on every process; keys without the
    LossForward prefix), for the main process to save or to load into an unsharded copy."""
    state = accelerator.get_state_dict(wrapped)
    return {key.removeprefix("model."): value for key, value in state.items()}
