"""MLflow run management owned by the flows: one run per stage, tagged with stage and commit.

Runs go to MLFLOW_TRACKING_URI when it is set (a tracking server: http://host:5000), else to ./mlflow.db
with artifacts under ./mlartifacts.
"""

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.data.dataset_source_registry import get_dataset_source_from_json
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import Metric
from mlflow.environment_variables import MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
from prefect.runtime import flow_run as prefect_flow_run
from pydantic import BaseModel

from r3.machine import machine_facts
from tasks._env import PROJECT_ROOT
from tasks.runs import end_killed_runs, recorded

# MLflow announces creating and migrating its sqlite store at INFO on stderr on a stage's first run; a stage's
# stderr is for its progress and its one-line errors.
logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)

DEFAULT_TRACKING_URI = f"sqlite:///{PROJECT_ROOT / 'mlflow.db'}"
ARTIFACT_ROOT = PROJECT_ROOT / "mlartifacts"
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
"""MLflow 3's experiment-kind tag: the UI opens the experiment in its model-training view (runs table), not the GenAI
overview."""
SYSTEM_METRICS_INTERVAL = 10.0
"""MLflow's sampling interval of system metrics (seconds) unless MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL is set."""


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, Mapping):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = json.dumps(value) if isinstance(value, (list, tuple)) else value


def flat_params(configs: Mapping[str, BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, config in configs.items():
        _flatten(name, config.model_dump(mode="json"), out)
    return out


@contextmanager
def stage_run(stage: str, experiment: str, configs: Mapping[str, BaseModel], system_metrics: bool = False,
              inputs: Sequence[Path] = ()) -> Iterator[mlflow.ActiveRun]:
    """Open an MLflow run for one stage, tagged with its stage, commit and machine (`machine.*`: r3.machine; the
    threads are base.num_threads); with `system_metrics`, a background thread logs `system/*` usage
    (CPU, memory, disk, network; GPU with nvidia-ml-py) every sampling interval until the run ends.

    Inside a flow the run is tagged with its Prefect flow run (`prefect_flow_run_id`). Earlier runs of the stage
    whose process was killed are ended first (tasks.runs): the new run is tagged `after_killed_run` with their ids.
    `inputs` (the tables a training stage reads) are logged as MLflow datasets (`log_input_tables`).
    """
    tracking_uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    mlflow.set_tracking_uri(tracking_uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        # A tracking server stores artifacts where it was told to (--artifacts-destination), not here.
        server = tracking_uri.startswith(("http://", "https://"))
        mlflow.create_experiment(experiment, artifact_location=None if server else ARTIFACT_ROOT.as_uri(),
                                 tags=dict([EXPERIMENT_KIND]))
    mlflow.set_experiment(experiment)
    base = configs.get("base")
    threads = getattr(base, "num_threads", None)
    tags = {"stage": stage, "git_commit": git_commit(),
            **{f"machine.{k}": str(v) for k, v in machine_facts(threads).items()}}
    flow_run_id = prefect_flow_run.id
    if flow_run_id is not None:
        tags["prefect_flow_run_id"] = flow_run_id
    with mlflow.start_run(run_name=stage, tags=tags, log_system_metrics=system_metrics) as run:
        killed = end_killed_runs(stage, run.info.run_id)
        if killed:
            mlflow.set_tag("after_killed_run", ",".join(killed))
        params = flat_params(configs)
        if system_metrics:
            params["system_metrics.sampling_interval"] = (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL.get()
                                                          or SYSTEM_METRICS_INTERVAL)
        mlflow.log_params(params)
        log_input_tables(inputs)
        with recorded(stage, flow_run_id, run.info.run_id):
            yield run


def dvc_md5(path: Path) -> str:
    """The content hash DVC records for `path` in dvc.lock: the md5 of a file's bytes; for a directory, the md5 of
    the JSON list of its files' {"md5", "relpath"} sorted by relpath, with ".dir" appended. Computed from the
    files rather than read from dvc.lock, which still holds the previous run's hashes while a stage runs (and any
    run outside `dvc repro` leaves it behind the data)."""
    if path.is_file():
        return hashlib.md5(path.read_bytes()).hexdigest()
    entries = sorted(({"md5": dvc_md5(file), "relpath": file.relative_to(path).as_posix()}
                      for file in path.rglob("*") if file.is_file()), key=lambda entry: entry["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode()).hexdigest() + ".dir"


def log_input_tables(paths: Sequence[Path]) -> None:
    """Log each input (a table or a directory of tables) of the active run as an MLflow dataset: its path as name
    and source, its DVC hash as digest, so the UI shows which data version trained the run's checkpoint."""
    for path in paths:
        source = get_dataset_source_from_json(json.dumps({"uri": path.as_posix()}), source_type="local")
        dataset = MetaDataset(source, name=path.as_posix(), digest=dvc_md5(path))
        mlflow.log_input(dataset, context="training")


def log_json_metrics(metrics: Mapping[str, Any], prefix: str = "") -> None:
    """Log every numeric leaf of a nested metrics dict under a `/`-joined key."""
    flat: dict[str, Any] = {}
    _flatten(prefix, metrics, flat)
    numeric = {k.replace(".", "/"): float(v) for k, v in flat.items() if isinstance(v, (int, float))}
    mlflow.log_metrics(numeric)


def log_artifacts(paths: list[Path]) -> None:
    """Files go to the run's artifact root, directories into a folder of their own name."""
    for path in paths:
        if path.is_dir():
            mlflow.log_artifacts(str(path), artifact_path=path.name)
        elif path.exists():
            mlflow.log_artifact(str(path))


def metric_logger(run_id: str | None):
    """A `(metrics, step) -> None` callback that logs into the given run from any thread; None logs nothing
    (the other processes of a multi-process training run)."""
    if run_id is None:
        return lambda metrics, step: None
    client = mlflow.MlflowClient()

    def log(metrics: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        client.log_batch(run_id, metrics=[Metric(k, float(v), now, step) for k, v in metrics.items()])

    return log


def replay_history(history: Path, run_id: str, before_step: int | None = None) -> None:
    """Log a cached training run's recorded curves (history.jsonl) into a new run; with `before_step`, only the
    steps before it (what a resumed run trained before it was killed)."""
    log = metric_logger(run_id)
    for line in history.read_text().splitlines():
        entry = json.loads(line)
        step = entry.pop("step")
        if before_step is None or step < before_step:
            log(entry, step)
