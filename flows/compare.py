"""Ablation table across experiments: `python -m flows.compare [--source dvc|mlflow] [--out DIR]`.

`dvc` (default) reads `dvc exp show --json` (every `dvc exp run -S ...` experiment and its baseline);
`mlflow` reads the runs of one stage from the tracking server. Writes comparison.md and
comparison.csv and prints the Markdown table.

`--seeds`: the seed view of a sweep: RL seeds sharing one SFT checkpoint (`dvc exp run --queue -S rl.seed=0,1,2 ...`,
which reruns rl and evaluate only) and SFT seeds as whole pipelines (`-S base.seed=1`). Runs are grouped by config
(every param but base.seed and rl.seed) and SFT seed: mean +- sd over RL seeds, a per-seed table, RL's gains, the
scaling over R3 rounds and the training-reward rise of each rl run; writes seeds.md and seeds.json to --seeds-out.
Its source is the run records in --runs (reports/runs/<name>.json, committed: a clone rebuilds the same files);
`--source dvc` or `--dvc-json FILE` reads `dvc exp show --json` and MLflow instead, as before records.

Run records (r3.evals.seeds.run_record): `--record NAME` writes reports/runs/NAME.json of the workspace's run
(params.yaml against HEAD's, data/{sft,rl,evaluate}/metrics.json, data/rl/history.jsonl's reward trend, HEAD);
`--record-exps` one per DVC experiment of `dvc exp show --json` (its files from its experiment commit, its overrides
against its baseline's params.yaml, its reward trend from MLflow), named by the experiment. A record whose metrics
are missing, or that would replace a different record, is refused (exit 2, nothing written); an equal one is left.

The whole seed table again, from a checkout after `make repro` (12 queued runs, one at a time: about 6 h on the
2-core CPU). The names are those of the committed records, which are never replaced: move reports/runs/*.json
away first (`git rm -q reports/runs/*.json`), or name the runs otherwise.

    export MLFLOW_TRACKING_URI=sqlite:///$PWD/mlflow.db     # queued runs work in a temp copy: curves land here
    for s in 0 1 2; do
      dvc exp run --queue -n default-rl$s -S rl.seed=$s
      dvc exp run --queue -n control-rl$s -S rl.seed=$s -S rl.reward.name=none
      dvc exp run --queue -n reason-only-rl$s -S rl.seed=$s -S rl.refine_steps=0
    done
    dvc exp run --queue -n default-sft1 -S base.seed=1
    dvc exp run --queue -n reason-only-sft1 -S base.seed=1 -S rl.refine_steps=0
    dvc exp run --queue -n nodes48-rl0 -S rl.nodes_per_step=48
    dvc queue start -j 1 && while dvc queue status | grep -qE 'Queued|Running'; do sleep 300; done
    python -m flows.compare --record-exps && python -m flows.compare --seeds   # reports/runs/*, reports/seeds.*
"""

import argparse
import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from r3 import paths
from r3.evals.compare import compare_table, flatten, rows_from_dvc, rows_from_mlflow
from r3.evals.seeds import (EVALUATE, LABELS, SEED, RewardTrend, experiments_first, json_text, missing_metrics,
                            parse_label, record_identity, record_problem, record_trends, reward_trend, run_identity,
                            run_record, runs_from_records, runs_lines, seed_runs, seeds_markdown, stale_params)
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
    raw_defaults = yaml.safe_load((args.defaults or Path("params.yaml")).read_text())
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
    (args.seeds_out / "seeds.json").write_text(json_text([run.record for run in runs]))
    print(markdown)
    return 0


RUNS = Path("reports") / "runs"
"""Where the run records live (committed)."""
STAGE_METRICS = (paths.EVALUATE_METRICS, paths.RL_METRICS, paths.SFT_METRICS)
"""The metrics files a record reads."""
LOCKED_STAGES = ("synth", "sft", "rl", "evaluate")
"""The dvc.lock stages whose params a workspace record checks against params.yaml."""
RL_HISTORY = paths.RL / "history.jsonl"
RECORD_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class Refused(Exception):
    """A record that cannot be written; the message is one line naming the file or key and the fix."""


