"""Seed view: every run of a seed sweep (`dvc exp run --queue -S base.seed=0,1,2 ...`) grouped by config.

A run is a row of r3.evals.compare ({"name", "params": {dotted key: value}, "metrics": {dotted key: value}}) whose
metrics are data/evaluate/metrics.json flattened ("headline.rl/geneval_pp", "max_rounds", "checkpoints.rl.scaling").
Its config is its params but base.seed; the config's label names the params that differ from the defaults
(params.yaml), through LABELS where a known ablation has a name ("default" when nothing differs). The view is one
record per config and seed (`seed_records`, reports/seeds.json) and a Markdown page of mean +- sd over seeds
(`seeds_markdown`, reports/seeds.md).
"""

import json
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SEED = "base.seed"
DEFAULT = "default"
METRICS = ("sft/geneval_pp", "rl/geneval_pp", "rl/geneval_pp_r3", "sft/geneval_pp_r3", "rl/geneval", "sft/geneval",
           "rl/ita", "sft/ita", "rl/vqa", "sft/vqa")
"""The figures of a seed record, keyed as evaluate's headline; `_r3` = after evaluate.max_rounds reflect-refine
rounds, whatever that number is."""
LABELS = {
    "rl.refine_steps=0": "reason-only",
    "rl.reward.name=none": "control-no-reward",
    "rl.w_image=0+rl.w_text=0": "control-replay-only",
    "rl.replay_weight=0": "no-replay",
    "rl.kl=false": "no-kl",
    "rl.ema_decay=0": "no-ema",
}
"""Names of well-known overrides ("key=value", several '+'-joined in key order; values as `param_text` writes
them)."""
CHECKPOINTS = ("sft", "rl")


def param_text(value: Any) -> str:
    """One spelling per value, whichever source it comes from: numbers as %g (0 and 0.0 alike), booleans and None
    in YAML's words, lists and dicts as JSON; strings that spell one of those (MLflow params are strings) alike."""
    if isinstance(value, str):
        if value in ("True", "true", "False", "false"):
            return value.lower()
        if value in ("None", "null"):  # str(None), as MLflow logs it; "none" stays a name (rl.reward.name=none)
            return "null"
        try:
            return f"{float(value):g}"
        except ValueError:
            return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return f"{float(value):g}"
    return json.dumps(value)


def overrides(params: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, str]:
    """{key: value text} of the params but base.seed whose value differs from (or is missing in) the defaults."""
    return {key: param_text(value) for key, value in sorted(params.items())
            if key != SEED and (key not in defaults or param_text(value) != param_text(defaults[key]))}


def parse_label(spec: str) -> tuple[str, str]:
    """'KEY=VALUE:NAME' -> ('KEY=<VALUE as param_text spells it>', NAME), an entry for `config_label`'s labels."""
    override, sep, name = spec.rpartition(":")
    key, eq, value = override.partition("=")
    if not (sep and eq and key and name):
        raise ValueError(f"label {spec!r}: expected KEY=VALUE:NAME, e.g. rl.beta_text=0.001:textbook-kl")
    return f"{key}={param_text(value)}", name


def config_label(changed: Mapping[str, str], labels: Mapping[str, str] = LABELS) -> str:
    """'default'; the name `labels` gives the whole set of changed params; else each changed param by its name in
    `labels` or as 'key=value', '+'-joined."""
    if not changed:
        return DEFAULT
    each = [f"{key}={value}" for key, value in sorted(changed.items())]
    return labels.get("+".join(each)) or "+".join(labels.get(item, item) for item in each)


@dataclass(frozen=True)
class SeedRun:
    """One (config, seed) of the sweep."""

    name: str
    """The experiment (or baseline commit) it comes from."""
    config: str
    seed: int
    record: dict[str, Any]
    """{"config", "seed", *METRICS}: the figures, None where the run's metrics lack one."""
    scaling: dict[str, list[dict[str, float]]]
    """{checkpoint: per-round r3_loop.scaling_metrics rows} for the checkpoints of CHECKPOINTS the run has."""


