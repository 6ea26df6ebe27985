"""One source of truth: dvc.yaml is the rendering of flows.graph, and the pipeline runs it."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows import graph, pipeline
from tasks import cache

ROOT = Path(__file__).resolve().parent.parent


def test_dvc_yaml_matches_graph():
    on_disk = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert on_disk == graph.dvc_yaml(), "dvc.yaml is stale: run `python -m flows.graph`"


def test_pipeline_runs_graph_stages_in_order_with_their_sections():
    modules = pipeline.stage_modules()
    assert [m.__name__ for m in modules] == [f"flows.{s.name}" for s in graph.STAGES]
    for stage, module in zip(graph.STAGES, modules, strict=True):
        assert tuple(module.SECTIONS) == stage.params
        assert callable(getattr(module, f"{stage.name}_flow"))


def test_every_dependency_and_param_section_exists():
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for stage in graph.STAGES:
        for dep in stage.deps:
            if not dep.startswith("data/"):
                assert (ROOT / dep).exists(), f"{stage.name}: dependency {dep} does not exist"
        assert set(stage.params) <= set(params)
    assert set(params) == set(graph.SECTIONS)


def test_a_frozen_stage_has_no_cached_outputs():
    """A clone has no DVC cache: `dvc repro` could never verify a frozen stage's cached output."""
    assert all(not stage.outs and stage.committed_outs for stage in graph.STAGES if stage.frozen)
    with pytest.raises(ValueError, match="frozen stage's outputs must be committed_outs"):
        graph.Stage(name="pretrain", params=(), inputs=(), outs=("data/pretrain/samples",), frozen=True)


def test_upstream_outputs_come_before_their_consumers():
    produced: set[str] = set()
    for stage in graph.STAGES:
        for dep in stage.deps:
            if dep.startswith("data/"):
                assert dep in produced, f"{stage.name} reads {dep} before any stage writes it"
        produced.update(stage.outs, stage.metrics)


IMPORTED_PROJECT_FILES = """
import json, sys
from pathlib import Path
root = Path.cwd().resolve()
files = {Path(m.__file__).resolve() for m in list(sys.modules.values()) if getattr(m, "__file__", None)}
print(json.dumps(sorted(f.relative_to(root).as_posix() for f in files
                        if f.is_relative_to(root) and f.relative_to(root).parts[0] in ("r3", "tasks", "flows"))))
"""


@pytest.mark.parametrize("stage", graph.STAGES, ids=lambda s: s.name)
def test_every_project_module_a_stage_imports_is_among_its_deps(stage):
    """Import the stage's flow module in a fresh interpreter: every project file it loads is a DVC dep."""
    out = subprocess.run([sys.executable, "-c", f"import flows.{stage.name}\n{IMPORTED_PROJECT_FILES}"], cwd=ROOT,
                         capture_output=True, text=True, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    imported = json.loads(out.stdout.splitlines()[-1])
    assert f"flows/{stage.name}.py" in imported
    assert set(imported) <= set(stage.deps), f"{stage.name} imports files missing from its deps"


def test_rl_does_not_depend_on_the_sft_stage_code_but_on_the_world():
    rl = {s.name: s for s in graph.STAGES}["rl"]
    assert "r3/train/sft.py" not in rl.code
    assert {"r3/world/verifier.py", "r3/data/io.py", "r3/train/heldout_view.py", "tasks/cache.py"} <= set(rl.code)


def test_check_fails_when_a_dep_is_missing(tmp_path, capsys):
    path = tmp_path / "dvc.yaml"
    path.write_text(graph.render_dvc_yaml())
    assert graph.main(["--check", "--dvc-yaml", str(path)]) == 0
    stale = graph.dvc_yaml()
    stale["stages"]["rl"]["deps"].remove("r3/world/verifier.py")
    path.write_text(yaml.safe_dump(stale, sort_keys=False))
    assert graph.main(["--check", "--dvc-yaml", str(path)]) == 1
    assert "missing dependency rl: r3/world/verifier.py" in capsys.readouterr().err


def test_cache_keys_cover_exactly_the_code_of_their_stage(tmp_path, monkeypatch):
    """A change to a file of the stage's DVC code deps changes its Prefect cache key; any other change does not."""
    for package in ("r3", "tasks", "flows"):
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(cache, "PROJECT_ROOT", tmp_path)
    before = {stage: cache.code_version(stage) for stage in ("sft", "rl")}
    with open(tmp_path / "r3/train/sft.py", "a") as f:
        f.write("# edited\n")
    assert cache.code_version("sft") != before["sft"] and cache.code_version("rl") == before["rl"]
    with open(tmp_path / "r3/world/verifier.py", "a") as f:
        f.write("# edited\n")
    assert cache.code_version("rl") != before["rl"]
