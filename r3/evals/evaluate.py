"""The `evaluate` stage: base (untrained), SFT and RL checkpoints side by side on held-out data.

Per checkpoint: the R3 loop on every prompt (reflect-refine rounds on the scaling suite, round 0
only on the others), generation accuracy per suite and tag after each round, scaling metrics, R3
against best-of-N at equal compute on the scaling suite (trained checkpoints; r3.evals.best_of_n),
and ITA / VQA on the synth held-out tables. Writes metrics.json, report.md, plots/*.csv (DVC plots)
and figures/*.png. Everything is deterministic (see r3.evals.r3_loop): two runs give equal numbers.
The synth TIIF suite's held-out records (r3.data.tiif_suite), or a TIIF-Bench file as evaluate.prompts, run as two
suites, tiif_short and tiif_long, scored per type (r3.evals.tiif).

The work splits into shards, one per (checkpoint, suite) and one per checkpoint for ITA / VQA; each
shard runs exactly the batches the whole evaluation would, so a `ShardMap` may run them anywhere in
any order (a Prefect task runner in `tasks.evaluate`) and the merged numbers stay identical.
"""

import json
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm
from pydantic import Field, model_validator

from r3.config import BaseConfig, Config
from r3.data.io import read_table
from r3.data.table import Table
from r3.data.tiif_suite import read_split, suite_file
from r3.errors import InputError
from r3.evals import report, tiif
from r3.evals.benchmarks import generation_by_round, make_score_fn, understanding, unsupported
from r3.evals.best_of_n import equal_compute, sample_best_of_n
from r3.evals.r3_loop import reflection_outcomes, run_r3, scaling_metrics
from r3.machine import machine_facts
from r3.models.interface import HELDOUT_SAMPLING, SamplingConfig, TrainableUnifiedModel
from r3.models.registry import ModelConfig, build_model, load_checkpoint
from r3.rewards.base import RewardConfig, build_reward
from r3.world.geneval_io import read_prompt_file
from r3.world.prompts import GENEVAL_PP_TAGS, GENEVAL_TAGS, SUITES
from r3.world.tiif_io import DESCRIPTIONS, TiifRecord, is_tiif_file, prompt_records, read_tiif_file, tiif_items

REFERENCE = "sft"
"""Checkpoint the report's arrows compare against."""


class EvaluateConfig(Config):
    """The `evaluate` section of params.yaml."""

    prompts: Path | None = None
    """A GenEval / GenEval++ jsonl file to evaluate generation on (one suite, every record through the loop), or a
    TIIF-Bench jsonl file (recognised by its keys; two suites, tiif_short through the loop and tiif_long, tags =
    types); None = the synth held-out prompts of both suites and the synth TIIF suite's held-out records (tiif_short
    and tiif_long, round 0 only)."""
    per_tag: int | None = Field(40, ge=1)
    """Prompts per tag (the first ones, in file order); None = all of them."""
    max_rounds: int = Field(3, ge=0)
    """Most reflect-refine rounds of the R3 loop; accuracy is reported after each round 0..max_rounds."""
    scaling_suite: str = "geneval_pp"
    """Synth suite whose prompts run the reflect-refine rounds (the scaling study, as in the paper); the other
    suite is scored after round 0 only, which keeps the CPU evaluation within its budget."""
    sampling: SamplingConfig = HELDOUT_SAMPLING.model_copy(update={"temperature": 0.0, "max_new_tokens": 64})
    """Image ODE (steps, cfg_scale, timestep_shift) and reasoning text (temperature: 0 = greedy, top_p,
    max_new_tokens) of the loop; reflections are always greedy."""
    seed: int = Field(0, ge=0)
    """Seed of the evaluation noise (per prompt and round) and of the reasoning sampler; apart from base.seed
    so that runs trained with different seeds are evaluated on the same noise."""
    judge: RewardConfig | None = None
    """Reward scoring records outside ShapeWorld (classes the verifier does not know, TIIF questions outside the
    ShapeWorld grammar), normally {name: judge, params: {url: ..., model: ...}}; a GenEval row counts as correct when
    its score is 1, a TIIF row scores the share of its questions answered as expected."""
    equal_compute: bool = True
    """Compare R3 with best-of-N at equal compute on the scaling suite, N = 1 .. max_rounds + 1 images per prompt
    (r3.evals.best_of_n), for every trained checkpoint (the untrained model's judge is at chance). Costs
    max_rounds + 1 more images per prompt of the suite and checkpoint."""
    best_of_temperature: float = Field(1.0, gt=0)
    """Reasoning temperature of the best-of-N samples (1 = the model's own distribution, the one RL samples);
    their images and top_p are `sampling`'s."""
    untrained: bool = False
    """Also evaluate an untrained model of the trained checkpoints' architecture (seeded by base.seed), the report's
    `base` row: a chance-level floor that no training changes (GenEval++ 0.025, GenEval 0.121, ITA 0.481, VQA 0.000
    at 0a6ad3e), at the cost of a third of the stage's time; off by default."""
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
    scorer: tiif.Scorer | None = None
    """How TIIF items are scored (records of r3.world.tiif_io.prompt_records); None = GenEval records (the verifier,
    the judge outside ShapeWorld)."""


