"""Killed runs end honestly: a stage killed with SIGKILL leaves no Prefect API server behind, and the next run of
the stage marks its Prefect flow run Crashed and its MLflow run KILLED (tasks.runs, tasks.prefect_server)."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import psutil
import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import TaskRunSort

import tasks.rl
from flows import rl as rl_stage
from r3 import paths
from r3.config import BaseConfig
from r3.rl.config import RlConfig
from r3.train.frame import TrainResult

STAGE = Path(__file__).with_name("killable_stage.py")
SERVER_APP = "prefect.server.api.server:create_app"


def start_stage(params: Path, started: Path, seconds: float) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(STAGE), str(params), str(started), str(seconds)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def prefect_servers_of_this_session() -> list[psutil.Process]:
    """Ephemeral Prefect API servers on this session's Prefect home that are not the test process's own."""
    mine = {child.pid for child in psutil.Process().children(recursive=True)}
    found = []
    for process in psutil.process_iter(["cmdline"]):
        try:
            if (SERVER_APP in " ".join(process.info["cmdline"] or ()) and process.pid not in mine and not gone(process)
                    and process.environ().get("PREFECT_HOME") == os.environ["PREFECT_HOME"]):
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


def test_sigkilled_stage_is_ended_by_the_next_run_and_leaves_no_server(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("base: {experiment: killed-runs}\n")
    started = tmp_path / "started"

    killed = start_stage(params, started, seconds=120)
    wait_for(lambda: started.exists() or killed.poll() is not None, 60, "the stage's task to start")
    assert killed.poll() is None, killed.communicate()[0]
    servers = [p for p in psutil.Process(killed.pid).children(recursive=True)
               if SERVER_APP in " ".join(p.cmdline())]
    assert servers, "the stage runs its own ephemeral Prefect API server"
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    wait_for(lambda: all(gone(p) for p in servers), 10, "the killed stage's server to die with it")

    next_run = start_stage(params, tmp_path / "started-again", seconds=0)
    output, _ = next_run.communicate(timeout=90)
    assert next_run.returncode == 0, output
    assert prefect_servers_of_this_session() == [], "no Prefect API server outlives its stage"

    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name("killed-runs")
    old, new = sorted(client.search_runs([experiment.experiment_id]), key=lambda run: run.info.start_time)
    assert old.info.status == "KILLED" and old.info.end_time is not None
    assert new.info.status == "FINISHED"
    assert new.data.tags["after_killed_run"] == old.info.run_id
    assert old.data.tags["ended_by_run"] == new.info.run_id

    with get_client(sync_client=True) as prefect:
        flow_run = prefect.read_flow_run(old.data.tags["prefect_flow_run_id"])
        task_runs = prefect.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run.id])),
                                           sort=TaskRunSort.ID_DESC, limit=10)
        next_flow_run = prefect.read_flow_run(new.data.tags["prefect_flow_run_id"])
    assert flow_run.state.type == StateType.CRASHED
    assert [t.state.type for t in task_runs] == [StateType.CRASHED]
    assert next_flow_run.state.type == StateType.COMPLETED


def test_rl_run_that_resumes_a_killed_runs_checkpoints_names_it(tmp_path, monkeypatch):
    """The RL task's artifact directory names the run that trained there: a rerun that resumes from its checkpoints
    is tagged `resumed_from` with it and gets the curves of the steps it did not train itself."""
    for path in (paths.SFT_CHECKPOINT, paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT):
        (tmp_path / path).mkdir(parents=True)
        (tmp_path / path / "file").write_text(str(tmp_path))  # unique inputs: no cache hit
    monkeypatch.chdir(tmp_path)

    def train_rl(base, cfg, init_checkpoint, synth_dir, out_dir, log):
        """Steps 0-2, then a kill; a rerun resumes at step 3 and ends at step 5."""
        history = out_dir / "history.jsonl"
        done = history.read_text().splitlines() if history.exists() else []
        with history.open("a") as file:
            for step in range(len(done), 6):
                if step == 3 and not done:
                    raise KeyboardInterrupt("killed")
                file.write(json.dumps({"step": step, "reward/reason_mean": step / 10}) + "\n")
                log({"reward/reason_mean": step / 10}, step)
        (out_dir / "checkpoint").mkdir()
        (out_dir / "samples").mkdir()
        (out_dir / "metrics.json").write_text("{}")
        return TrainResult(out_dir / "checkpoint", {"headline": {"vqa": 0.5}}, history, [])

    monkeypatch.setattr(tasks.rl, "train_rl", train_rl)
    base = BaseConfig(experiment="resumes", system_metrics=False)
    with pytest.raises(KeyboardInterrupt):
        rl_stage.rl_flow(base, RlConfig())
    rl_stage.rl_flow(base, RlConfig())

    client = mlflow.MlflowClient()
    first, rerun = sorted(client.search_runs([client.get_experiment_by_name("resumes").experiment_id]),
                          key=lambda run: run.info.start_time)
    assert rerun.data.tags["resumed_from"] == first.info.run_id
    assert rerun.data.tags["resumed_at_step"] == "3"
    curve = client.get_metric_history(rerun.info.run_id, "reward/reason_mean")
    assert sorted(m.step for m in curve) == [0, 1, 2, 3, 4, 5]
    assert "resumed_from" not in first.data.tags
    assert sorted(i.dataset.name for i in rerun.inputs.dataset_inputs) == ["data/synth/heldout", "data/synth/train"]