def git_text(*args: str) -> str | None:
    """`git ARGS`' stdout, None when it fails (no repository, no such revision or file)."""
    out = subprocess.run(["git", *args], capture_output=True, text=True)
    return out.stdout if out.returncode == 0 else None


def file_metrics(texts: Mapping[Path, str | None]) -> dict[str, Any]:
    """Metrics files' texts (None: absent) flattened under '<file>:', as rows_from_dvc keys them."""
    return {key: value for path, text in texts.items() if text is not None
            for key, value in flatten(json.loads(text), f"{path.as_posix()}:").items()}


def check_metrics(metrics: Mapping[str, Any], fix: str) -> None:
    """Refused naming the first metric a record needs that `metrics` lack (and how many more)."""
    missing = missing_metrics(metrics)
    if missing:
        (file, key), more = missing[0], len(missing) - 1
        raise Refused(f"{file} has no {key}{f' (and {more} more)' if more else ''}: {fix}")


def check_name(name: str) -> None:
    if not RECORD_NAME.fullmatch(name):
        raise Refused(f"record name {name!r}: use letters, digits, '.', '_' and '-' (it names reports/runs/NAME.json)")


def history_trend(raw_params: dict, window: int) -> dict[str, Any] | None:
    """The training-reward trend of the workspace's rl run (RL_HISTORY), None without the file or enough steps."""
    if window < 1 or not RL_HISTORY.is_file():
        return None
    key = training_reward_key(raw_params)
    rows = [json.loads(line) for line in RL_HISTORY.read_text().splitlines() if line.strip()]
    trend = reward_trend(rows, key, window)
    return None if trend is None else {"key": key, "window": window, "initial": trend[0], "final": trend[1]}


def workspace_record(name: str, defaults: Path | None, window: int) -> dict[str, Any]:
    """The record of the run in the workspace: params.yaml (as dvc.lock says the stages ran it) against HEAD's
    params.yaml (or `defaults`), the stages' metrics files, the rl history's reward trend, HEAD."""
    check_name(name)
    commit = git_text("rev-parse", "HEAD")
    if commit is None:
        raise Refused("no git commit here (`git rev-parse HEAD` failed): record from the repository, after a commit")
    if not Path("params.yaml").is_file():
        raise Refused("params.yaml is missing: record from the repository's root")
    raw = yaml.safe_load(Path("params.yaml").read_text())
    params = flatten(raw)
    defaults_text = defaults.read_text() if defaults else git_text("show", "HEAD:params.yaml")
    if defaults_text is None:
        raise Refused("HEAD has no params.yaml: give the params the run's are overrides of with --defaults FILE")
    if Path("dvc.lock").is_file():
        stale = stale_params(params, yaml.safe_load(Path("dvc.lock").read_text()), LOCKED_STAGES)
        if stale:
            stage, key = stale[0]
            raise Refused(f"params.yaml: {key} is not what dvc.lock's {stage} stage ran with: run `dvc repro` "
                          "(or restore params.yaml) first")
    for path in STAGE_METRICS:
        if not path.is_file():
            raise Refused(f"{path} is missing: run the pipeline (`dvc repro`) first")
    if SEED not in params:
        raise Refused(f"params.yaml has no {SEED}")
    metrics = file_metrics({path: path.read_text() for path in STAGE_METRICS})
    check_metrics(metrics, "rerun its stage (`dvc repro`) first")
    changes = (git_text("diff", "--name-only", "HEAD") or "").splitlines()
    return run_record(name, params, flatten(yaml.safe_load(defaults_text)), metrics, commit.strip(),
                      changes=changes, trend=history_trend(raw, window),
                      source="python -m flows.compare --record (the workspace's run)")