@dataclass(frozen=True)
class EvalResult:
    metrics: dict
    report: Path
    plots: list[Path]
    figures: list[Path]
    seconds: dict[str, float]
    """Wall time per checkpoint, summed over its shards (kept out of metrics.json, which must be identical
    between runs)."""


UNDERSTANDING = "understanding"
"""The shard part that scores ITA and VQA on the synth held-out tables; every other part is a suite."""


@dataclass(frozen=True)
class Shard:
    """One independent piece of the evaluation."""

    checkpoint: str
    """Name of the checkpoint in the report."""
    path: str | None
    """Its directory; None = the untrained model."""
    part: str
    """A suite of `prompt_sets` (the R3 loop on its prompts) or UNDERSTANDING."""


@dataclass(frozen=True)
class ShardResult:
    metrics: dict
    """A suite: {"generation": accuracy (TIIF: mean score) after each round, "scaling": scaling_metrics rows,
    "reflection": r3_loop.reflection_outcomes, on the looped suite of a trained checkpoint "compute":
    best_of_n.equal_compute rows, and on a TIIF suite "tiif": tiif.type_scores of round 0}; UNDERSTANDING:
    {"ita": ..., "vqa": ...}."""
    seconds: float
    figure: str | None
    """The R3-loop sample grid, drawn by the shard of each checkpoint's looped suite."""


ShardMap = Callable[[list[Shard]], list[ShardResult]]
"""Runs shards (anywhere, in any order) and returns their results in the order of the shards given."""

_MODEL_INIT = threading.Lock()
"""Building a model draws from torch's global generator: one load at a time, so that shards run in threads
build the same untrained model as a sequential run."""


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


def tiif_sets(path: Path, records: list[TiifRecord], cfg: EvaluateConfig, short_rounds: int) -> list[PromptSet]:
    """The records of a TIIF file as the suites tiif_short (`short_rounds` reflect-refine rounds) and tiif_long
    (round 0), tagged by type; the file's scorer is decided first."""
    scorer = tiif.tiif_scorer(path, records, cfg.judge)
    items = tiif_items(records)
    sets = []
    for description in DESCRIPTIONS:
        chosen = first_per_tag(prompt_records([i for i in items if i.description == description]), cfg.per_tag)
        rounds = short_rounds if description == DESCRIPTIONS[0] else 0
        sets.append(PromptSet(tiif.suite(description), chosen, [r["tag"] for r in chosen], rounds, scorer))
    return sets


