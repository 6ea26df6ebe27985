"""The `evaluate` stage: base (untrained), SFT and RL checkpoints side by side on held-out data.

Per checkpoint: the R3 loop on every prompt (reflect-refine rounds on the scaling suite, round 0
only on the others), generation accuracy per suite and tag after each round, scaling metrics, and
ITA / VQA on the synth held-out tables. Writes metrics.json, report.md, plots/*.csv (DVC plots)
and figures/*.png. Everything is deterministic (see r3.evals.r3_loop): two runs give equal numbers.
"""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from pydantic import Field, model_validator

from r3.config import BaseConfig, Config
from r3.data.io import read_table
from r3.evals import report
from r3.evals.benchmarks import generation_by_round, make_score_fn, understanding, unsupported
from r3.evals.r3_loop import R3Trace, ScoreFn, run_r3, scaling_metrics
from r3.models.interface import SamplingConfig
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.rewards.base import RewardConfig, build_reward
from r3.train.data import Table
from r3.world.geneval_io import read_prompt_file
from r3.world.prompts import GENEVAL_PP_TAGS, GENEVAL_TAGS, SUITES, vocabulary

REFERENCE = "sft"
"""Checkpoint the report's arrows compare against."""


class EvaluateConfig(Config):
    """The `evaluate` section of params.yaml."""

    prompts: Path | None = None
    """A GenEval / GenEval++ jsonl file to evaluate generation on (one suite, every record through the loop);
    None = the synth held-out prompts of both suites."""
    per_tag: int | None = Field(40, ge=1)
    """Prompts per tag (the first ones, in file order); None = all of them."""
    max_rounds: int = Field(3, ge=0)
    """Most reflect-refine rounds of the R3 loop; accuracy is reported after each round 0..max_rounds."""
    scaling_suite: str = "geneval_pp"
    """Synth suite whose prompts run the reflect-refine rounds (the scaling study, as in the paper); the other
    suite is scored after round 0 only, which keeps the CPU evaluation within its budget."""
    sampling: SamplingConfig = SamplingConfig(temperature=0.0, max_new_tokens=48)
    """Image ODE (steps, cfg_scale, timestep_shift) and reasoning text (temperature: 0 = greedy, top_p,
    max_new_tokens) of the loop; reflections are always greedy."""
    seed: int = Field(0, ge=0)
    """Seed of the evaluation noise (per prompt and round) and of the reasoning sampler; apart from base.seed
    so that runs trained with different seeds are evaluated on the same noise."""
    judge: RewardConfig | None = None
    """Reward scoring records outside ShapeWorld (classes the verifier does not know), normally
    {name: judge, params: {url: ..., model: ...}}; a row counts as correct when its score is 1."""
    grid_rows: int = Field(8, ge=1)
    """Prompts shown in each R3-loop sample grid (one line per prompt, one column per round)."""
    batch_size: int = Field(64, ge=1)
    """Rows per model call."""

    @model_validator(mode="after")
    def _check(self) -> "EvaluateConfig":
        if self.sampling.sde_steps:
            raise ValueError("sampling.sde_steps must be empty: evaluation samples with the ODE")
        if self.scaling_suite not in SUITES:
            raise ValueError(f"scaling_suite {self.scaling_suite!r}: expected one of {tuple(SUITES)}")
        return self


@dataclass(frozen=True)
class PromptSet:
    """The generation prompts of one suite."""

    suite: str
    records: list[dict[str, Any]]
    tags: list[str]
    rounds: int
    """Reflect-refine rounds these prompts run."""


@dataclass(frozen=True)
class EvalResult:
    metrics: dict
    report: Path
    plots: list[Path]
    figures: list[Path]
    seconds: dict[str, float]
    """Wall time per checkpoint (kept out of metrics.json, which must be identical between runs)."""


def file_suite(records: list[dict[str, Any]]) -> str:
    """The suite a prompt file belongs to, from its tags: geneval_pp, geneval, or 'custom'."""
    tags = {r.get("tag") for r in records}
    if tags <= set(GENEVAL_PP_TAGS):
        return "geneval_pp"
    return "geneval" if tags <= set(GENEVAL_TAGS) else "custom"


def first_per_tag(records: list[dict[str, Any]], per_tag: int | None) -> list[dict[str, Any]]:
    seen: dict[str, int] = {}
    kept = []
    for record in records:
        tag = record.get("tag", "untagged")
        seen[tag] = seen.get(tag, 0) + 1
        if per_tag is None or seen[tag] <= per_tag:
            kept.append(record)
    return kept


def prompt_sets(cfg: EvaluateConfig, synth_dir: Path) -> list[PromptSet]:
    """The prompt file as one suite, or the synth held-out prompts per suite; fails before any work if some
    record is outside ShapeWorld and no judge reward is configured."""
    if cfg.prompts is not None:
        records = first_per_tag(read_prompt_file(cfg.prompts), cfg.per_tag)
        if not records:
            raise ValueError(f"evaluate.prompts {cfg.prompts}: no prompts in the file")
        problems = unsupported(records)
        if problems and cfg.judge is None:
            raise ValueError(
                f"evaluate.prompts {cfg.prompts}: {len(problems)} of {len(records)} prompts are outside ShapeWorld and "
                f"need the judge reward, but evaluate.judge is not set (first: {problems[0]})"
            )
        return [PromptSet(file_suite(records), records, [r.get("tag", "untagged") for r in records], cfg.max_rounds)]
    frame = read_table(synth_dir / "heldout" / "prompts.parquet")
    sets = []
    for suite in SUITES:
        rows = frame.filter(frame["suite"] == suite)
        records = first_per_tag([json.loads(m) for m in rows["metadata"]], cfg.per_tag)
        if records:
            rounds = cfg.max_rounds if suite == cfg.scaling_suite else 0
            sets.append(PromptSet(suite, records, [r["tag"] for r in records], rounds))
    return sets


