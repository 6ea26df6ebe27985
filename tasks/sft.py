"""Cached Prefect task of the sft stage."""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.train.sft import SftConfig, train_sft
from tasks.cache import CACHED, artifact_dir
from tasks.tracking import metric_logger


@task(name="sft-train", **CACHED)
def train_task(key: str, base: BaseConfig, cfg: SftConfig, synth_dir: str, init_dir: str | None,
               run_id: str | None) -> dict:
    """Train from `init_dir` (None: from scratch); curves stream into MLflow run `run_id` (not part of the cache key)."""
    out = artifact_dir(key)
    result = train_sft(base, cfg, Path(synth_dir), out, None if init_dir is None else Path(init_dir),
                       log=metric_logger(run_id))
    return {"paths": [str(result.checkpoint), str(out / "samples"), str(out / "metrics.json"), str(result.history)],
            "run_id": run_id, "headline": result.metrics["headline"]}
