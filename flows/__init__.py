"""Prefect flows, one per stage plus the whole pipeline; each module is also the stage's CLI."""

import tasks  # noqa: F401  (configures Prefect's project-local home before prefect is imported)
