"""What a long Prefect task holds: the `gpu` tag when its model runs on CUDA, and the timeout from params.

With a tag-based concurrency limit on `gpu` (README: `prefect concurrency-limit create gpu 1`), Prefect runs the
`gpu`-tagged tasks of every flow that reports to the same API one at a time, so two stages started together
do not share one GPU. Tag only the tasks that hold a model: a tagged task that waits for tagged tasks it
started would wait forever under a limit of 1.
"""

import os

import torch
from prefect import Task

from r3.config import BaseConfig

GPU_TAG = "gpu"
"""Tag of the Prefect tasks whose model is on a CUDA device."""


def uses_cuda() -> bool:
    """Whether this process's models go to CUDA: accelerate places them on the GPU when there is one, unless the
    launch asks for the CPU (ACCELERATE_USE_CPU)."""
    on_cpu = os.environ.get("ACCELERATE_USE_CPU", "false").lower() in ("1", "true", "yes")
    return torch.cuda.is_available() and not on_cpu


def long_task(task: Task, base: BaseConfig, holds_model: bool = True) -> Task:
    """`task` with base.timeout_minutes as its Prefect timeout and, if it holds a model on CUDA, the `gpu` tag."""
    tags = set(task.tags) | ({GPU_TAG} if holds_model and uses_cuda() else set())
    timeout = None if base.timeout_minutes is None else base.timeout_minutes * 60
    return task.with_options(tags=tags, timeout_seconds=timeout)
