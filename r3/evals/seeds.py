"""Seed view: every run of a seed sweep grouped by config. RL seeds share one SFT checkpoint
(`dvc exp run --queue -S rl.seed=0,1,2 ...` reruns rl and evaluate only); an SFT seed is a whole pipeline
(`-S base.seed=1`).

A run is a row of r3.evals.compare.rows_from_dvc ({"name", "params": {dotted key: value}, "metrics": {dotted key:
value}}) with every DVC metrics file of the pipeline flattened under its path ("data/evaluate/metrics.json:
headline.rl/geneval_pp", "data/rl/metrics.json:total_seconds"). Its config is its params but base.seed and rl.seed;
the config's label names the params that differ from the defaults (params.yaml), through LABELS where a known
ablation has a name ("default" when nothing differs). A run is one (config, sft_seed = base.seed, seed = the RL seed:
rl.seed, or base.seed where rl.seed is null). The view is one record per run (`seed_runs`, reports/seeds.json) and
a Markdown page of mean +- sd over RL seeds (`seeds_markdown`, reports/seeds.md).

Run records (`run_record`, reports/runs/<name>.json) keep what the view needs of each run in the repository: its
seeds, its overrides against params.yaml at its commit, its commit (and DVC experiment), the METRICS figures, the
R3 scaling rows, its training-reward trend and the machine it ran on; `runs_from_records` makes the view of them
without DVC's experiment refs or MLflow.
"""

import json
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from r3 import paths
from r3.evals.compare import flatten

SEED = "base.seed"
RL_SEED = "rl.seed"
DEFAULT = "default"
EVALUATE = f"{paths.EVALUATE_METRICS}:"
"""The prefix of evaluate's metrics in a row."""
OPTIONAL = ("rl/validation_geneval_pp", "sft/geneval_pp_sampled", "rl/geneval_pp_sampled", "sft/stop_on_wrong",
            "rl/stop_on_wrong", "sft/stop_on_right", "rl/stop_on_right")
"""Figures of METRICS that a run may lack (runs from before them, a model without wrong or right images): its
record holds null for them."""
METRICS = ("sft/geneval_pp", "rl/geneval_pp", "rl/geneval_pp_r3", "sft/geneval", "rl/geneval", "sft/ita", "rl/ita",
           "sft/vqa", "rl/vqa", "rl/render_fidelity", "rl/editing", "sft/editing", "rl_seconds", *OPTIONAL)
