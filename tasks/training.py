"""Shared by the training stages (sft, rl): the cached training task to call, and publishing its result."""

from pathlib import Path

import mlflow
from prefect import Task

from r3.config import BaseConfig
from r3.train.distributed import world_size

from tasks.cache import materialize
from tasks.resources import long_task
from tasks.tracking import log_artifacts, log_json_metrics, replay_history


def training_task(task: Task, base: BaseConfig) -> Task:
    """The training task with its timeout and `gpu` tag (tasks.resources.long_task). Under a multi-process launch
    every process trains, and the others cannot read Prefect's cache, so the main process does not read it either
    (it still writes it for later single-process runs)."""
    task = long_task(task, base)
    return task.with_options(refresh_cache=True) if world_size() > 1 else task


def publish_training(result: dict, run_id: str, checkpoint: Path, samples: Path | None, metrics: Path) -> None:
    """Copy the task's checkpoint, sample grids and metrics to their DVC paths and log them to MLflow; with
    `samples` None the grids go to MLflow only (a frozen stage: its outputs are the ones committed to git).

    A cache hit trained in an earlier MLflow run: its curves are replayed into this run so that
    every run of the stage shows them.
    """
    checkpoint_src, samples_src, metrics_src, history = (Path(p) for p in result["paths"])
    if result["run_id"] != run_id:
        mlflow.set_tag("cached_from_run", result["run_id"])
        replay_history(history, run_id)
    outputs = {checkpoint: checkpoint_src, metrics: metrics_src}
    materialize(outputs if samples is None else outputs | {samples: samples_src})
    log_json_metrics(result["headline"], prefix="final")
    log_artifacts([metrics, samples_src if samples is None else samples, checkpoint])
