"""Shared by the training stages (sft, rl): publish a (possibly cached) training result."""

from pathlib import Path

import mlflow

from tasks.cache import materialize
from tasks.tracking import log_artifacts, log_json_metrics, replay_history


def publish_training(result: dict, run_id: str, checkpoint: Path, samples: Path, metrics: Path) -> None:
    """Copy the task's checkpoint, sample grids and metrics to their DVC paths and log them to MLflow.

    A cache hit trained in an earlier MLflow run: its curves are replayed into this run so that
    every run of the stage shows them.
    """
    checkpoint_src, samples_src, metrics_src, history = (Path(p) for p in result["paths"])
    if result["run_id"] != run_id:
        mlflow.set_tag("cached_from_run", result["run_id"])
        replay_history(history, run_id)
    materialize({checkpoint: checkpoint_src, samples: samples_src, metrics: metrics_src})
    log_json_metrics(result["headline"], prefix="final")
    log_artifacts([metrics, samples, checkpoint])