"""The figures of a seed record: evaluate's headline keys (`_r3` = after evaluate.max_rounds reflect-refine rounds,
whatever that number is; `_sampled`: one reasoning sample at evaluate.best_of_temperature, the mean of
max_rounds + 1; `stop_on_*`: the first reflection's stop rate on wrong / right images), but those of SOURCES."""
SOURCES = {
    "rl/render_fidelity": f"{paths.RL_METRICS}:headline.render_fidelity",
    "rl/editing": f"{paths.RL_METRICS}:headline.editing",
    "sft/editing": f"{paths.SFT_METRICS}:headline.editing",
    "rl_seconds": f"{paths.RL_METRICS}:total_seconds",
    "rl/validation_geneval_pp": f"{paths.RL_METRICS}:validation.strict.overall.geneval_pp",
}
"""Figures that evaluate does not measure: the training stages' held-out view (r3.train.heldout_view.skill_headline)
and the rl stage's wall time (training, final held-out check and saving), and the final policy's strict GenEval++
accuracy on the validation rows (rl.validation_rows), the figure settings are chosen on."""
LABELS = {
    "rl.refine_steps=0": "reason-only",
    "rl.reward.name=none": "control",
    "rl.permute_rewards=true": "null",
    "rl.max_draws=3+rl.min_informative_groups=8": "dynamic-8x3",
    "rl.reflect_temperature=1+rl.temperature=0.7": "reason-temp-0.7",
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
    """{key: value text} of the params but the seeds (base.seed, rl.seed) whose value differs from (or is missing in)
    the defaults."""
    return {key: param_text(value) for key, value in sorted(params.items())
            if key not in (SEED, RL_SEED) and (key not in defaults or param_text(value) != param_text(defaults[key]))}


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


def run_identity(params: Mapping[str, Any], defaults: Mapping[str, Any],
                 labels: Mapping[str, str] = LABELS) -> tuple[str, int, int]:
    """(config, sft_seed, seed) of a run with base.seed: its config label, base.seed, and the RL seed: rl.seed, or
    base.seed where rl.seed is null ("None" in MLflow) or missing (runs from before the param)."""
    sft_seed = int(params[SEED])
    rl_seed = params.get(RL_SEED)
    seed = sft_seed if param_text(rl_seed) == "null" else int(rl_seed)
    return config_label(overrides(params, defaults), labels), sft_seed, seed


def figure(metrics: Mapping[str, Any], key: str) -> Any:
    """A figure of METRICS from a run's metrics (rows_from_dvc's '<file>:'-prefixed keys), None where it lacks one."""
    if key in SOURCES:
        return metrics.get(SOURCES[key])
    if key.endswith("_r3"):
        key = key.removesuffix("_r3") + f"_r{metrics.get(f'{EVALUATE}max_rounds')}"
    return metrics.get(f"{EVALUATE}headline.{key}")


@dataclass(frozen=True)
class SeedRun:
    """One (config, sft_seed, seed) of the sweep."""

    name: str
    """The experiment (or baseline commit) it comes from."""
    config: str
    sft_seed: int
    """base.seed: the seed of the SFT checkpoint (and of the stages before it)."""
    seed: int
    """The RL seed (rl.seed, else base.seed)."""
    record: dict[str, Any]
    """{"config", "seed", "sft_seed", *METRICS}: the figures, None where the run's metrics lack one."""
    scaling: dict[str, list[dict[str, float]]]
    """{checkpoint: per-round r3_loop.scaling_metrics rows} for the checkpoints of CHECKPOINTS the run has."""
    origin: dict[str, Any] | None = None
    """The run record it comes from (reports/runs/<name>.json, `run_record`); None for a `dvc exp show` row."""


def first_of_each(rows: Iterable[Mapping[str, Any]], identity: Callable[[Mapping[str, Any]], tuple[str, int, int]]
                  ) -> tuple[list[tuple[Mapping[str, Any], tuple[str, int, int]]], list[str]]:
    """Each row whose (config, sft_seed, seed) no earlier row has, with that identity; and the names of the others
    (repeats)."""
    kept, repeats, seen = [], [], set()
    for row in rows:
        key = identity(row)
        if key in seen:
            repeats.append(row["name"])
        else:
            seen.add(key)
            kept.append((row, key))
    return kept, repeats


def table_order(runs: list[SeedRun]) -> list[SeedRun]:
    """The default config first, then by config, SFT seed and RL seed."""
    return sorted(runs, key=lambda run: (run.config != DEFAULT, run.config, run.sft_seed, run.seed))


def seed_runs(rows: Sequence[dict[str, Any]], defaults: Mapping[str, Any],
              labels: Mapping[str, str] = LABELS) -> tuple[list[SeedRun], list[str]]:
    """The runs with base.seed and an evaluate headline, one per (config, sft_seed, seed): the first row wins (give
    experiments before baselines); also the names of the rows left out as repeats of an earlier one."""
    evaluated = [row for row in rows if SEED in row["params"]
                 and any(key.startswith(f"{EVALUATE}headline.") for key in row["metrics"])]
    kept, repeats = first_of_each(evaluated, lambda row: run_identity(row["params"], defaults, labels))
    runs = []
    for row, (config, sft_seed, seed) in kept:
        metrics = row["metrics"]
        record = {"config": config, "seed": seed, "sft_seed": sft_seed,
                  **{key: figure(metrics, key) for key in METRICS}}
        scaling = {name: metrics[f"{EVALUATE}checkpoints.{name}.scaling"] for name in CHECKPOINTS
                   if f"{EVALUATE}checkpoints.{name}.scaling" in metrics}
        runs.append(SeedRun(row["name"], config, sft_seed, seed, record, scaling))
    return table_order(runs), repeats


def mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def spread_text(values: Sequence[float], digits: int = 3) -> str:
    """'0.450 ± 0.012' over seeds; '0.450' for one seed; '-' for none."""
    if not values:
        return "-"
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f}" if sd is None else f"{mean:.{digits}f} ± {sd:.{digits}f}"


def by_group(runs: Sequence[SeedRun]) -> dict[tuple[str, int], list[SeedRun]]:
    """Runs by (config, sft_seed), in run order: the runs of a group differ only in the RL seed."""
    grouped: dict[tuple[str, int], list[SeedRun]] = {}
    for run in runs:
        grouped.setdefault((run.config, run.sft_seed), []).append(run)
    return grouped


