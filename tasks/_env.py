"""Keep Prefect's home, database and result storage inside the project (git-ignored `.prefect/`), and
keep the logs of the libraries under it quiet.

Must run before `prefect` is first imported, so `tasks/__init__.py` calls it.
"""

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
PREFECT_HOME = PROJECT_ROOT / ".prefect"


def configure_prefect_env() -> None:
    os.environ.setdefault("PREFECT_HOME", str(PREFECT_HOME))
    os.environ.setdefault("PREFECT_LOCAL_STORAGE_PATH", str(PREFECT_HOME / "storage"))
    os.environ.setdefault("PREFECT_RESULTS_PERSIST_BY_DEFAULT", "true")
    # The ephemeral API server is enough for `dvc repro`; `prefect server start` + PREFECT_API_URL
    # sends runs to the UI instead (README).
    os.environ.setdefault("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true")
    # A fresh clone's first stage creates the database and runs every migration before the server answers; on a
    # busy 2-core machine that took longer than Prefect's 20 s default (measured: synth failed "Timed out while
    # attempting to connect to ephemeral Prefect API server" from a fresh clone).
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Dask's INFO lines (every worker start and stop) would drown the flow's own log under the dask runner.
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