def _raw_params(state: dict, rev: str) -> dict:
    """params.yaml of a `dvc exp show` state, else as commit `rev` holds it."""
    data = (((state.get("data") or {}).get("params") or {}).get("params.yaml") or {}).get("data")
    return data if data is not None else yaml.safe_load(git_text("show", f"{rev}:params.yaml") or "{}") or {}


def experiment_records(entries: Sequence[dict], window: int, experiment: str
                       ) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """(records, skipped, refused) of every experiment of `dvc exp show --json` entries: its metrics files from
    its experiment commit (DVC leaves list values out) over what DVC gives, its params against its baseline's,
    its reward trend from the newest matching MLflow rl run (`mlflow_trends`, none with window 0). Skipped: no
    evaluate headline (queued, running, failed); refused: one line each."""
    records, skipped, refused = [], [], []
    for baseline in entries:
        if baseline.get("rev") == "workspace":
            continue
        base_rev = str(baseline.get("rev", ""))
        raw_defaults = _raw_params(baseline, base_rev)
        defaults, batch = flatten(raw_defaults), []
        for state in (rev for exp_range in baseline.get("experiments") or [] for rev in exp_range.get("revs") or []):
            rev = str(state.get("rev", ""))
            name = state.get("name") or rev[:7]
            rows = rows_from_dvc([{**state, "experiments": None}])
            committed = file_metrics({path: git_text("show", f"{rev}:{path.as_posix()}") for path in STAGE_METRICS})
            metrics = {**committed, **(rows[0]["metrics"] if rows else {})}
            if not any(key.startswith(f"{EVALUATE}headline.") for key in metrics):
                skipped.append(name)
                continue
            params = rows[0]["params"] if rows else flatten(_raw_params(state, rev))
            try:
                check_name(name)
                if SEED not in params:
                    raise Refused(f"its params.yaml has no {SEED}")
                check_metrics(metrics, f"rerun it, or remove it (`dvc exp remove {name}`)")
            except Refused as error:
                refused.append(f"experiment {name}: {error}")
                continue
            changes = (git_text("diff", "--name-only", base_rev, rev) or "").splitlines()
            batch.append(run_record(name, params, defaults, metrics, base_rev, experiment=rev, changes=changes,
                                    source="python -m flows.compare --record-exps (a DVC experiment)"))
        if batch and window > 0:
            key = training_reward_key(raw_defaults)
            found = mlflow_trends(experiment, defaults, LABELS, key, window)
            trends = {(t.config, t.sft_seed, t.seed): t for t in found}
            for record in batch:
                trend = trends.get(record_identity(record))
                if trend is not None:
                    record["reward_trend"] = {"key": key, "window": window, "initial": trend.initial,
                                              "final": trend.final}
        records += batch
    return records, skipped, refused


def write_records(records: Sequence[dict[str, Any]], directory: Path) -> int:
    """Writes each record to directory/<name>.json; none when one would replace a different file (exit 2)."""
    texts: dict[Path, str] = {}
    for record in records:
        path = directory / f"{record['name']}.json"
        if path in texts or (path.is_file() and json.loads(path.read_text()) != record):
            print(f"error: {path} exists with other content: give the run another name or remove the file; "
                  "nothing written", file=sys.stderr)
            return 2
        texts[path] = json_text(record)
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in texts.items():
        if path.is_file():
            print(f"unchanged {path}")
        else:
            path.write_text(text)
            print(f"wrote {path}")
    return 0


def record_view(args: argparse.Namespace) -> int:
    """--record NAME / --record-exps."""
    try:
        if args.record:
            return write_records([workspace_record(args.record, args.defaults, args.reward_window)], args.runs)
        entries = json.loads(args.dvc_json.read_text()) if args.dvc_json else dvc_entries()
        records, skipped, refused = experiment_records(entries, args.reward_window, args.experiment)
    except Refused as error:
        print(f"error: {error}; nothing written", file=sys.stderr)
        return 2
    for name in skipped:
        print(f"skipped experiment {name}: no evaluate headline (queued, running or failed)", file=sys.stderr)
    for line in refused:
        print(f"error: {line}; nothing written", file=sys.stderr)
    if refused:
        return 2
    if not records:
        print("error: no experiment with an evaluate headline in `dvc exp show`", file=sys.stderr)
        return 2
    return write_records(records, args.runs)


