"""Ablation table across experiments: `python -m flows.compare [--source dvc|mlflow] [--out DIR]`.

`dvc` (default) reads `dvc exp show --json` (every `dvc exp run -S ...` experiment and its baseline);
`mlflow` reads the runs of one stage from the tracking server. Writes comparison.md and
comparison.csv and prints the Markdown table.

`--seeds`: the seed view of a sweep from `dvc exp show --json` (or a saved copy, `--dvc-json`): RL seeds sharing one
SFT checkpoint (`dvc exp run --queue -S rl.seed=0,1,2 ...`, which reruns rl and evaluate only) and SFT seeds as
whole pipelines (`-S base.seed=1`). Runs are grouped by config (every param but base.seed and rl.seed) and SFT
seed: mean +- sd over RL seeds, a per-seed table, RL's gains, and the training-reward rise of each MLflow rl run;
writes seeds.md and seeds.json to --seeds-out.
"""

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from r3 import paths
from r3.evals.compare import compare_table, flatten, rows_from_dvc, rows_from_mlflow
from r3.evals.seeds import (EVALUATE, LABELS, SEED, RewardTrend, experiments_first, parse_label, reward_trend,
                            run_identity, seed_runs, seeds_markdown)
from r3.rewards.base import WeightedReward, build_reward
from r3.rl.config import RlConfig


def dvc_entries() -> list[dict]:
    out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(out.stdout)


def dvc_rows() -> list[dict]:
    return rows_from_dvc(dvc_entries(), metrics_file=str(paths.EVALUATE_METRICS))


def _mlflow_runs(experiment: str, stage: str) -> list:
    """The stage's runs, newest first."""
    import mlflow

    from tasks.tracking import DEFAULT_TRACKING_URI

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    return mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.stage = '{stage}'",
                              output_format="list")


def mlflow_rows(experiment: str, stage: str) -> list[dict]:
    return rows_from_mlflow([run.to_dictionary() for run in _mlflow_runs(experiment, stage)])


def mlflow_trends(experiment: str, defaults: dict, labels: dict[str, str], key: str, window: int) -> list[RewardTrend]:
    """The training-reward trend of the newest rl run of each (config, SFT seed, RL seed); the config from the run's
    params that params.yaml names (MLflow also logs every other config field)."""
    import mlflow

    client, trends, seen = mlflow.MlflowClient(), [], set()
    for run in _mlflow_runs(experiment, "rl"):
        params = {k: v for k, v in run.data.params.items() if k in defaults}
        if SEED not in params:
            continue
        identity = run_identity(params, defaults, labels)
        if identity in seen:
            continue
        steps: dict[int, dict] = {}
        for name in (key, "reward/reason_mean"):
            for metric in client.get_metric_history(run.info.run_id, name):
                steps.setdefault(metric.step, {"step": metric.step})[name] = metric.value
        trend = reward_trend(list(steps.values()), key, window)
        if trend is not None:
            seen.add(identity)
            trends.append(RewardTrend(*identity, *trend))
    return trends


def committed_metrics(rev: str) -> dict | None:
    """The evaluate metrics file as run `rev` committed it (the workspace's own file for "workspace"), or None."""
    if rev == "workspace":
        return json.loads(paths.EVALUATE_METRICS.read_text()) if paths.EVALUATE_METRICS.is_file() else None
    out = subprocess.run(["git", "show", f"{rev}:{paths.EVALUATE_METRICS.as_posix()}"], capture_output=True, text=True)
    return json.loads(out.stdout) if out.returncode == 0 else None


def with_list_metrics(rows: list[dict]) -> list[dict]:
    """`dvc exp show --json` leaves list-valued metrics out (the R3 rounds' scaling rows): add them from each run's
    committed metrics file; what `dvc exp show` gave wins."""
    for row in rows:
        committed = committed_metrics(row["rev"])
        if committed is not None:
            row["metrics"] = {**flatten(committed, EVALUATE), **row["metrics"]}
    return rows


def training_reward_key(params: dict) -> str:
    """The MLflow key of the rl stage's training reward under `params` (params.yaml's content): reward/<its name>,
    or of a weighted reward's heaviest component (the rl stage logs a weighted reward's components, not its sum)."""
    reward = build_reward(RlConfig(**params.get("rl", {})).reward)
    if isinstance(reward, WeightedReward):
        reward = max(zip(reward.weights, reward.rewards), key=lambda pair: pair[0])[1]
    return f"reward/{reward.name}"


def seed_view(args: argparse.Namespace) -> int:
    entries = json.loads(args.dvc_json.read_text()) if args.dvc_json else dvc_entries()
    raw_defaults = yaml.safe_load(args.defaults.read_text())
    defaults = flatten(raw_defaults)
    reward_key = args.reward_key or training_reward_key(raw_defaults)
    labels = {**LABELS, **dict(parse_label(label) for label in args.label)}
    runs, repeats = seed_runs(with_list_metrics(rows_from_dvc(experiments_first(entries))), defaults, labels)
    if not runs:
        print("error: no experiment with base.seed and an evaluate headline in `dvc exp show`", file=sys.stderr)
        return 2
    trends = [] if args.reward_window == 0 else mlflow_trends(args.experiment, defaults, labels, reward_key,
                                                              args.reward_window)
    markdown = seeds_markdown(runs, trends, reward_key, args.reward_window, repeats)
    args.seeds_out.mkdir(parents=True, exist_ok=True)
    (args.seeds_out / "seeds.md").write_text(markdown)
    (args.seeds_out / "seeds.json").write_text(json.dumps([run.record for run in runs], indent=2) + "\n")
    print(markdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("dvc", "mlflow"), default="dvc")
    parser.add_argument("--experiment", default="r3flow", help="MLflow experiment (with --source mlflow)")
    parser.add_argument("--stage", default="rl", help="MLflow stage tag to compare (with --source mlflow)")
    parser.add_argument("--metrics", nargs="*", help="metric columns to show (default: all)")
    parser.add_argument("--out", type=Path, default=paths.DATA / "compare")
    parser.add_argument("--seeds", action="store_true",
                        help="seed view: RL seed sweeps (dvc exp run --queue -S rl.seed=0,1,2 ...) and SFT seeds "
                             "(-S base.seed=1) grouped by config (see the module doc)")
    parser.add_argument("--seeds-out", type=Path, default=Path("reports"), help="where --seeds writes seeds.{md,json}")
    parser.add_argument("--dvc-json", type=Path, help="with --seeds: a saved `dvc exp show --json` to read instead")
    parser.add_argument("--defaults", type=Path, default=Path("params.yaml"),
                        help="with --seeds: the params configs are labelled against")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE:NAME",
                        help="with --seeds: name a config's override, e.g. rl.beta_text=0.001:textbook-kl (repeatable)")
    parser.add_argument("--reward-key",
                        help="with --seeds: the rl runs' training-reward curve to summarise (MLflow --experiment; "
                             "default: the reward --defaults trains with, e.g. reward/verifier_strict)")
    parser.add_argument("--reward-window", type=int, default=20,
                        help="with --seeds: reason steps averaged at the start and the end of each curve; 0 = skip")
    args = parser.parse_args(argv)
    if args.seeds:
        return seed_view(args)
    rows = dvc_rows() if args.source == "dvc" else mlflow_rows(args.experiment, args.stage)
    if not rows:
        print(f"error: no runs found in {args.source}", file=sys.stderr)
        return 2
    markdown, table = compare_table(rows, args.metrics)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "comparison.md").write_text(markdown)
    (args.out / "comparison.csv").write_text(table)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