def _values(runs: Sequence[SeedRun], key: str) -> list[float]:
    return [run.record[key] for run in runs if run.record[key] is not None]


def _digits(key: str) -> int:
    return 0 if key == "rl_seconds" else 3


def _differences(runs: Sequence[SeedRun], minuend: str, subtrahend: str) -> dict[int, float]:
    """{RL seed: minuend - subtrahend} over the runs that have both figures."""
    return {run.seed: run.record[minuend] - run.record[subtrahend] for run in runs
            if run.record[minuend] is not None and run.record[subtrahend] is not None}


def _seeds(seeds: Sequence[int]) -> str:
    return ", ".join(str(seed) for seed in seeds)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


@dataclass(frozen=True)
class RewardTrend:
    """Training reward of one RL run at its start and end (mean over the first / last `window` reason steps)."""

    config: str
    sft_seed: int
    seed: int
    """The RL seed."""
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
    """Start, end and rise of the training reward per config and SFT seed over RL seeds, per run, and each config's
    rise against the default's from the same SFT checkpoint: the difference of mean rises set against 2 sd (the
    larger sd of the two over RL seeds)."""
    grouped: dict[tuple[str, int], list[RewardTrend]] = {}
    for trend in sorted(trends, key=lambda t: (t.config != DEFAULT, t.config, t.sft_seed, t.seed)):
        grouped.setdefault((trend.config, trend.sft_seed), []).append(trend)
    rows = [[config, str(sft_seed), _seeds([t.seed for t in group]), spread_text([t.initial for t in group]),
             spread_text([t.final for t in group]), spread_text([t.rise for t in group])]
            for (config, sft_seed), group in grouped.items()]
    lines = [f"## Training reward (`{key}`, mean of the first / last {window} reason steps of each RL run)", "",
             *_table(["Config", "SFT seed", "RL seeds", "Start", "End", "Rise"], rows), ""]
    lines += _table(["Config", "SFT seed", "Seed", "Start", "End", "Rise"],
                    [[t.config, str(t.sft_seed), str(t.seed), f"{t.initial:.3f}", f"{t.final:.3f}", f"{t.rise:+.3f}"]
                     for group in grouped.values() for t in group])
    lines.append("")
    for (config, sft_seed), group in grouped.items():
        default = grouped.get((DEFAULT, sft_seed))
        if config == DEFAULT or default is None or len(group) < 2 or len(default) < 2:
            continue
        (mean_d, sd_d), (mean_c, sd_c) = mean_sd([t.rise for t in default]), mean_sd([t.rise for t in group])
        difference, bound = mean_d - mean_c, 2 * max(sd_d, sd_c)
        verdict = "more than" if abs(difference) > bound else "not more than"  # either way round
        lines.append(f"- SFT seed {sft_seed}: {DEFAULT} rises {mean_d:+.3f} ± {sd_d:.3f}, {config} {mean_c:+.3f} ± "
                     f"{sd_c:.3f}: the difference {difference:+.3f} is {verdict} 2 sd ({bound:.3f}).")
    return lines


def gain_lines(runs: Sequence[SeedRun]) -> list[str]:
    """Per config and SFT seed: RL minus SFT GenEval++ strict and the R3 rounds' gain after RL
    (rl/geneval_pp_r3 - rl/geneval_pp), as mean ± sd over RL seeds and per seed."""
    rows = []
    for (config, sft_seed), group in by_group(runs).items():
        cells = [str(sft_seed)]
        for minuend, subtrahend in (("rl/geneval_pp", "sft/geneval_pp"), ("rl/geneval_pp_r3", "rl/geneval_pp")):
            gains = _differences(group, minuend, subtrahend)
            cells += [spread_text(list(gains.values())),
                      ", ".join(f"{seed}: {gain:+.3f}" for seed, gain in gains.items()) or "-"]
        rows.append([config, *cells])
    return ["## Gains (GenEval++ strict)", "",
            *_table(["Config", "SFT seed", "RL − SFT", "RL − SFT per seed", "R3 rounds after RL",
                     "R3 rounds per seed"], rows)]


def _lowest(values: Sequence[float], signed: bool = True) -> str:
    return "-" if not values else (f"{min(values):+.3f}" if signed else f"{min(values):.3f}")


def _mean(values: Sequence[float]) -> str:
    return "-" if not values else f"{statistics.fmean(values):+.3f}"