def read_records(directory: Path) -> list[dict[str, Any]]:
    """directory/*.json in name order; Refused for a file that is not a run record."""
    records = []
    for path in sorted(directory.glob("*.json")):
        record = json.loads(path.read_text())
        problem = record_problem(record, path.stem)
        if problem:
            raise Refused(f"{path} is not a run record: {problem}")
        records.append(record)
    return records


def records_seed_view(args: argparse.Namespace) -> int:
    """--seeds from the run records: the same seeds.{md,json} on every clone."""
    try:
        records = read_records(args.runs)
    except Refused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not records:
        print(f"error: no run records in {args.runs}: write them with --record NAME or --record-exps",
              file=sys.stderr)
        return 2
    labels = {**LABELS, **dict(parse_label(label) for label in args.label)}
    runs, repeats = runs_from_records(records, labels)
    key, window, trends = record_trends(runs)
    markdown = seeds_markdown(runs, trends, key, window, repeats, tail=runs_lines(runs, key))
    args.seeds_out.mkdir(parents=True, exist_ok=True)
    (args.seeds_out / "seeds.md").write_text(markdown)
    (args.seeds_out / "seeds.json").write_text(json_text([run.record for run in runs]))
    print(markdown)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("dvc", "mlflow"),
                        help="the table's runs (default dvc); with --seeds, dvc = `dvc exp show` instead of --runs")
    parser.add_argument("--experiment", default="r3flow", help="MLflow experiment (with --source mlflow)")
    parser.add_argument("--stage", default="rl", help="MLflow stage tag to compare (with --source mlflow)")
    parser.add_argument("--metrics", nargs="*", help="metric columns to show (default: all)")
    parser.add_argument("--out", type=Path, default=paths.DATA / "compare")
    parser.add_argument("--seeds", action="store_true",
                        help="seed view: RL seed sweeps (dvc exp run --queue -S rl.seed=0,1,2 ...) and SFT seeds "
                             "(-S base.seed=1) grouped by config (see the module doc)")
    parser.add_argument("--seeds-out", type=Path, default=Path("reports"), help="where --seeds writes seeds.{md,json}")
    parser.add_argument("--runs", type=Path, default=RUNS,
                        help="the run records --seeds reads and --record / --record-exps write")
    parser.add_argument("--record", metavar="NAME", help="write --runs/NAME.json of the workspace's run")
    parser.add_argument("--record-exps", action="store_true",
                        help="write --runs/<experiment>.json of every DVC experiment of `dvc exp show --json`")
    parser.add_argument("--dvc-json", type=Path,
                        help="with --seeds or --record-exps: a saved `dvc exp show --json` to read instead")
    parser.add_argument("--defaults", type=Path,
                        help="with --seeds --source dvc: the params configs are labelled against (default "
                             "params.yaml); with --record: the params the run's are overrides of (default HEAD's)")
    parser.add_argument("--label", action="append", default=[], metavar="KEY=VALUE:NAME",
                        help="with --seeds: name a config's override, e.g. rl.beta_text=0.001:textbook-kl (repeatable)")
    parser.add_argument("--reward-key",
                        help="with --seeds: the rl runs' training-reward curve to summarise (MLflow --experiment; "
                             "default: the reward --defaults trains with, e.g. reward/verifier_strict)")
    parser.add_argument("--reward-window", type=int, default=20,
                        help="with --seeds --source dvc, --record or --record-exps: reason steps averaged at the "
                             "start and the end of each training-reward curve; 0 = skip")
    args = parser.parse_args(argv)
    if args.record or args.record_exps:
        return record_view(args)
    if args.seeds:
        return seed_view(args) if args.dvc_json or args.source == "dvc" else records_seed_view(args)
    rows = mlflow_rows(args.experiment, args.stage) if args.source == "mlflow" else dvc_rows()
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