def load_model(checkpoint: Path | None, model_config: TinyConfig, seed: int) -> TinyUnifiedModel:
    """The checkpoint, or for None a fresh untrained model of the same config (the 'base' row)."""
    if checkpoint is None:
        torch.manual_seed(seed)
        return TinyUnifiedModel(model_config, build_tokenizer(vocabulary())).eval()
    return TinyUnifiedModel.from_pretrained(checkpoint, expected=model_config).eval()


def evaluate_model(model: TinyUnifiedModel, sets: list[PromptSet], cfg: EvaluateConfig, score_fn: ScoreFn,
                   ita: Table, vqa: Table) -> tuple[dict, R3Trace]:
    """Metrics of one model and the trace of the suite that ran the reflect-refine rounds."""
    generation, scaling, looped = {}, [], None
    for prompt_set in sets:
        trace = run_r3(model, prompt_set.records, [r["prompt"] for r in prompt_set.records], cfg.sampling,
                       prompt_set.rounds, cfg.seed, score_fn, model.config.canvas, cfg.batch_size)
        generation[prompt_set.suite] = generation_by_round(trace, prompt_set.tags)
        if looped is None or prompt_set.rounds > 0:
            scaling, looped = scaling_metrics(trace), trace
    return {"generation": generation, "scaling": scaling, **understanding(model, ita, vqa, cfg.batch_size)}, looped


def headline(metrics: dict) -> dict[str, float]:
    """Flat numbers per checkpoint for DVC / MLflow: round-0 accuracy per suite, accuracy after the R3 rounds,
    finished rate, ITA, VQA."""
    flat = {}
    rounds, scaling = metrics["max_rounds"], metrics["scaling_suite"]
    for name, result in metrics["checkpoints"].items():
        for suite, by_round in result["generation"].items():
            flat[f"{name}/{suite}"] = by_round[0]["overall"]
            if suite == scaling and rounds > 0:
                flat[f"{name}/{suite}_r{rounds}"] = by_round[-1]["overall"]
        flat[f"{name}/finished"] = result["scaling"][-1]["finished"]
        flat[f"{name}/ita"] = result["ita"]["overall"]
        flat[f"{name}/vqa"] = result["vqa"]["overall"]
    return flat


def run_evaluate(base: BaseConfig, cfg: EvaluateConfig, checkpoints: dict[str, Path | None], synth_dir: Path,
                 out_dir: Path, model_config: TinyConfig) -> EvalResult:
    """Evaluate every named checkpoint (None = untrained) and write metrics.json, report.md, plots/ and figures/."""
    if not checkpoints:
        raise ValueError("evaluate: no checkpoints to evaluate")
    if model_config.canvas != base.canvas:
        raise ValueError(f"evaluate: model canvas {model_config.canvas} != base.canvas {base.canvas}")
    torch.set_num_threads(base.num_threads)
    sets = prompt_sets(cfg, synth_dir)
    score_fn = make_score_fn(build_reward(cfg.judge) if cfg.judge is not None else None)
    ita, vqa = Table.load(synth_dir / "heldout" / "ita.parquet"), Table.load(synth_dir / "heldout" / "vqa.parquet")

    results, traces, seconds = {}, {}, {}
    for name, checkpoint in tqdm(checkpoints.items(), desc="evaluate", unit="model"):
        started = time.perf_counter()
        model = load_model(checkpoint, model_config, base.seed)
        results[name], traces[name] = evaluate_model(model, sets, cfg, score_fn, ita, vqa)
        seconds[name] = time.perf_counter() - started

    looped = next((s for s in sets if s.rounds > 0), sets[0])
    metrics: dict[str, Any] = {
        "suites": {s.suite: list(dict.fromkeys(s.tags)) for s in sets},
        "scaling_suite": looped.suite,
        "max_rounds": looped.rounds,
        "reference": REFERENCE if REFERENCE in checkpoints else None,
        "checkpoints": results,
    }
    metrics = {"headline": headline(metrics), **metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = report.write_plot_data(metrics, out_dir / "plots")
    figures = [report.scaling_figure(metrics, out_dir / "figures" / "scaling.png")]
    figures += [report.loop_grid(trace, cfg.grid_rows, out_dir / "figures" / f"r3_loop_{name}.png")
                for name, trace in traces.items()]
    source = str(cfg.prompts) if cfg.prompts is not None else f"synth held-out prompts ({synth_dir / 'heldout'})"
    notes = [
        f"Prompts: {source}; " + ", ".join(f"{len(s.records)} {report.suite_title(s.suite)}" for s in sets) + ".",
        f"Sampling: ODE, {cfg.sampling.steps} steps, cfg {cfg.sampling.cfg_scale}, reasoning temperature "
        f"{cfg.sampling.temperature}, greedy reflections, evaluation seed {cfg.seed}.",
        "Generation scores: exact ShapeWorld verifier (strict)" + (", judge outside ShapeWorld." if cfg.judge else "."),
        "ITA / VQA: synth held-out tables.",
    ]
    report_path = out_dir / "report.md"
    report_path.write_text(report.render_report(metrics, figures, out_dir, notes) + "\n")
    return EvalResult(metrics, report_path, plots, figures, seconds)
