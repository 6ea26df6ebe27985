"""Prefect task runners built from the `runner` section of params.yaml.

`thread` runs tasks in a thread pool of the flow's process (torch releases the GIL in its kernels).
`dask` starts a local cluster of `workers` single-threaded workers (processes, or threads with
`processes: false`), or connects to the running scheduler at `address`. Worker processes report
their task runs to the flow's Prefect API, also when that is the ephemeral server that a plain
`python -m flows.<stage>` starts.
"""

from prefect.client.orchestration import get_client
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner

from r3.config import RunnerConfig


def prefect_api_url() -> str:
    """The API this process reports to (the ephemeral server is started if it is not running yet)."""
    return str(get_client(sync_client=True).api_url)


def task_runner(cfg: RunnerConfig) -> TaskRunner:
    """A fresh, not yet started task runner; use it as a context manager."""
    if cfg.kind == "thread":
        return ThreadPoolTaskRunner(max_workers=cfg.workers)
    if cfg.address is not None:
        return DaskTaskRunner(address=cfg.address)
    cluster = {"n_workers": cfg.workers, "threads_per_worker": 1, "processes": cfg.processes}
    if cfg.processes:
        # Without it every worker process would start an ephemeral API server of its own on the same database.
        cluster["env"] = {"PREFECT_API_URL": prefect_api_url()}
    return DaskTaskRunner(cluster_kwargs=cluster)