def summary_lines(runs: Sequence[SeedRun]) -> list[str]:
    """Each config over all its runs and SFT seeds: RL minus SFT GenEval++ strict (mean of the runs, the lowest mean
    of one SFT seed's runs, the lowest run), the R3 rounds' gain after RL, the other figures against SFT (means),
    the lowest render fidelity and the longest rl stage; then each config's GenEval++ after the R3 rounds against
    the default's, the mean over the SFT seeds that have both."""
    configs: dict[str, list[SeedRun]] = {}
    for run in runs:
        configs.setdefault(run.config, []).append(run)
    rows = []
    for config, group in configs.items():
        gains = [run.record["rl/geneval_pp"] - run.record["sft/geneval_pp"] for run in group]
        per_sft = [statistics.fmean(gain for run, gain in zip(group, gains) if run.sft_seed == sft_seed)
                   for sft_seed in sorted({run.sft_seed for run in group})]
        against_sft = [_mean(list(_differences(group, f"rl/{key}", f"sft/{key}").values()))
                       for key in ("geneval", "ita", "vqa", "editing")]
        seconds = _values(group, "rl_seconds")
        rows.append([config, str(len(group)), _seeds(sorted({run.sft_seed for run in group})), _mean(gains),
                     _lowest(per_sft), _lowest(gains), _mean(list(_differences(group, "rl/geneval_pp_r3",
                                                                                 "rl/geneval_pp").values())),
                     *against_sft, _lowest(_values(group, "rl/render_fidelity"), signed=False),
                     "-" if not seconds else f"{max(seconds):.0f}"])
    lines = ["## Over SFT seeds (GenEval++ strict unless named; means over runs)", "",
             *_table(["Config", "Runs", "SFT seeds", "RL − SFT", "Lowest SFT seed's RL − SFT", "Lowest run",
                      "R3 rounds after RL", "GenEval − SFT", "ITA − SFT", "VQA − SFT", "Editing − SFT",
                      "Lowest render fidelity", "Longest rl s"], rows), ""]
    after_rounds = {key: statistics.fmean(values) for key, group in by_group(runs).items()
                    if (values := _values(group, "rl/geneval_pp_r3"))}
    default = {sft_seed: value for (config, sft_seed), value in after_rounds.items() if config == DEFAULT}
    for config in configs:
        mine = {sft_seed: value for (name, sft_seed), value in after_rounds.items()
                if name == config and sft_seed in default}
        if config != DEFAULT and mine:
            differences = [default[sft_seed] - value for sft_seed, value in mine.items()]
            lines.append(f"- {DEFAULT} minus {config}, both after the R3 rounds: {_mean(differences)} (mean over SFT "
                         f"seeds {_seeds(sorted(mine))}).")
    return lines


