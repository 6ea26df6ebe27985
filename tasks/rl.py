"""Cached Prefect task of the rl stage.

The task's artifact directory is keyed by (configs, SFT checkpoint, synth data, code), and the
trainer keeps its resume checkpoints inside it: rerunning a killed stage reaches the same
directory and continues from the last checkpoint instead of starting over.
"""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.rl.config import RlConfig
from r3.rl.train import train_rl
from tasks.cache import CACHED, artifact_dir
from tasks.tracking import metric_logger


@task(name="rl-train", **CACHED)
def train_task(key: str, base: BaseConfig, cfg: RlConfig, init_checkpoint: str, synth_dir: str,
               run_id: str | None) -> dict:
    """Train from the SFT checkpoint; curves stream into MLflow run `run_id` (not part of the cache key)."""
    out = artifact_dir(key)
    result = train_rl(base, cfg, Path(init_checkpoint), Path(synth_dir), out, log=metric_logger(run_id))
    return {"paths": [str(result.checkpoint), str(out / "samples"), str(out / "metrics.json"), str(result.history)],
            "run_id": run_id, "headline": result.metrics["headline"]}
