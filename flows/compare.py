"""Ablation table across experiments: `python -m flows.compare [--source dvc|mlflow] [--out DIR]`.

`dvc` (default) reads `dvc exp show --json` (every `dvc exp run -S ...` experiment and its baseline);
`mlflow` reads the runs of one stage from the tracking server. Writes comparison.md and
comparison.csv and prints the Markdown table.
"""

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from r3 import paths
from r3.evals.compare import compare_table, rows_from_dvc, rows_from_mlflow


def dvc_rows() -> list[dict]:
    out = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"`dvc exp show --json` failed: {out.stderr.strip().splitlines()[-1:]}")
    return rows_from_dvc(json.loads(out.stdout), metrics_file=str(paths.EVALUATE_METRICS))


def mlflow_rows(experiment: str, stage: str) -> list[dict]:
    import mlflow

    from tasks.tracking import DEFAULT_TRACKING_URI

    mlflow.set_tracking_uri(os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI))
    runs = mlflow.search_runs(experiment_names=[experiment], filter_string=f"tags.stage = '{stage}'",
                              output_format="list")
    return rows_from_mlflow([run.to_dictionary() for run in runs])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=("dvc", "mlflow"), default="dvc")
    parser.add_argument("--experiment", default="r3flow", help="MLflow experiment (with --source mlflow)")
    parser.add_argument("--stage", default="rl", help="MLflow stage tag to compare (with --source mlflow)")
    parser.add_argument("--metrics", nargs="*", help="metric columns to show (default: all)")
    parser.add_argument("--out", type=Path, default=paths.DATA / "compare")
    args = parser.parse_args(argv)
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