def seeds_markdown(runs: Sequence[SeedRun], trends: Sequence[RewardTrend] = (), trend_key: str = "",
                   trend_window: int = 0, repeats: Sequence[str] = (), tail: Sequence[str] = ()) -> str:
    """reports/seeds.md: Table 1-style rows (SFT per SFT seed, then RL per config and SFT seed as mean ± sd over RL
    seeds), every figure per config, the per-seed table, the gains, each config over SFT seeds (`summary_lines`),
    scaling over rounds per config, and the training-reward trends when given, then the lines of `tail` (`runs_lines`)."""
    if not runs:
        raise ValueError("seeds_markdown: no runs with an evaluate headline")
    grouped = by_group(runs)
    by_sft: dict[int, list[SeedRun]] = {}
    for run in sorted(runs, key=lambda r: r.sft_seed):
        by_sft.setdefault(run.sft_seed, []).append(run)
    columns = [("GenEval++", "geneval_pp"), ("GenEval++ + R3", "geneval_pp_r3"), ("GenEval", "geneval"),
               ("ITA", "ita"), ("VQA", "vqa"), ("Editing", "editing"), ("Render fidelity", "render_fidelity")]

    def cells(group: Sequence[SeedRun], checkpoint: str) -> list[str]:
        return [spread_text(_values(group, f"{checkpoint}/{key}")) if f"{checkpoint}/{key}" in METRICS else "-"
                for _, key in columns]

    table1 = [["SFT", str(sft_seed), "-", *cells(group, "sft")] for sft_seed, group in by_sft.items()]
    table1 += [[f"RL ({config})", str(sft_seed), _seeds([r.seed for r in group]), *cells(group, "rl")]
               for (config, sft_seed), group in grouped.items()]
    lines = ["# Seeds", "",
             "Mean ± sample sd over RL seeds from one SFT checkpoint (one evaluation per run; its own 95% intervals "
             "are in each run's data/evaluate/report.md); an SFT row is its checkpoint as every run from it "
             "evaluated it (SFT after the R3 rounds: the scaling table). Configs are labelled by the params that "
             "differ from params.yaml; the SFT seed is base.seed, the seed the RL seed (rl.seed, else base.seed). "
             "rl_seconds: the rl stage's wall time.", "",
             "## Table 1-style: SFT per SFT seed and RL per config", "",
             *_table(["Model", "SFT seed", "RL seeds", *(title for title, _ in columns)], table1), "",
             "## Every figure per config", ""]
    lines += _table(["Config", "SFT seed", "RL seeds", *METRICS],
                    [[config, str(sft_seed), _seeds([r.seed for r in group]),
                      *(spread_text(_values(group, key), _digits(key)) for key in METRICS)]
                     for (config, sft_seed), group in grouped.items()])
    lines += ["", "## Per seed", ""]
    lines += _table(["Config", "SFT seed", "Seed", "Run", *METRICS],
                    [[run.config, str(run.sft_seed), str(run.seed), run.name,
                      *("-" if run.record[key] is None else f"{run.record[key]:.{_digits(key)}f}" for key in METRICS)]
                     for run in runs])
    lines += ["", *gain_lines(runs), "", *summary_lines(runs)]
    lines += ["", "## Table 3-style scaling (R3 loop after 0..max rounds; improved / worse: rows whose score "
              "rose / fell in that round)", ""]
    scaling_rows = []
    for (config, sft_seed), group in grouped.items():
        for checkpoint in CHECKPOINTS:
            per_seed = [run.scaling[checkpoint] for run in group if checkpoint in run.scaling]
            for k in range(min((len(rows) for rows in per_seed), default=0)):
                scaling_rows.append([config, str(sft_seed), checkpoint, str(k), str(len(per_seed)),
                                     *(spread_text([rows[k][m] for rows in per_seed])
                                       for m in ("accuracy", "finished")),
                                     *(spread_text([rows[k][m] for rows in per_seed], digits=1)
                                       for m in ("improved", "worse"))])
    lines += _table(["Config", "SFT seed", "Checkpoint", "Rounds", "Runs", "Accuracy", "Finished", "Improved",
                     "Worse"], scaling_rows)
    if trends:
        lines += ["", *trend_lines(trends, trend_key, trend_window)]
    if repeats:
        lines += ["", "Left out as repeats of an earlier run of the same config, SFT seed and seed: "
                      f"{', '.join(repeats)}."]
    if tail:
        lines += ["", *tail]
    return "\n".join(lines).rstrip() + "\n"


