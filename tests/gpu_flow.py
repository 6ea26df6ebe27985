"""A flow for tests/test_gpu_limit.py, run as `python tests/gpu_flow.py OUT BARRIER N`: once N flows have reached
BARRIER (a directory), one task made long by tasks.resources.long_task on a machine that claims CUDA, so it carries
the `gpu` tag; it sleeps a second and writes its start and end times and its tags to OUT."""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402
from prefect import flow, task  # noqa: E402
from prefect.runtime import task_run  # noqa: E402

from r3.config import BaseConfig  # noqa: E402
from tasks.resources import long_task  # noqa: E402


@task(name="hold-gpu")
def hold_gpu(out: str) -> None:
    started = time.time()
    time.sleep(1.0)
    Path(out).write_text(json.dumps({"start": started, "end": time.time(), "tags": sorted(task_run.tags)}))


@flow(name="gpu-user")
def gpu_user(out: str, barrier: str, flows: int) -> None:
    (Path(barrier) / out.replace("/", "_")).touch()
    while len(list(Path(barrier).iterdir())) < flows:  # without a limit, the tasks would now overlap
        time.sleep(0.05)
    long_task(hold_gpu, BaseConfig())(out)


if __name__ == "__main__":
    torch.cuda.is_available = lambda: True  # the tag follows the device; this machine may have none
    gpu_user(sys.argv[1], sys.argv[2], int(sys.argv[3]))
