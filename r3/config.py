"""Frozen configuration models shared by every stage.

Every section of `params.yaml` is validated by one `Config` subclass: unknown keys, wrong types
and impossible values are rejected at construction, before any stage writes anything.
"""

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Config(BaseModel):
    """Base of every config: immutable, no unknown keys, field docstrings become descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class BaseConfig(Config):
    """The `base` section of params.yaml, read by every stage."""

    seed: int = Field(0, ge=0)
    """Root seed; every stage derives its own generators from it."""

    canvas: int = Field(32, ge=16, le=512)
    """Side of the square ShapeWorld images in pixels (32 on CPU, 64 and up on GPU)."""

    num_threads: int = Field(2, ge=1)
    """torch / BLAS threads for CPU work."""

    experiment: str = Field("r3flow", min_length=1)
    """MLflow experiment that every stage logs its run into."""

    system_metrics: bool = Field(True, exclude=True)
    """Log CPU, memory, disk, network and (with the `gpu` extra) GPU usage as MLflow `system/*` metrics during
    the training stages; every MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL seconds (default 10). Left out of cache
    keys and logged params: it changes no result."""

    timeout_minutes: float | None = Field(None, gt=0, exclude=True)
    """Wall-clock limit of each long Prefect task (training, evaluation and its shards) in minutes; a task past
    it fails and so does its stage. None: no limit. Left out of cache keys and logged params: it changes no
    result."""


class RunnerConfig(Config):
    """The `runner` section of params.yaml: where a stage's independent tasks run (evaluation shards).

    Results do not depend on it (shards are merged in a fixed order), so it is left out of cache keys.
    """

    kind: Literal["thread", "dask"] = "thread"
    """`thread`: a thread pool in the flow's process; `dask`: a Dask cluster (a local one of `workers` workers,
    or the one at `address`)."""

    workers: int = Field(1, ge=1)
    """Tasks that run at once: threads, or workers of the local Dask cluster (each task with base.num_threads
    torch threads)."""

    processes: bool = True
    """Local Dask cluster: workers are processes (true: parallel Python, what scale-out needs) or threads of
    the flow's process (false: starts in a second, for tests and debugging)."""

    address: str | None = None
    """Scheduler of a running Dask cluster, e.g. tcp://10.0.0.5:8786 (kind dask only). Its workers need this
    project importable, its data at the same paths (relative to their working directory) and PREFECT_API_URL
    set to the Prefect server the flow reports to."""

    @model_validator(mode="after")
    def _address_needs_dask(self) -> "RunnerConfig":
        if self.address is not None and self.kind != "dask":
            raise ValueError(f"address is only used with kind 'dask', not {self.kind!r}")
        if self.address is not None and (self.workers != 1 or not self.processes):
            raise ValueError("workers and processes must be left at their defaults with an address: "
                             "the running cluster has its own")
        return self


class ScheduleConfig(Config):
    """The `schedule` section of params.yaml: when `python -m flows.serve` runs the whole pipeline."""

    cron: str | None = None
    """Cron expression (five fields, UTC), e.g. '0 3 * * *' for every night at 03:00."""

    interval_minutes: int | None = Field(None, ge=1)
    """Minutes between two scheduled runs."""

    @model_validator(mode="after")
    def _at_most_one(self) -> "ScheduleConfig":
        if self.cron is not None and self.interval_minutes is not None:
            raise ValueError("set cron or interval_minutes, not both")
        return self
