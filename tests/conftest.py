"""Test-session isolation: Prefect home, its result storage and MLflow tracking live in a temp
directory, so tests never touch the project's own `.prefect/` or `mlflow.db`."""

import os
import tempfile
from pathlib import Path

_SESSION_DIR = Path(tempfile.mkdtemp(prefix="r3flow-tests-"))
os.environ["PREFECT_HOME"] = str(_SESSION_DIR / "prefect")
os.environ["PREFECT_LOCAL_STORAGE_PATH"] = str(_SESSION_DIR / "prefect" / "storage")
os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_DIR / 'mlflow.db'}"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
