"""One source of truth: dvc.yaml is the rendering of flows.graph, and the pipeline runs it."""

from pathlib import Path

import yaml

from flows import graph, pipeline

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


def test_upstream_outputs_come_before_their_consumers():
    produced: set[str] = set()
    for stage in graph.STAGES:
        for dep in stage.deps:
            if dep.startswith("data/"):
                assert dep in produced, f"{stage.name} reads {dep} before any stage writes it"
        produced.update(stage.outs, stage.metrics)
