"""Two flows started together against a real `prefect server start` (loopback, free port, temporary Prefect home)
with docs/scale-out.md's tag limit `prefect concurrency-limit create gpu 1` run their `gpu`-tagged tasks one after
the other (tasks.resources)."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from r3.config import BaseConfig
from tasks.resources import GPU_TAG, long_task
from tasks.sft import train_task

FLOW = Path(__file__).with_name("gpu_flow.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """Environment of a client of a Prefect server started (and stopped) for this module."""
    home, port = tmp_path_factory.mktemp("prefect-server"), free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_LOCAL_STORAGE_PATH": str(home / "storage"),
           "PREFECT_UI_ENABLED": "false", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PREFECT_API_URL", None)
    server = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
                               "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while True:
        assert server.poll() is None, "prefect server start exited"
        assert time.monotonic() < deadline, "prefect server did not come up"
        try:
            if httpx.get(f"{api}/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.3)
    try:
        yield {**env, "PREFECT_API_URL": api}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_two_flows_run_their_gpu_tasks_one_after_the_other(prefect_server, tmp_path):
    subprocess.run([sys.executable, "-m", "prefect", "concurrency-limit", "create", GPU_TAG, "1"],
                   env=prefect_server, check=True, capture_output=True)
    outs, barrier = [tmp_path / f"flow{i}.json" for i in range(2)], tmp_path / "barrier"
    barrier.mkdir()
    flows = [subprocess.Popen([sys.executable, str(FLOW), str(out), str(barrier), "2"], env=prefect_server)
             for out in outs]
    assert [flow.wait(timeout=120) for flow in flows] == [0, 0]
    first, second = sorted((json.loads(out.read_text()) for out in outs), key=lambda run: run["start"])
    assert first["tags"] == second["tags"] == [GPU_TAG]
    assert first["end"] <= second["start"], "the gpu-tagged tasks overlapped"


def test_long_tasks_take_the_timeout_from_params_and_the_tag_from_the_device(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    task = long_task(train_task, BaseConfig(timeout_minutes=1.5))
    assert task.timeout_seconds == 90 and GPU_TAG in task.tags
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    untagged = long_task(train_task, BaseConfig())
    assert untagged.tags == set() and untagged.timeout_seconds is None
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    assert GPU_TAG not in long_task(train_task, BaseConfig(), holds_model=False).tags
    assert "timeout_minutes" not in BaseConfig(timeout_minutes=1.5).model_dump()  # not in cache keys nor params
