"""A stage-like flow for tests/test_run_states.py, run as `python tests/killable_stage.py PARAMS STARTED SECONDS`:
through the stages' CLI (the ephemeral Prefect server, stage_run's MLflow run and run record), it writes STARTED
once the Prefect API has recorded its task run as running (task runs reach the API as events, asynchronously, so
a kill before that would leave the API nothing to crash), then sleeps SECONDS inside the task (long enough to be
killed)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, runtime, task  # noqa: E402
from prefect.client.orchestration import get_client  # noqa: E402
from prefect.client.schemas.objects import StateType  # noqa: E402
from prefect.exceptions import ObjectNotFound  # noqa: E402

from flows.cli import run_stage_cli  # noqa: E402
from r3.config import BaseConfig  # noqa: E402
from tasks.tracking import stage_run  # noqa: E402


def wait_until_recorded_running(task_run_id: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            try:
                state = client.read_task_run(task_run_id).state  # None until the first state event lands
            except ObjectNotFound:
                state = None
            if state is not None and state.type == StateType.RUNNING:
                return
            time.sleep(0.1)
    raise TimeoutError(f"the Prefect API did not record task run {task_run_id} as running in {timeout} s")


@task(name="probe-work")
def work(started: str, seconds: float) -> None:
    wait_until_recorded_running(runtime.task_run.id, timeout=60.0)
    Path(started).write_text("running")
    time.sleep(seconds)


@flow(name="probe")
def probe_flow(base: BaseConfig) -> None:
    with stage_run("probe", base.experiment, {"base": base}):
        work(sys.argv[2], float(sys.argv[3]))


if __name__ == "__main__":
    raise SystemExit(run_stage_cli("probe", {"base": BaseConfig}, probe_flow, ["--params", sys.argv[1]]))