def prompt_sets(cfg: EvaluateConfig, synth_dir: Path) -> list[PromptSet]:
    """The prompt file as one suite (a TIIF file as two), or the synth held-out prompts per suite and the synth TIIF
    suite's held-out records as tiif_short and tiif_long (round 0: the scaling suite alone loops); fails before any
    work if some record is outside ShapeWorld and no judge reward is configured."""
    if cfg.prompts is not None and is_tiif_file(cfg.prompts):
        return tiif_sets(cfg.prompts, read_tiif_file(cfg.prompts), cfg, cfg.max_rounds)
    if cfg.prompts is not None:
        records = first_per_tag(read_prompt_file(cfg.prompts), cfg.per_tag)
        if not records:
            raise InputError(f"evaluate.prompts {cfg.prompts}: no prompts in the file; give a file with prompts")
        problems = unsupported(records)
        if problems and cfg.judge is None:
            raise InputError(
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
    heldout = suite_file(synth_dir, "heldout")
    return sets + tiif_sets(heldout, read_split(heldout), cfg, short_rounds=0)


def load_model(checkpoint: Path | None, model_config: ModelConfig, seed: int) -> TrainableUnifiedModel:
    """The checkpoint, or for None a fresh untrained model of the same config (the 'base' row)."""
    with _MODEL_INIT:
        if checkpoint is None:
            torch.manual_seed(seed)
            return build_model(model_config).eval()
        return load_checkpoint(checkpoint, expected=model_config).eval()


def looped_set(sets: list[PromptSet]) -> PromptSet:
    """The suite whose trace gives the scaling metrics and sample grids: the one with reflect-refine rounds."""
    return next((s for s in sets if s.rounds > 0), sets[0])


def plan_shards(checkpoints: dict[str, Path | None], sets: list[PromptSet]) -> list[Shard]:
    """Every (checkpoint, suite) and (checkpoint, UNDERSTANDING) pair, checkpoints in the given order."""
    parts = [s.suite for s in sets] + [UNDERSTANDING]
    return [Shard(name, None if path is None else str(path), part) for name, path in checkpoints.items()
            for part in parts]


def evaluate_shard(base: BaseConfig, cfg: EvaluateConfig, model_config: ModelConfig, synth_dir: Path, shard: Shard,
                   figure_dir: Path) -> ShardResult:
    """Load the shard's model and run its part; the looped suite's shard also draws the R3-loop grid and, for a
    trained checkpoint, compares R3 with best-of-N at equal compute."""
    started = time.perf_counter()
    torch.set_num_threads(base.num_threads)
    sets = prompt_sets(cfg, synth_dir)
    model = load_model(None if shard.path is None else Path(shard.path), model_config, base.seed)
    if shard.part == UNDERSTANDING:
        ita, vqa = Table.load(synth_dir / "heldout" / "ita.parquet"), Table.load(synth_dir / "heldout" / "vqa.parquet")
        return ShardResult(understanding(model, ita, vqa, cfg.batch_size), time.perf_counter() - started, None)
    prompt_set = next((s for s in sets if s.suite == shard.part), None)
    if prompt_set is None:
        raise ValueError(f"evaluate shard {shard.checkpoint}/{shard.part}: no such suite "
                         f"(have {[s.suite for s in sets]})")
    judge = build_reward(cfg.judge) if cfg.judge is not None else None
    score_fn = make_score_fn(judge) if prompt_set.scorer is None else tiif.score_fn(prompt_set.scorer, judge)
    prompts = [r["prompt"] for r in prompt_set.records]
    trace = run_r3(model, prompt_set.records, prompts, cfg.sampling, prompt_set.rounds, cfg.seed, score_fn,
                   model_config.canvas, cfg.batch_size)
    by_round = generation_by_round if prompt_set.scorer is None else tiif.scores_by_round
    metrics = {"generation": by_round(trace, prompt_set.tags), "scaling": scaling_metrics(trace),
               "reflection": reflection_outcomes(trace, prompt_set.tags)}
    if prompt_set.scorer is not None:
        metrics["tiif"] = tiif.type_scores(trace.rounds[0].scores, prompt_set.tags)
    looped = prompt_set.suite == looped_set(sets).suite
    if looped and cfg.equal_compute and shard.path is not None:
        sampling = cfg.sampling.model_copy(update={"temperature": cfg.best_of_temperature})
        samples = sample_best_of_n(model, prompt_set.records, prompts, sampling, prompt_set.rounds + 1, cfg.seed,
                                   score_fn, model_config.canvas, cfg.batch_size)
        metrics["compute"] = equal_compute(trace, samples, prompt_set.tags)
    figure = None
    if looped:
        figure = str(report.loop_grid(trace, cfg.grid_rows, figure_dir / f"r3_loop_{shard.checkpoint}.png"))
    return ShardResult(metrics, time.perf_counter() - started, figure)


def headline(metrics: dict) -> dict[str, float]:
    """Flat numbers per checkpoint for DVC / MLflow: round-0 accuracy per suite, accuracy after the R3 rounds,
    finished rate, ITA, VQA; where the equal-compute comparison ran, at its largest budget N: the mean images R3
    generated, best-of-N and oracle best-of-N accuracy."""
    flat = {}
    rounds, scaling = metrics["max_rounds"], metrics["scaling_suite"]
    for name, result in metrics["checkpoints"].items():
        for suite, by_round in result["generation"].items():
            flat[f"{name}/{suite}"] = by_round[0]["overall"]
            if suite == scaling and rounds > 0:
                flat[f"{name}/{suite}_r{rounds}"] = by_round[-1]["overall"]
        flat[f"{name}/finished"] = result["scaling"][-1]["finished"]
        for side in ("stop_on_wrong", "stop_on_right"):
            if result.get("reflection") and result["reflection"][side]["overall"] is not None:
                flat[f"{name}/{side}"] = result["reflection"][side]["overall"]
        if "compute" in result:
            largest = result["compute"][-1]
            flat[f"{name}/{scaling}_r{rounds}_images"] = largest["r3_images"]
            flat[f"{name}/{scaling}_best_of_{largest['images']}"] = largest["best_of_n"]
            flat[f"{name}/{scaling}_oracle_{largest['images']}"] = largest["oracle"]
            flat[f"{name}/{scaling}_sampled"] = largest["sampled"]
        flat[f"{name}/ita"] = result["ita"]["overall"]
        flat[f"{name}/vqa"] = result["vqa"]["overall"]
    return flat


def score_note(prompt_set: PromptSet, judge: bool, looped: PromptSet) -> str:
    """The report's line on how a kind of suite is scored: GenEval records (the verifier, the judge outside
    ShapeWorld where one is set) or TIIF items."""
    if prompt_set.scorer is None:
        outside = ", judge outside ShapeWorld." if judge else "."
        return f"Generation scores: exact ShapeWorld verifier (strict){outside}"
    by = "exactly, on the objects the verifier reads off it" if prompt_set.scorer == "exact" else "by evaluate.judge"
    note = (f"TIIF scores: the share of a prompt's yes/no questions answered as expected on its image, {by}; a "
            "type's figure is the mean over its prompts, overall the mean of the types")
    if looped.scorer is None:
        return note + "."
    return note + "; the scaling, reflection and best-of-N tables count a prompt right when all its questions are."


def run_evaluate(base: BaseConfig, cfg: EvaluateConfig, checkpoints: dict[str, Path | None], synth_dir: Path,
                 out_dir: Path, model_config: ModelConfig, map_shards: ShardMap | None = None) -> EvalResult:
    """Evaluate every named checkpoint (None = untrained) and write metrics.json, report.md, plots/ and figures/.

    Shards run one after the other here, or through `map_shards`; their results merge in plan order.
    """
    if not checkpoints:
        raise ValueError("evaluate: no checkpoints to evaluate")
    if model_config.canvas != base.canvas:
        raise ValueError(f"evaluate: model canvas {model_config.canvas} != base.canvas {base.canvas}")
    sets = prompt_sets(cfg, synth_dir)
    shards = plan_shards(checkpoints, sets)
    figure_dir = out_dir / "figures"
    if map_shards is None:
        results = [evaluate_shard(base, cfg, model_config, synth_dir, shard, figure_dir)
                   for shard in tqdm(shards, desc="evaluate", unit="shard")]
    else:
        results = map_shards(shards)
    by_shard = {(shard.checkpoint, shard.part): result for shard, result in zip(shards, results, strict=True)}

    looped = looped_set(sets)
    per_checkpoint, seconds, loop_figures = {}, {}, []
    for name in checkpoints:
        suites = {s.suite: by_shard[name, s.suite].metrics for s in sets}
        per_checkpoint[name] = {"generation": {suite: m["generation"] for suite, m in suites.items()},
                                "scaling": suites[looped.suite]["scaling"],
                                "reflection": suites[looped.suite]["reflection"],
                                **by_shard[name, UNDERSTANDING].metrics}
        if "compute" in suites[looped.suite]:
            per_checkpoint[name]["compute"] = suites[looped.suite]["compute"]
        if tiif_suites := {suite: m["tiif"] for suite, m in suites.items() if "tiif" in m}:
            per_checkpoint[name]["tiif"] = tiif_suites
        seconds[name] = sum(r.seconds for (n, _), r in by_shard.items() if n == name)
        loop_figures.append(Path(by_shard[name, looped.suite].figure))
    metrics: dict[str, Any] = {
        "suites": {s.suite: list(dict.fromkeys(s.tags)) for s in sets},
        "scaling_suite": looped.suite,
        "max_rounds": looped.rounds,
        "reference": REFERENCE if REFERENCE in checkpoints else None,
        "prompts": {s.suite: len(s.records) for s in sets},
        "checkpoints": per_checkpoint,
        "machine": machine_facts(base.num_threads),
    }
    metrics = {"headline": headline(metrics), **metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plots = report.write_plot_data(metrics, out_dir / "plots")
    figures = [report.scaling_figure(metrics, figure_dir / "scaling.png")]
    if report.compute_rows(metrics):
        figures.append(report.compute_figure(metrics, figure_dir / "compute.png"))
    for figure in loop_figures:
        if figure.parent.resolve() != figure_dir.resolve():
            shutil.copyfile(figure, figure_dir / figure.name)
        figures.append(figure_dir / figure.name)
    source = str(cfg.prompts) if cfg.prompts is not None else (
        f"synth held-out prompts ({synth_dir / 'heldout'}) and TIIF suite ({suite_file(synth_dir, 'heldout')})")
    by_kind = ([s for s in sets if s.scorer is None], [s for s in sets if s.scorer is not None])  # GenEval, TIIF
    scores_notes = [score_note(kind[0], cfg.judge is not None, looped) for kind in by_kind if kind]
    notes = [
        f"Prompts: {source}; " + ", ".join(f"{len(s.records)} {report.suite_title(s.suite)}" for s in sets) + ".",
        f"Sampling: ODE, {cfg.sampling.steps} steps, cfg {cfg.sampling.cfg_scale}, reasoning temperature "
        f"{cfg.sampling.temperature}, greedy reflections, evaluation seed {cfg.seed}.",
        *scores_notes,
        "ITA / VQA: synth held-out tables.",
    ]
    if report.compute_rows(metrics):
        notes.append(f"Best-of-N: N independent samples per prompt (reasoning temperature {cfg.best_of_temperature}, "
                     "own noise), picked by the model's own judge (ITA), or by the verifier (oracle).")
    report_path = out_dir / "report.md"
    report_path.write_text(report.render_report(metrics, figures, out_dir, notes) + "\n")
    return EvalResult(metrics, report_path, plots, figures, seconds)