def experiments_first(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """`dvc exp show --json` entries reordered for `seed_runs`: every experiment, then each baseline commit without
    its experiments; the workspace (a copy of its baseline plus uncommitted edits) is left out."""
    committed = [entry for entry in entries if entry.get("rev") != "workspace"]
    experiments = [rev for entry in committed for exp_range in entry.get("experiments") or []
                   for rev in exp_range.get("revs") or []]
    return experiments + [{**entry, "experiments": None} for entry in committed]


# Run records: reports/runs/<name>.json, one per run, the committed source of reports/seeds.{json,md}.

SCALING = tuple(f"{EVALUATE}checkpoints.{name}.scaling" for name in CHECKPOINTS)
"""Where a run's R3 scaling rows sit in its flattened metrics (evaluate's per-round rows of each checkpoint)."""
MACHINE_FILES = (f"{paths.EVALUATE_METRICS}:", f"{paths.RL_METRICS}:")
"""The metrics files a record takes its machine from, the first that has one (r3.machine.machine_facts)."""
NOT_CODE = ("params.yaml", "dvc.lock", f"{paths.DATA}/", "reports/")
"""Tracked paths a run changes without changing its code: its params (a record's overrides) and its outputs."""


def figure_source(metrics: Mapping[str, Any], key: str) -> str:
    """'<file>:<dotted key>' that `figure` reads `key` of METRICS from."""
    if key in SOURCES:
        return SOURCES[key]
    if key.endswith("_r3"):
        key = key.removesuffix("_r3") + f"_r{metrics.get(f'{EVALUATE}max_rounds')}"
    return f"{EVALUATE}headline.{key}"


def missing_metrics(metrics: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(file, dotted key) of every figure of METRICS but OPTIONAL and every scaling table of SCALING that a run's
    flattened metrics lack: a record needs them all."""
    wanted = [figure_source(metrics, key) for key in METRICS if key not in OPTIONAL and figure(metrics, key) is None]
    wanted += [key for key in SCALING if not metrics.get(key)]
    return [(file, key) for file, _, key in (source.partition(":") for source in wanted)]


def machine_of(metrics: Mapping[str, Any]) -> dict[str, Any] | None:
    """The "machine" object of the first of MACHINE_FILES that has one in a run's flattened metrics; None for runs
    from before r3.machine."""
    for prefix in MACHINE_FILES:
        facts = {key.removeprefix(f"{prefix}machine."): value for key, value in metrics.items()
                 if key.startswith(f"{prefix}machine.")}
        if facts:
            return facts
    return None


def code_changes(changed_paths: Sequence[str]) -> list[str]:
    """The tracked files among `changed_paths` (against the record's commit) that are code: not NOT_CODE."""
    return sorted(path for path in changed_paths
                  if path not in NOT_CODE and not path.startswith(tuple(p for p in NOT_CODE if p.endswith("/"))))


def run_record(name: str, params: Mapping[str, Any], defaults: Mapping[str, Any], metrics: Mapping[str, Any],
               commit: str, *, experiment: str | None = None, changes: Sequence[str] = (),
               trend: Mapping[str, Any] | None = None, source: str) -> dict[str, Any]:
    """reports/runs/<name>.json of one run from its flattened params (params.yaml keys dotted), the defaults they
    are overrides of (params.yaml at `commit`) and its flattened metrics ('<file>:' keys, as rows_from_dvc gives
    them): name, source, commit (the code: the baseline of an experiment, HEAD for a workspace run), experiment
    (the DVC experiment's commit, which holds its outputs; None for a workspace run), code_changes (tracked code
    files that differ from commit), seeds, overrides, the METRICS figures, scaling ({checkpoint: per-round rows}),
    reward_trend (None when the run's curve is not at hand), machine (None for runs from before r3.machine) and a
    note. Give it metrics that `missing_metrics` passes."""
    machine = machine_of(metrics)
    return {
        "name": name,
        "source": source,
        "commit": commit,
        "experiment": experiment,
        "code_changes": code_changes(changes),
        "seeds": {SEED: params[SEED], RL_SEED: params.get(RL_SEED)},
        "overrides": overrides(params, defaults),
        "metrics": {key: figure(metrics, key) for key in METRICS},
        "scaling": {name_: metrics[f"{EVALUATE}checkpoints.{name_}.scaling"] for name_ in CHECKPOINTS},
        "reward_trend": None if trend is None else dict(trend),
        "machine": machine,
        "note": None if machine is not None else "machine not recorded: its metrics.json files predate r3.machine",
    }


def record_identity(record: Mapping[str, Any], labels: Mapping[str, str] = LABELS) -> tuple[str, int, int]:
    """(config, sft_seed, seed) of a run record, as `run_identity` gives them for its params."""
    sft_seed, rl_seed = int(record["seeds"][SEED]), record["seeds"].get(RL_SEED)
    return config_label(record["overrides"], labels), sft_seed, sft_seed if rl_seed is None else int(rl_seed)


def runs_from_records(records: Sequence[Mapping[str, Any]], labels: Mapping[str, str] = LABELS
                      ) -> tuple[list[SeedRun], list[str]]:
    """`seed_runs` over run records (give them sorted by name: the first of a (config, sft_seed, seed) wins)."""
    kept, repeats = first_of_each(records, lambda record: record_identity(record, labels))
    runs = []
    for record, (config, sft_seed, seed) in kept:
        figures = {"config": config, "seed": seed, "sft_seed": sft_seed,
                   **{key: record["metrics"].get(key) for key in METRICS}}
        runs.append(SeedRun(record["name"], config, sft_seed, seed, figures, dict(record.get("scaling") or {}),
                            dict(record)))
    return table_order(runs), repeats


def record_trends(runs: Sequence[SeedRun]) -> tuple[str, int, list[RewardTrend]]:
    """(key, window, trends) of the runs' recorded training-reward trends: those of the (key, window) most runs
    have (ties: the first in sorted order); ("", 0, []) when none has one."""
    recorded = [(run, run.origin["reward_trend"]) for run in runs if run.origin and run.origin.get("reward_trend")]
    counts: dict[tuple[str, int], int] = {}
    for _, trend in recorded:
        counts[(trend["key"], trend["window"])] = counts.get((trend["key"], trend["window"]), 0) + 1
    if not counts:
        return "", 0, []
    key, window = min(counts, key=lambda pair: (-counts[pair], pair))
    return key, window, [RewardTrend(run.config, run.sft_seed, run.seed, trend["initial"], trend["final"])
                         for run, trend in recorded if (trend["key"], trend["window"]) == (key, window)]


def machine_text(machine: Mapping[str, Any] | None) -> str:
    """One cell for a record's machine; 'not recorded' for None, '?' for a fact it lacks."""
    if machine is None:
        return "not recorded"

    def fact(key: str) -> str:
        return "?" if machine.get(key) is None else str(machine[key])

    return (f"{machine.get('cpu') or 'CPU model not recorded'}, {fact('cpu_capability')}, {fact('cores')} cores, "
            f"{fact('threads')} threads, torch {fact('torch')}, {machine.get('gpu') or 'no GPU'}")


def runs_lines(runs: Sequence[SeedRun], key: str) -> list[str]:
    """The "Runs" section of a seed view from records: each run's commit, experiment and machine, which runs lack
    scaling rows or a training-reward trend (`key`), and each run's source and note."""
    recorded = [run for run in runs if run.origin is not None]
    if not recorded:
        return []

    def commit(record: Mapping[str, Any]) -> str:
        changes = len(record.get("code_changes") or [])
        return record["commit"][:7] + (f" (+{changes} changed files)" if changes else "")

    lines = ["## Runs (reports/runs/<run>.json)", "",
             *_table(["Run", "Config", "SFT seed", "Seed", "Commit", "Experiment", "Machine"],
                     [[run.name, run.config, str(run.sft_seed), str(run.seed), commit(run.origin),
                       (run.origin.get("experiment") or "-")[:7], machine_text(run.origin.get("machine"))]
                      for run in recorded]), ""]
    no_scaling = [run.name for run in recorded if not run.scaling]
    no_trend = [run.name for run in recorded if (run.origin.get("reward_trend") or {}).get("key") != key or not key]
    if no_scaling:
        lines.append(f"- No scaling rows recorded: {', '.join(no_scaling)}.")
    if no_trend:
        lines.append(f"- No training-reward trend recorded{f' (`{key}`)' if key else ''}: {', '.join(no_trend)}.")
    for field in ("source", "note"):
        texts: dict[str, list[str]] = {}
        for run in recorded:
            if run.origin.get(field):
                texts.setdefault(run.origin[field], []).append(run.name)
        lines += [f"- {field.capitalize()} of {', '.join(names)}: {text}" for text, names in texts.items()]
    return lines


def json_text(value: Any) -> str:
    """The one spelling of a record file and of reports/seeds.json: JSON indented by 2, keys in their order."""
    return json.dumps(value, indent=2) + "\n"


def stale_params(params: Mapping[str, Any], lock: Mapping[str, Any], stages: Sequence[str]) -> list[tuple[str, str]]:
    """(stage, key) of every params.yaml param that dvc.lock (parsed) says one of `stages` ran with a value other
    than `params` (flattened params.yaml) has now: the workspace's outputs are not of these params."""
    stale = []
    for stage in stages:
        ran = flatten(((lock.get("stages") or {}).get(stage) or {}).get("params", {}).get("params.yaml") or {})
        stale += [(stage, key) for key, value in sorted(ran.items())
                  if key not in params or param_text(params[key]) != param_text(value)]
    return stale


RECORD_FIELDS = ("name", "seeds", "overrides", "metrics")
"""The fields a run record cannot do without (`runs_from_records`)."""


def record_problem(record: Any, stem: str) -> str | None:
    """What keeps reports/runs/<stem>.json from being a run record, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    lacking = [field for field in RECORD_FIELDS if field not in record]
    if lacking:
        return f"no {lacking[0]}"
    if record["name"] != stem:
        return f"its name is {record['name']!r}, not the file's"
    if SEED not in (record["seeds"] or {}):
        return f"no seeds.{SEED}"
    return None
