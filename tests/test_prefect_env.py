"""The project's Prefect settings as a new process sees them: its own home, and a start-up limit for the ephemeral
API server long enough for a fresh clone's first stage (which creates and migrates the database) on a busy
2-core machine."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PREFECT_DEFAULT_STARTUP_S = 20
"""Prefect's own limit, which a fresh clone's synth stage was measured to exceed."""
READ_SETTINGS = ("import tasks; from prefect.settings import PREFECT_HOME, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
                 " as limit; print(PREFECT_HOME.value(), limit.value())")


def settings_of_a_new_process(**env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | env
    done = subprocess.run([sys.executable, "-c", READ_SETTINGS], cwd=ROOT, env=clean, capture_output=True,
                          text=True, check=True)
    home, limit = done.stdout.split()
    return home, int(limit)


def test_a_stage_process_gets_the_project_home_and_the_longer_start_up_limit():
    home, limit = settings_of_a_new_process()
    assert home == str(ROOT / ".prefect")
    assert limit >= 6 * PREFECT_DEFAULT_STARTUP_S


def test_a_users_own_start_up_limit_is_kept():
    assert settings_of_a_new_process(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="45")[1] == 45
