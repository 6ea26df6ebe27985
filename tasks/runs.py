"""Killed stage runs end honestly: the next run of the same stage marks them crashed in Prefect and killed in MLflow.

A stage killed with `kill -9` (or by the OOM killer, or a lost machine) cannot report its own end, so its Prefect
flow run and its MLflow run would show "running" forever. While a stage runs, it keeps a record in
`$PREFECT_HOME/runs/<stage>.<pid>.json`: its process (pid and start time), its Prefect flow run and its MLflow
run. Its own end, a success or a failure, removes the record; a kill leaves it. The next run of the stage reads
the records of that stage whose process is gone: their flow run (and its unfinished task runs) becomes Crashed,
their MLflow run KILLED and tagged `ended_by_run`, and the new run is tagged `after_killed_run`. A record of a
live process (the same stage running at the same time) is left alone. Records are per machine and per Prefect
home, as the ephemeral API's database is.
"""

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from uuid import UUID

import mlflow
import psutil
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import TaskRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Crashed

UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.PAUSED, StateType.CANCELLING]
"""Prefect state types that a killed process leaves its runs in."""


def records_dir() -> Path:
    return Path(os.environ["PREFECT_HOME"]) / "runs"


def process_start(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), None when it is gone or a zombie."""
    try:
        process = psutil.Process(pid)
        return None if process.status() == psutil.STATUS_ZOMBIE else process.create_time()
    except psutil.NoSuchProcess:
        return None


@contextmanager
def recorded(stage: str, flow_run_id: str | None, mlflow_run_id: str) -> Iterator[None]:
    """Keep this process's record of a running stage for the duration of the block."""
    path = records_dir() / f"{stage}.{os.getpid()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stage": stage, "pid": os.getpid(), "started": process_start(os.getpid()),
                                "flow_run_id": flow_run_id, "mlflow_run_id": mlflow_run_id}))
    try:
        yield
    finally:
        path.unlink(missing_ok=True)


def crash_flow_run(flow_run_id: str, message: str) -> None:
    """Mark a flow run and its unfinished task runs Crashed (nothing, if this Prefect API does not know it)."""
    with get_client(sync_client=True) as client:
        try:
            client.set_flow_run_state(flow_run_id, Crashed(message=message), force=True)
        except ObjectNotFound:
            return
        unfinished = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(flow_run_id)])),
            task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))),
            sort=TaskRunSort.EXPECTED_START_TIME_ASC, limit=200)  # the API's page size; a stage has a handful
        for task_run in unfinished:
            client.set_task_run_state(task_run.id, Crashed(message=message), force=True)


def end_killed_runs(stage: str, new_run_id: str) -> list[str]:
    """End the earlier runs of `stage` whose process was killed; returns their MLflow run ids, oldest first."""
    client = mlflow.MlflowClient()
    killed = []
    records = [json.loads(path.read_text()) | {"path": path} for path in records_dir().glob(f"{stage}.*.json")]
    for record in sorted((r for r in records if r["stage"] == stage), key=lambda r: r["started"] or 0.0):
        now = process_start(record["pid"])
        if now is not None and record["started"] is not None and abs(now - record["started"]) < 0.01:
            continue  # still running (the same process, not a later one given the same pid)
        message = f"process {record['pid']} was killed; found by MLflow run {new_run_id} of the next {stage} run"
        if record["flow_run_id"] is not None:
            crash_flow_run(record["flow_run_id"], message)
        try:
            client.set_terminated(record["mlflow_run_id"], status=RunStatus.to_string(RunStatus.KILLED))
            client.set_tag(record["mlflow_run_id"], "ended_by_run", new_run_id)
            killed.append(record["mlflow_run_id"])
        except MlflowException:  # a run of another tracking store
            pass
        record["path"].unlink(missing_ok=True)
    return killed
