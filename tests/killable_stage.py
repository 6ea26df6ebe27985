"""A stage-like flow for tests/test_run_states.py, run as `python tests/killable_stage.py PARAMS STARTED SECONDS`:
through the stages' CLI (the ephemeral Prefect server, stage_run's MLflow run and run record), it writes STARTED
once its task runs, then sleeps SECONDS inside the task (long enough to be killed)."""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prefect import flow, task  # noqa: E402

from flows.cli import run_stage_cli  # noqa: E402
from r3.config import BaseConfig  # noqa: E402
from tasks.tracking import stage_run  # noqa: E402


@task(name="probe-work")
def work(started: str, seconds: float) -> None:
    Path(started).write_text("running")
    time.sleep(seconds)


@flow(name="probe")
def probe_flow(base: BaseConfig) -> None:
    with stage_run("probe", base.experiment, {"base": base}):
        work(sys.argv[2], float(sys.argv[3]))


if __name__ == "__main__":
    raise SystemExit(run_stage_cli("probe", {"base": BaseConfig}, probe_flow, ["--params", sys.argv[1]]))
