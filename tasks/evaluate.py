"""Cached Prefect task of the evaluate stage."""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.evals.evaluate import EvaluateConfig, run_evaluate
from r3.models.tiny import CONFIG_FILE, TinyConfig
from tasks.cache import CACHED, artifact_dir


@task(name="evaluate", **CACHED)
def evaluate_task(key: str, base: BaseConfig, cfg: EvaluateConfig, checkpoints: dict[str, str | None],
                  synth_dir: str) -> dict:
    """Evaluate the named checkpoints (None = untrained model of the first checkpoint's architecture)."""
    first = next(Path(c) for c in checkpoints.values() if c is not None)
    model_config = TinyConfig.model_validate_json((first / CONFIG_FILE).read_text())
    out = artifact_dir(key)
    result = run_evaluate(base, cfg, {k: None if v is None else Path(v) for k, v in checkpoints.items()},
                          Path(synth_dir), out, model_config)
    return {"paths": [str(out / "metrics.json"), str(result.report), str(out / "plots"), str(out / "figures")],
            "headline": result.metrics["headline"], "seconds": result.seconds}
