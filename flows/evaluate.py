"""Evaluate stage flow: SFT and RL checkpoints (and, with evaluate.untrained, an untrained model) side by side;
report, plots, MLflow."""

import json
from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig, RunnerConfig
from r3.data.io import check_table
from r3.evals.evaluate import EvaluateConfig, prompt_sets
from r3.models.registry import check_checkpoint
from tasks.cache import materialize, run_cached, stage_key
from tasks.evaluate import evaluate_task
from tasks.resources import long_task
from tasks.tracking import log_artifacts, log_json_metrics, metric_logger, stage_run

SECTIONS = {"base": BaseConfig, "evaluate": EvaluateConfig, "runner": RunnerConfig}
CHECKPOINTS = {"base": None, "sft": paths.SFT_CHECKPOINT, "rl": paths.RL_CHECKPOINT}
"""What the report can compare; `base` is the untrained model (same architecture, seeded by base.seed)."""


def compared(evaluate: EvaluateConfig) -> dict[str, Path | None]:
    """The checkpoints this run compares: the untrained model only with evaluate.untrained."""
    return {name: path for name, path in CHECKPOINTS.items() if path is not None or evaluate.untrained}


def tiif_type_scores(metrics: dict) -> dict:
    """Each checkpoint's TIIF score per suite and type (score, low, high, n: 95% Wilson interval), keyed as MLflow
    metric names allow: a combined type's '+' becomes '-' (shape+color -> shape-color)."""
    return {name: {suite: {kind.replace("+", "-"): score for kind, score in by["per_type"].items()}
                   for suite, by in result.get("tiif", {}).items()}
            for name, result in metrics["checkpoints"].items()}


@flow(name="evaluate")
def evaluate_flow(base: BaseConfig, evaluate: EvaluateConfig, runner: RunnerConfig) -> dict:
    """Shards run on `runner`, which changes no number and so is not part of the cache key."""
    inputs = [p for p in CHECKPOINTS.values() if p is not None] + [paths.SYNTH_HELDOUT]
    inputs.append(paths.SYNTH_TIIF if evaluate.prompts is None else Path(evaluate.prompts))
    key = stage_key("evaluate", [base, evaluate], inputs)
    checkpoints = {name: None if p is None else str(p) for name, p in compared(evaluate).items()}
    with stage_run("evaluate", base.experiment, {"base": base, "evaluate": evaluate}) as run:
        # the shards hold the models (and the `gpu` tag); this task only waits for them
        result = run_cached(long_task(evaluate_task, base, holds_model=False), key, base=base, cfg=evaluate,
                            checkpoints=checkpoints, synth_dir=str(paths.SYNTH), runner=runner)
        metrics, report, plots, figures = result["paths"]
        materialize({paths.EVALUATE_METRICS: metrics, paths.EVALUATE_REPORT: report,
                     paths.EVALUATE_SCALING.parent: plots, paths.EVALUATE_FIGURES: figures})
        log_json_metrics(result["headline"])
        log_json_metrics(result["seconds"], prefix="seconds")
        log_json_metrics(tiif_type_scores(json.loads(Path(metrics).read_text())), prefix="tiif")
        log = metric_logger(run.info.run_id)
        for name, curve in result["compute"].items():  # R3 vs best-of-N: one point per image budget N (the step)
            for row in curve:
                log({f"{name}/compute/{k}": v for k, v in row.items() if k != "images"}, row["images"])
        log_artifacts([paths.EVALUATE_METRICS, paths.EVALUATE_REPORT, paths.EVALUATE_FIGURES,
                       paths.EVALUATE_SCALING.parent])
    return {"outputs": [str(paths.EVALUATE_REPORT), str(paths.EVALUATE_METRICS)], "metrics": result["headline"]}


def check_inputs(base: BaseConfig, evaluate: EvaluateConfig, runner: RunnerConfig) -> None:
    """The checkpoints (of one config), the held-out tables and the prompt file (or the synth TIIF suite) read
    (InputError otherwise)."""
    expected = None
    for path in CHECKPOINTS.values():
        if path is not None:
            expected = check_checkpoint(path, expected)
    for table in ("vqa", "ita"):
        check_table(paths.SYNTH_HELDOUT / f"{table}.parquet")
    prompt_sets(evaluate, paths.SYNTH)  # the prompt file, or the held-out prompts table


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("evaluate", SECTIONS, evaluate_flow, argv, check=check_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