def seed_runs(rows: Sequence[dict[str, Any]], defaults: Mapping[str, Any],
              labels: Mapping[str, str] = LABELS) -> tuple[list[SeedRun], list[str]]:
    """The runs with a seed and evaluate headline, one per (config, seed): the first row wins (give experiments
    before baselines); also the names of the rows left out as repeats of an earlier (config, seed)."""
    runs, repeats, seen = [], [], set()
    for row in rows:
        metrics = row["metrics"]
        if SEED not in row["params"] or not any(key.startswith("headline.") for key in metrics):
            continue
        config, seed = config_label(overrides(row["params"], defaults), labels), int(row["params"][SEED])
        if (config, seed) in seen:
            repeats.append(row["name"])
            continue
        seen.add((config, seed))
        rounds = metrics.get("max_rounds")
        record: dict[str, Any] = {"config": config, "seed": seed}
        for key in METRICS:
            source = key.removesuffix("_r3") + f"_r{rounds}" if key.endswith("_r3") else key
            record[key] = metrics.get(f"headline.{source}")
        scaling = {name: metrics[f"checkpoints.{name}.scaling"] for name in CHECKPOINTS
                   if f"checkpoints.{name}.scaling" in metrics}
        runs.append(SeedRun(row["name"], config, seed, record, scaling))
    order = sorted({run.config for run in runs}, key=lambda c: (c != DEFAULT, c))
    runs.sort(key=lambda run: (order.index(run.config), run.seed))
    return runs, repeats


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def spread_text(values: Sequence[float], digits: int = 3) -> str:
    """'0.450 ± 0.012' over seeds; '0.450' for one seed; '-' for none."""
    if not values:
        return "-"
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def by_config(runs: Sequence[SeedRun]) -> dict[str, list[SeedRun]]:
    grouped: dict[str, list[SeedRun]] = {}
    for run in runs:
        grouped.setdefault(run.config, []).append(run)
    return grouped


def _values(runs: Sequence[SeedRun], key: str) -> list[float]:
    return [run.record[key] for run in runs if run.record[key] is not None]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


@dataclass(frozen=True)
class RewardTrend:
    """Training reward of one RL run at its start and end (mean over the first / last `window` reason steps)."""

    config: str
    seed: int
    initial: float
    final: float

    @property
    def rise(self) -> float:
        return self.final - self.initial


def reward_trend(history: Sequence[Mapping[str, float]], key: str, window: int) -> tuple[float, float] | None:
    """(initial, final): mean of `key` over the first and last `window` reason steps of an RL history (rows of
    history.jsonl, or MLflow curves merged by step; a reason step is a row with reward/reason_mean); None when the
    run logged fewer than 2 * window such steps."""
    if window < 1:
        raise ValueError(f"reward_trend: window must be >= 1, got {window}")
    values = [row[key] for row in sorted(history, key=lambda r: r["step"]) if "reward/reason_mean" in row and key in row]
    if len(values) < 2 * window:
        return None
    return statistics.fmean(values[:window]), statistics.fmean(values[-window:])


def trend_lines(trends: Sequence[RewardTrend], key: str, window: int) -> list[str]:
    """Per-config start, end and rise of the training reward, per seed, and each config's rise against the
    default's: the difference of mean rises set against 2 sd (the larger sd of the two over seeds)."""
    grouped: dict[str, list[RewardTrend]] = {}
    for trend in sorted(trends, key=lambda t: (t.config != DEFAULT, t.config, t.seed)):
        grouped.setdefault(trend.config, []).append(trend)
    rows = [[config, ", ".join(str(t.seed) for t in group), spread_text([t.initial for t in group]),
             spread_text([t.final for t in group]), spread_text([t.rise for t in group])]
            for config, group in grouped.items()]
    lines = [f"## Training reward (`{key}`, mean of the first / last {window} reason steps of each RL run)", "",
             *_table(["Config", "Seeds", "Start", "End", "Rise"], rows), ""]
    lines += _table(["Config", "Seed", "Start", "End", "Rise"],
                    [[t.config, str(t.seed), f"{t.initial:.3f}", f"{t.final:.3f}", f"{t.rise:+.3f}"]
                     for group in grouped.values() for t in group])
    lines.append("")
    default = grouped.get(DEFAULT)
    for config, group in grouped.items():
        if config == DEFAULT or default is None or len(group) < 2 or len(default) < 2:
            continue
        (mean_d, sd_d), (mean_c, sd_c) = mean_sd([t.rise for t in default]), mean_sd([t.rise for t in group])
        difference, bound = mean_d - mean_c, 2 * max(sd_d, sd_c)
        verdict = "more than" if difference > bound else "not more than"
        lines.append(f"- {DEFAULT} rises {mean_d:+.3f} ± {sd_d:.3f}, {config} {mean_c:+.3f} ± {sd_c:.3f}: the "
                     f"difference {difference:+.3f} is {verdict} 2 sd ({bound:.3f}).")
    return lines


