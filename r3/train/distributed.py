"""What the training loops need from `accelerate`: the run's Accelerator, which process may write, and one
optimizer step that every process of a launch takes together.

A stage runs in one process with `python -m flows.sft`, or in several with
`accelerate launch --config_file configs/accelerate/ddp.yaml -m flows.sft` (on CPUs: prefix
`ACCELERATE_USE_CPU=true`; `accelerate launch --cpu` starts one process). The launcher's environment
(RANK, WORLD_SIZE) says which process this is before any process group exists, so the flows can decide
who writes and logs without initialising anything.

Under DDP every process holds the whole model, samples its own batch (a launch of N processes trains on N
times the examples of a step) and averages its gradients with the others in `Learner.step`, so the replicas
stay identical. Only the main process evaluates and writes. FSDP is refused (`make_accelerator`).
"""

import os
from collections.abc import Callable
from typing import Any

from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor, nn
from torch.optim import Optimizer

FSDP_MISSING = ("FSDP launches are not supported: the training loops evaluate and save one full model on the main "
                "process and RL samples rollouts from it, but nothing gathers sharded weights (nor the SFT EMA) "
                "for them; launch with configs/accelerate/ddp.yaml")


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
    """The run's Accelerator. Devices, process count and mixed precision come from the launch config (under
    plain `python`: one process, on the GPU if there is one). Each task's loss uses only part of the model
    (text tasks skip the image head), so DDP looks for unused parameters.

    Raises RuntimeError when the launch started several processes that would not train together (accelerate
    on a machine without GPUs, unless ACCELERATE_USE_CPU=true), NotImplementedError under FSDP.
    """
    # set by `accelerate launch` for an FSDP config, read before the Accelerator: without GPUs accelerate
    # quietly runs such a launch as DDP
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise NotImplementedError(FSDP_MISSING)
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if accelerator.num_processes != world_size():
        raise RuntimeError(f"this launch started {world_size()} processes, but accelerate joined "
                           f"{accelerator.num_processes}: on CPUs launch with ACCELERATE_USE_CPU=true")
    return accelerator


def rank_seed_words(words: list[int], rank: int) -> list[int]:
    """Seed words of this process's numpy stream: rank 0 keeps a one-process run's words (its numbers do not
    depend on the launch), rank r > 0 appends r, so every process samples different data."""
    return [*words, rank] if rank else list(words)


class LossForward(nn.Module):
    """Runs `loss_fn(model)` as this module's forward(). DDP synchronises gradients only of what a wrapper's
    forward() computed, and the models compute their losses in methods, not in forward(). The loss inputs
    stay inside the closure, so DDP does not try to copy them to the device."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[[nn.Module], Any]) -> Any:
        return loss_fn(self.model)


class Learner:
    """A model and its optimizer prepared for this launch (`model` itself stays the module to sample and
    evaluate with: DDP trains the same parameters). Callers place the model on `accelerator.device` first."""

    def __init__(self, accelerator: Accelerator, model: nn.Module, optimizer: Optimizer) -> None:
        self.accelerator = accelerator
        self.model = model
        self.wrapped, self.optimizer = accelerator.prepare(LossForward(model), optimizer,
                                                           device_placement=[False, False])

    def step(self, loss_fn: Callable[[nn.Module], tuple[Tensor, Any]], grad_clip: float) -> tuple[Tensor, Any, float]:
        """One optimizer step on `loss, aux = loss_fn(model)`, gradients averaged over the processes and clipped
        to a global norm of `grad_clip`; returns the loss, aux and the norm before clipping. All of a step's
        losses go through this one call: a second forward before the backward would not be synchronised."""
        loss, aux = self.wrapped(loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimizer.step()
        return loss, aux, float(grad_norm)
