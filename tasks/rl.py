"""Cached Prefect task of the rl stage.

The task's artifact directory is keyed by (configs, SFT checkpoint, synth data, code), and the
trainer keeps its resume checkpoints inside it: rerunning a killed stage reaches the same
directory and continues from the last checkpoint instead of starting over. The directory also names the MLflow
run that trained there last (`TRAINED_BY`), so a run that resumes is tagged `resumed_from` with it and gets the
curves of the steps it did not train itself.
"""

from pathlib import Path

import mlflow
from prefect import task

from r3.config import BaseConfig
from r3.rl.config import RlConfig
from r3.rl.train import train_rl
from tasks.cache import CACHED, artifact_dir
from tasks.tracking import metric_logger, replay_history

TRAINED_BY = "mlflow_run_id"
"""File in the task's artifact directory: the MLflow run that trains (or last trained) there."""


@task(name="rl-train", **CACHED)
def train_task(key: str, base: BaseConfig, cfg: RlConfig, init_checkpoint: str, synth_dir: str,
               run_id: str | None) -> dict:
    """Train from the SFT checkpoint; curves stream into MLflow run `run_id` (not part of the cache key)."""
    out = artifact_dir(key)
    earlier = (out / TRAINED_BY).read_text() if (out / TRAINED_BY).is_file() else None
    if run_id is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / TRAINED_BY).write_text(run_id)
    steps: list[int] = []
    log = metric_logger(run_id)

    def log_and_note(metrics: dict[str, float], step: int) -> None:
        steps.append(step)
        log(metrics, step)

    result = train_rl(base, cfg, Path(init_checkpoint), Path(synth_dir), out, log=log_and_note)
    # A fresh run logs its step-0 check first; a resumed one starts logging at the step it resumed from.
    if run_id is not None and steps and steps[0] > 0:
        if earlier is not None:
            mlflow.MlflowClient().set_tag(run_id, "resumed_from", earlier)
        mlflow.MlflowClient().set_tag(run_id, "resumed_at_step", str(steps[0]))
        replay_history(result.history, run_id, before_step=steps[0])
    return {"paths": [str(result.checkpoint), str(out / "samples"), str(out / "metrics.json"), str(result.history)],
            "run_id": run_id, "headline": result.metrics["headline"]}