def seeds_markdown(runs: Sequence[SeedRun], trends: Sequence[RewardTrend] = (), trend_key: str = "",
                   trend_window: int = 0, repeats: Sequence[str] = ()) -> str:
    """reports/seeds.md: Table 1-style rows (SFT, then RL of each config) as mean ± sd over seeds, every figure per
    config, the per-seed table, scaling over rounds per config, and the training-reward trends when given."""
    if not runs:
        raise ValueError("seeds_markdown: no runs with an evaluate headline")
    grouped = by_config(runs)
    sft_runs = grouped.get(DEFAULT, runs)
    sft_from = DEFAULT if DEFAULT in grouped else "every config"
    columns = [("GenEval++", "geneval_pp"), ("GenEval++ + R3", "geneval_pp_r3"), ("GenEval", "geneval"),
               ("ITA", "ita"), ("VQA", "vqa")]
    table1 = [["SFT", ", ".join(str(s) for s in sorted({r.seed for r in sft_runs})),
               *(spread_text(_values(sft_runs, f"sft/{key}")) for _, key in columns)]]
    table1 += [[f"RL ({config})", ", ".join(str(r.seed) for r in group),
                *(spread_text(_values(group, f"rl/{key}")) for _, key in columns)]
               for config, group in grouped.items()]
    lines = ["# Seeds", "",
             "Mean ± sample sd over seeds (one evaluation per seed; its own 95% intervals are in each run's "
             "data/evaluate/report.md). Configs are labelled by the params that differ from params.yaml.", "",
             f"## Table 1-style: SFT (from {sft_from}) and RL per config", "",
             *_table(["Model", "Seeds", *(title for title, _ in columns)], table1), "",
             "## Every figure per config", ""]
    lines += _table(["Config", "Seeds", *METRICS],
                    [[config, str(len(group)), *(spread_text(_values(group, key)) for key in METRICS)]
                     for config, group in grouped.items()])
    lines += ["", "## Per seed", ""]
    lines += _table(["Config", "Seed", "Run", *METRICS],
                    [[run.config, str(run.seed), run.name,
                      *("-" if run.record[key] is None else f"{run.record[key]:.3f}" for key in METRICS)]
                     for run in runs])
    lines += ["", "## Table 3-style scaling (R3 loop after 0..max rounds; improved / worse: rows whose score "
              "rose / fell in that round)", ""]
    scaling_rows = []
    for config, group in grouped.items():
        for checkpoint in CHECKPOINTS:
            per_seed = [run.scaling[checkpoint] for run in group if checkpoint in run.scaling]
            for k in range(min((len(rows) for rows in per_seed), default=0)):
                scaling_rows.append([config, checkpoint, str(k), str(len(per_seed)),
                                     *(spread_text([rows[k][m] for rows in per_seed])
                                       for m in ("accuracy", "finished")),
                                     *(spread_text([rows[k][m] for rows in per_seed], digits=1)
                                       for m in ("improved", "worse"))])
    lines += _table(["Config", "Checkpoint", "Rounds", "Seeds", "Accuracy", "Finished", "Improved", "Worse"],
                    scaling_rows)
    if trends:
        lines += ["", *trend_lines(trends, trend_key, trend_window)]
    if repeats:
        lines += ["", f"Left out as repeats of an earlier run of the same config and seed: {', '.join(repeats)}."]
    return "\n".join(lines).rstrip() + "\n"


def experiments_first(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`dvc exp show --json` entries reordered for `seed_runs`: every experiment, then each baseline commit without
    its experiments; the workspace (a copy of its baseline plus uncommitted edits) is left out."""
    committed = [entry for entry in entries if entry.get("rev") != "workspace"]
    experiments = [rev for entry in committed for exp_range in entry.get("experiments") or []
                   for rev in exp_range.get("revs") or []]
    return experiments + [{**entry, "experiments": None} for entry in committed]
