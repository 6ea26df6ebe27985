"""The first Quickstart command's pipeline on a `git clone` of the committed HEAD (files that are not committed are
absent), with the pipeline test's tiny profile written into the clone's params.yaml and this environment's `dvc`
and `python`: `dvc repro` runs every stage but the frozen one, which uses its committed outputs, and a second
`dvc repro` does nothing."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows import graph
from test_pipeline_smoke import tiny_params

ROOT = Path(__file__).resolve().parent.parent


def clone_env() -> dict[str, str]:
    """This environment, its `dvc` and `python` first on PATH, without the test session's Prefect and MLflow
    locations: the clone keeps its own (.prefect/, mlflow.db, mlartifacts/), as a new checkout does."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


def dvc(clone: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", *args], cwd=clone, env=clone_env(), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    clone = tmp_path_factory.mktemp("fresh") / "r3flow"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    tiny_params(clone / "params.yaml", source=clone / "params.yaml")
    return clone


@pytest.fixture(scope="module")
def first_repro(clone) -> subprocess.CompletedProcess:
    return dvc(clone, "repro")


def test_repro_runs_every_stage_but_the_frozen_one(clone, first_repro):
    assert first_repro.returncode == 0, first_repro.stdout[-2000:] + first_repro.stderr[-2000:]
    ran = re.findall(r"^Running stage '(\w+)'", first_repro.stdout, flags=re.MULTILINE)
    assert ran == [stage.name for stage in graph.STAGES if not stage.frozen]
    for stage in graph.STAGES:
        for out in (*stage.outs, *stage.committed_outs, *stage.metrics, *stage.plots):
            assert (clone / out).exists(), f"{stage.name}: {out} missing"
    frozen = [out for stage in graph.STAGES if stage.frozen for out in stage.committed_outs]
    changed = subprocess.run(["git", "status", "--porcelain", "--", *frozen], cwd=clone, capture_output=True,
                             text=True, check=True).stdout
    assert changed == "", f"a frozen stage's committed outputs changed:\n{changed}"
    # the stages ran the clone's code, which keeps its Prefect and MLflow state in the clone
    assert (clone / ".prefect").is_dir() and (clone / "mlflow.db").is_file()


def test_a_second_repro_does_nothing(clone, first_repro):
    assert first_repro.returncode == 0
    again = dvc(clone, "repro")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "Running stage" not in again.stdout
    assert "Data and pipelines are up to date." in again.stdout
    status = dvc(clone, "status")
    assert status.stdout.strip() == "Data and pipelines are up to date.", status.stdout
