"""What the training loops need from `accelerate` and torch's FSDP2: the run's Accelerator, which process may write,
and one optimizer step that every process of a launch takes together.

A stage runs in one process with `python -m flows.sft`, or in several with
`accelerate launch --config_file configs/accelerate/ddp.yaml -m flows.sft` (or `fsdp.yaml`; on CPUs: prefix
`ACCELERATE_USE_CPU=true`; `accelerate launch --cpu` starts one process). The launcher's environment
(RANK, WORLD_SIZE) says which process this is before any process group exists, so the flows can decide
who writes and logs without initialising anything.

Under DDP every process holds the whole model, samples its own batch (a launch of N processes trains on N
times the examples of a step) and averages its gradients with the others in `Learner.step`, so the replicas
stay identical. Only the main process evaluates and writes.

Under FSDP (a launch config with `distributed_type: FSDP`) the data are split the same way, but `Learner` shards
the weights, gradients and optimizer state over the processes with torch's `fully_shard` (FSDP2): each block
named by the config's `fsdp_transformer_layer_cls_to_wrap` is a unit of its own, gathered only while it runs,
the rest of the model one more unit. We shard ourselves, identically on GPUs and CPUs, because accelerate
turns a CPU launch of an FSDP config into DDP. What needs whole weights gets them gathered: `full_state_dict`
(evaluation and saving on the main process), `Learner.sampling_model` (RL rollouts on every process).
"""

import copy
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor
from torch.optim import Optimizer

