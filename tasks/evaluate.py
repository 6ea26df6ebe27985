"""Cached Prefect tasks of the evaluate stage: the whole evaluation, and its shards on the task runner.

Each shard (one checkpoint on one suite, or on ITA / VQA) is cached under its own content key, so a
stage rerun after, say, only the RL checkpoint changed recomputes only the RL shards.
"""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig, RunnerConfig
from r3.data.tiif_suite import suite_file
from r3.evals.evaluate import EvaluateConfig, Shard, ShardMap, ShardResult, evaluate_shard, run_evaluate
from r3.evals.tiif import TIIF_SUITES
from r3.models.registry import ModelConfig, read_model_config
from tasks.cache import CACHED, artifact_dir, stage_key
from tasks.resources import long_task
from tasks.runner import task_runner


@task(name="evaluate-shard", task_run_name="evaluate-{shard.checkpoint}-{shard.part}", **CACHED)
def shard_task(key: str, base: BaseConfig, cfg: EvaluateConfig, model_config: ModelConfig, synth_dir: str,
               shard: Shard) -> dict:
    result = evaluate_shard(base, cfg, model_config, Path(synth_dir), shard, artifact_dir(key) / "figures")
    return {"paths": [result.figure] if result.figure else [], "metrics": result.metrics, "seconds": result.seconds,
            "figure": result.figure}


def shard_key(base: BaseConfig, cfg: EvaluateConfig, model_config: ModelConfig, synth_dir: str, shard: Shard) -> str:
    """The shard's content key: its checkpoint, the held-out tables, the prompt file, and the synth TIIF suite where
    the shard scores it (so a new suite recomputes only the TIIF shards)."""
    inputs = [Path(synth_dir) / "heldout", *(p for p in (shard.path, cfg.prompts) if p is not None)]
    if cfg.prompts is None and shard.part in TIIF_SUITES:
        inputs.append(suite_file(Path(synth_dir), "heldout"))
    return stage_key(f"evaluate-{shard.checkpoint}-{shard.part}", [base, cfg, model_config], inputs)


def shard_map(base: BaseConfig, cfg: EvaluateConfig, model_config: ModelConfig, synth_dir: str,
              runner: RunnerConfig) -> ShardMap:
    """Run shards as cached `shard_task`s on the configured task runner; results in the order of the shards."""

    def run(shards: list[Shard]) -> list[ShardResult]:
        calls = [{"key": shard_key(base, cfg, model_config, synth_dir, shard), "base": base, "cfg": cfg,
                  "model_config": model_config, "synth_dir": synth_dir, "shard": shard} for shard in shards]
        with task_runner(runner) as pool:
            futures = [pool.submit(long_task(shard_task, base), parameters=call) for call in calls]
            results = [future.result() for future in futures]
        for i, call in enumerate(calls):
            if not all(Path(p).exists() for p in results[i]["paths"]):  # cached figure deleted since
                results[i] = long_task(shard_task, base).with_options(refresh_cache=True)(**call)
        return [ShardResult(r["metrics"], r["seconds"], r["figure"]) for r in results]

    return run


@task(name="evaluate", **CACHED)
def evaluate_task(key: str, base: BaseConfig, cfg: EvaluateConfig, checkpoints: dict[str, str | None],
                  synth_dir: str, runner: RunnerConfig) -> dict:
    """Evaluate the named checkpoints (None = untrained model of the first checkpoint's architecture)."""
    first = next(Path(c) for c in checkpoints.values() if c is not None)
    model_config = read_model_config(first)
    out = artifact_dir(key)
    on_runner = shard_map(base, cfg, model_config, synth_dir, runner)
    result = run_evaluate(base, cfg, {k: None if v is None else Path(v) for k, v in checkpoints.items()},
                          Path(synth_dir), out, model_config, map_shards=on_runner)
    return {"paths": [str(out / "metrics.json"), str(result.report), str(out / "plots"), str(out / "figures")],
            "headline": result.metrics["headline"], "seconds": result.seconds,
            "compute": {name: r["compute"] for name, r in result.metrics["checkpoints"].items() if "compute" in r}}
