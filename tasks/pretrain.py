"""Cached Prefect task of the pretrain stage."""

import subprocess
from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.train.pretrain import PretrainConfig, model_card, train_pretrain
from tasks.cache import CACHED, artifact_dir
from tasks.tracking import metric_logger


def code_commit() -> str:
    """The git commit the code runs at, marked when the working tree has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=False).stdout.strip()

    commit = git("rev-parse", "HEAD") or "unknown (not a git checkout)"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


@task(name="pretrain-train", **CACHED)
def train_task(key: str, base: BaseConfig, cfg: PretrainConfig, synth_dir: str, run_id: str | None) -> dict:
    """Train the base model and write its MODEL_CARD.md beside its weights; curves stream into MLflow run `run_id`."""
    out = artifact_dir(key)
    result = train_pretrain(base, cfg, Path(synth_dir), out, log=metric_logger(run_id))
    (result.checkpoint / "MODEL_CARD.md").write_text(model_card(cfg, base, result.metrics, code_commit()))
    return {"paths": [str(result.checkpoint), str(out / "samples"), str(out / "metrics.json"), str(result.history)],
            "run_id": run_id, "headline": result.metrics["headline"]}