# fsdp_config options (as accelerate exports them) whose other values the sharding here does not implement:
# variable -> (option, the one value implemented)
FSDP_FIXED_OPTIONS = {
    "FSDP_VERSION": ("fsdp_version", "2"),
    "FSDP_AUTO_WRAP_POLICY": ("fsdp_auto_wrap_policy", "TRANSFORMER_BASED_WRAP"),
    "FSDP_OFFLOAD_PARAMS": ("fsdp_offload_params", "false"),
    "FSDP_ACTIVATION_CHECKPOINTING": ("fsdp_activation_checkpointing", "false"),
    "FSDP_CPU_RAM_EFFICIENT_LOADING": ("fsdp_cpu_ram_efficient_loading", "false"),
}
PARAM_DTYPES = {"no": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def world_size() -> int:
    """Processes of this launch (1 under plain `python`)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def process_rank() -> int:
    """This process's global rank (0 under plain `python`)."""
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    """Only the main process writes checkpoints, metrics and samples, and logs to MLflow."""
    return process_rank() == 0


@dataclass(frozen=True)
class FsdpSettings:
    """How an FSDP launch config shards the model (accelerate exports its fsdp_config as FSDP_* variables)."""

    block_classes: tuple[str, ...]
    """Class names of the modules sharded as units of their own (fsdp_transformer_layer_cls_to_wrap); empty: the
    block classes the model's parts declare (`_no_split_modules` of transformers and diffusers models)."""
    reshard_after_forward: bool
    """Free a block's gathered weights after its forward and gather them again for its backward (less memory,
    more communication; fsdp_reshard_after_forward)."""


def fsdp_settings() -> FsdpSettings | None:
    """This launch's FSDP settings, None when it is not an FSDP launch. NotImplementedError for an fsdp_config
    option this module does not implement."""
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() != "true":
        return None
    for variable, (option, implemented) in FSDP_FIXED_OPTIONS.items():
        value = os.environ.get(variable, implemented)
        if value.lower() != implemented.lower():
            raise NotImplementedError(f"FSDP launch: fsdp_config {option}: {value} is not implemented "
                                      f"(only {implemented})")
    reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
    if reshard not in ("true", "false"):
        raise ValueError(f"FSDP launch: fsdp_reshard_after_forward must be true or false (FSDP2), got {reshard}")
    names = os.environ.get("FSDP_TRANSFORMER_CLS_TO_WRAP", "")
    return FsdpSettings(tuple(n.strip() for n in names.split(",") if n.strip()), reshard == "true")


def make_accelerator() -> Accelerator:
    """The run's Accelerator. Devices, process count and mixed precision come from the launch config (under
    plain `python`: one process, on the GPU if there is one). Each task's loss uses only part of the model
    (text tasks skip the image head), so DDP looks for unused parameters.

    Raises RuntimeError when the launch started several processes that would not train together (accelerate
    on a machine without GPUs, unless ACCELERATE_USE_CPU=true), NotImplementedError for an FSDP option that
    `fsdp_settings` does not implement.
    """
    fsdp_settings()  # refuse a config we cannot honour before anything starts
    accelerator = Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if accelerator.num_processes != world_size():
        raise RuntimeError(f"this launch started {world_size()} processes, but accelerate joined "
                           f"{accelerator.num_processes}: on CPUs launch with ACCELERATE_USE_CPU=true")
    return accelerator


def rank_seed_words(words: list[int], rank: int) -> list[int]:
    """Seed words of this process's numpy stream: rank 0 keeps a one-process run's words (its numbers do not
    depend on the launch), rank r > 0 appends r, so every process samples different data."""
    return [*words, rank] if rank else list(words)


def block_modules(model: nn.Module, class_names: tuple[str, ...]) -> list[nn.Module]:
    """The modules of `model` of the named classes (none named: of the classes its parts declare as blocks), in
    `model.modules()` order. ValueError when a named class does not occur in the model."""
    declared = {name for module in model.modules() for name in getattr(module, "_no_split_modules", None) or ()}
    wanted = set(class_names) or declared
    blocks = [module for module in model.modules() if type(module).__name__ in wanted]
    missing = set(class_names) - {type(block).__name__ for block in blocks}
    if missing:
        raise ValueError(f"FSDP: fsdp_transformer_layer_cls_to_wrap names {sorted(missing)}, which "
                         f"{type(model).__name__} does not contain (its declared blocks: {sorted(declared)})")
    return blocks


def shard(model: nn.Module, settings: FsdpSettings, mixed_precision: str) -> nn.Module:
    """Shard `model` in place with FSDP2: each block a unit, then `model` itself as the unit that holds the rest.
    Every parameter becomes a DTensor split over the processes along its first dimension. Under mixed precision
    the gathered weights are cast to bf16 / fp16 for compute and gradients are averaged in fp32."""
    if mixed_precision not in PARAM_DTYPES:
        raise NotImplementedError(f"FSDP launch: mixed_precision {mixed_precision} is not implemented "
                                  f"(only {', '.join(PARAM_DTYPES)})")
    dtype = PARAM_DTYPES[mixed_precision]
    policy = MixedPrecisionPolicy(param_dtype=dtype, reduce_dtype=None if dtype is None else torch.float32)
    for block in reversed(block_modules(model, settings.block_classes)):  # inner blocks before outer ones
        fully_shard(block, reshard_after_forward=settings.reshard_after_forward, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def full_state_dict(model: nn.Module) -> dict[str, Tensor]:
    """The whole weights of a sharded model, in CPU memory on the main process ({} on the others). Collective:
    every process must call it."""
    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def optimizer_names(model: nn.Module, optimizer: Optimizer) -> list[str]:
    """Parameter name of each optimizer entry, in the order torch numbers them in `optimizer.state_dict()`."""
    name_of = {param: name for name, param in model.named_parameters()}
    return [name_of[param] for group in optimizer.param_groups for param in group["params"]]


def rekeyed(state: dict, key: Callable[[Any], Any]) -> dict:
    """An optimizer state dict with each parameter's key k replaced by key(k): torch's own layout numbers the
    parameters, torch.distributed.checkpoint's names them."""
    return {"state": {key(k): entry for k, entry in state["state"].items()},
            "param_groups": [{**group, "params": [key(k) for k in group["params"]]} for group in state["param_groups"]]}


class LossForward(nn.Module):
    """Runs `loss_fn(model)` as this module's forward(). DDP synchronises gradients only of what a wrapper's
    forward() computed, and FSDP keeps the weights outside the blocks gathered only during the root's forward(),
    while the models compute their losses in methods, not in forward(). The loss inputs stay inside the closure,
    so DDP does not try to copy them to the device."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, loss_fn: Callable[[nn.Module], Any]) -> Any:
        return loss_fn(self.model)


class Learner:
    """A model and its optimizer prepared for this launch. Callers place the model on `accelerator.device` first.

    Under DDP `model` and `optimizer` stay the ones to use (accelerate wraps them). Under FSDP `model` is sharded
    in place (its parameters are DTensors: sample and evaluate with `sampling_model` or `full_state_dict`) and
    `self.optimizer` is a new optimizer of the same class over the sharded parameters, holding the given one's
    settings and state (a resumed run's, say). `sampling_model` is the whole-weights model to sample with: `model`
    itself, or under FSDP with `sampling_copy` an unsharded copy that every process refreshes from the sharded
    weights after each optimizer step (RL rollouts need whole weights on every process).

    FSDP gathers each block's weights as the block runs: every process must run the same blocks, in the same
    order, in each step's loss.
    """

    def __init__(self, accelerator: Accelerator, model: nn.Module, optimizer: Optimizer,
                 sampling_copy: bool = False) -> None:
        self.accelerator, self.model = accelerator, model
        self.fsdp = fsdp_settings()
        self.sampling_model = copy.deepcopy(model) if sampling_copy and self.fsdp else model
        if self.fsdp is None:
            self.wrapped, self.optimizer = accelerator.prepare(LossForward(model), optimizer,
                                                               device_placement=[False, False])
            return
        names = optimizer_names(model, optimizer)
        saved = optimizer.state_dict()  # whole tensors: every process holds the same unsharded optimizer
        self.wrapped = self.shard(LossForward(model))
        sharded, named = dict(model.named_parameters()), iter(names)
        self.optimizer = type(optimizer)([
            {**{key: value for key, value in group.items() if key != "params"},
             "params": [sharded[next(named)] for _ in group["params"]]}
            for group in optimizer.param_groups
        ])
        if saved["state"]:
            set_optimizer_state_dict(model, self.optimizer, rekeyed(saved, names.__getitem__),
                                     options=StateDictOptions(full_state_dict=True, strict=False))
            # the call first gives every parameter a state (an optimizer step at lr 0); one that had none (no
            # gradient yet) must start afresh, as after torch's own load_state_dict, or its step count is off
            with_state = {names[i] for i in saved["state"]}
            for name, param in sharded.items():
                if name not in with_state:
                    self.optimizer.state.pop(param, None)

    @property
    def sharded(self) -> bool:
        return self.fsdp is not None

    def shard(self, module: nn.Module) -> nn.Module:
        """Shard another module (an EMA of the model, say) as this launch shards the model."""
        return shard(module, self.fsdp, self.accelerator.mixed_precision)

    def step(self, loss_fn: Callable[[nn.Module], tuple[Tensor, Any]], grad_clip: float) -> tuple[Tensor, Any, float]:
        """One optimizer step on `loss, aux = loss_fn(model)`, gradients averaged over the processes and clipped
        to a global norm of `grad_clip`; returns the loss, aux and the norm before clipping. All of a step's
        losses go through this one call: a second forward before the backward would not be synchronised."""
        if self.fsdp is None:
            loss, aux = self.wrapped(loss_fn)
            self.optimizer.zero_grad(set_to_none=True)
            self.accelerator.backward(loss)
            grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), grad_clip)
            self.optimizer.step()
            return loss, aux, float(grad_norm)
        with self.accelerator.autocast():
            loss, aux = self.wrapped(loss_fn)
        self.optimizer.zero_grad(set_to_none=True)
        self.accelerator.backward(loss)  # scales the loss under fp16
        scaler = self.accelerator.scaler
        if scaler is not None:
            scaler.unscale_(self.optimizer)
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)  # over every shard
        if scaler is not None:
            scaler.step(self.optimizer)
            scaler.update()
        else:
            self.optimizer.step()
        if self.sampling_model is not self.model:
            self.refresh_sampling_model()
        return loss, aux, float(grad_norm.full_tensor() if isinstance(grad_norm, DTensor) else grad_norm)

    @torch.no_grad()
    def refresh_sampling_model(self) -> None:
        """sampling_model <- the sharded model's whole weights, one parameter at a time (every process gathers)."""
        sharded = dict(self.model.named_parameters())
        for name, param in self.sampling_model.named_parameters():
            param.copy_(sharded[name].full_tensor())

    def optimizer_state_dict(self) -> dict:
        """The optimizer's state in torch's layout with whole tensors (under FSDP: gathered to the main process, {}
        on the others; every process must call it)."""
        if self.fsdp is None:
            return self.optimizer.state_dict()
        names = optimizer_names(self.model, self.optimizer)
        state = get_optimizer_state_dict(self.model, self.optimizer,
                                         options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        number = {name: i for i, name in enumerate(names)}
        return rekeyed(state, number.__getitem__) if state else {}
