"""Ablation comparison: knob values and headline metrics of several runs side by side (Markdown and CSV).

A row is {"name": str, "params": {dotted key: value}, "metrics": {key: float}}. Readers turn MLflow
runs or `dvc exp show --json` output into rows; `compare_table` lays them out, showing only the
params whose values differ between rows (the knobs of the ablation).
"""

import csv
import io
import json
from collections.abc import Sequence
from typing import Any


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _prefixed(record: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in record.items() if k.startswith(prefix) and v is not None}


def rows_from_mlflow(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows from MLflow runs given as `Run.to_dictionary()` ({"info": {...}, "data": {"params", "metrics", ...}})
    or as records of `mlflow.search_runs()` ({"run_id", "tags.mlflow.runName", "params.x", "metrics.y", ...})."""
    rows = []
    for run in runs:
        if "info" in run:
            info, data = run["info"], run.get("data", {})
            name = info.get("run_name") or info.get("run_id", "?")
            params, metrics = dict(data.get("params", {})), dict(data.get("metrics", {}))
        else:
            name = run.get("tags.mlflow.runName") or run.get("run_id", "?")
            params, metrics = _prefixed(run, "params."), _prefixed(run, "metrics.")
        rows.append({"name": str(name), "params": params, "metrics": metrics})
    return rows


def _exp_states(entries: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every experiment state of `dvc exp show --json`: each baseline, then the experiments under it."""
    states = []
    for entry in entries:
        states.append(entry)
        for exp_range in entry.get("experiments") or []:
            states += _exp_states(exp_range.get("revs") or [])
    return states


def _short_rev(rev: str) -> str:
    """A git sha shortened to 7 characters; other revs ('workspace') as they are."""
    return rev[:7] if len(rev) > 7 and all(c in "0123456789abcdef" for c in rev) else rev


def rows_from_dvc(entries: Sequence[dict[str, Any]], metrics_file: str | None = None) -> list[dict[str, Any]]:
    """Rows from `dvc exp show --json` (a list of {"rev", "name", "data": {"params", "metrics"}, "experiments"}).

    Params are keyed "section.key" for params.yaml and "<file>:section.key" for other params files; metrics
    are keyed by their dotted path, prefixed "<file>:" unless `metrics_file` selects a single file.
    States without data (failed or queued experiments) are skipped.
    """
    rows = []
    for state in _exp_states(entries):
        data = state.get("data")
        if not data:
            continue
        params: dict[str, Any] = {}
        for path, result in (data.get("params") or {}).items():
            prefix = "" if path == "params.yaml" else f"{path}:"
            params.update(flatten(result.get("data") or {}, prefix))
        metrics: dict[str, Any] = {}
        for path, result in (data.get("metrics") or {}).items():
            if metrics_file is None or path == metrics_file:
                metrics.update(flatten(result.get("data") or {}, "" if metrics_file else f"{path}:"))
        name = state.get("name") or _short_rev(str(state.get("rev", "?")))
        rows.append({"name": name, "rev": str(state.get("rev", "")), "params": params, "metrics": metrics})
    return rows


def _text(value: Any, digits: int | None = None) -> str:
    """A cell: empty for missing, JSON for lists, floats with `digits` significant digits (None: full precision)."""
    if value is None:
        return ""
    if isinstance(value, float) and digits is not None:
        return f"{value:.{digits}g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def compare_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] | None = None) -> tuple[str, str]:
    """(markdown, csv) with one line per run: its name, the params that differ between runs, then the metrics.

    `metrics` picks and orders the metric columns (default: every metric of any run, sorted). With a
    single run every param is shown. Missing values are left empty.
    """
    if not rows:
        raise ValueError("compare_table: no runs to compare")
    param_keys = sorted({k for row in rows for k in row["params"]})
    if len(rows) > 1:
        param_keys = [k for k in param_keys if len({_text(row["params"].get(k)) for row in rows}) > 1]
    metric_keys = list(metrics) if metrics is not None else sorted({k for row in rows for k in row["metrics"]})
    header = ["run", *param_keys, *metric_keys]

    def line(row: dict[str, Any], digits: int | None) -> list[str]:
        return [row["name"], *(_text(row["params"].get(k)) for k in param_keys),
                *(_text(row["metrics"].get(k), digits) for k in metric_keys)]

    def markdown_line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    markdown = [markdown_line(header), "|" + "---|" * len(header)] + [markdown_line(line(row, 4)) for row in rows]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(line(row, None) for row in rows)
    return "\n".join(markdown) + "\n", buffer.getvalue()
