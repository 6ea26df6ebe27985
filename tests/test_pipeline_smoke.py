"""The whole pipeline through its Prefect flows on a tiny profile: every stage's outputs, MLflow runs,
and a rerun served entirely from the cache."""

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from flows import pipeline
from r3 import paths
from r3.machine import machine_facts

ROOT = Path(__file__).resolve().parent.parent
MODEL = {"canvas": 32, "patch": 8, "lm_dim": 32, "lm_layers": 1, "lm_heads": 2, "lm_mlp": 64,
         "head_width": 32, "head_layers": 1, "head_heads": 2}
FAST = {"steps": 2, "cfg_scale": 2.0}
TINY = {
    "base": {"num_threads": 1, "experiment": "smoke"},
    "synth": {"train_per_tag": 2, "heldout_per_tag": 2, "train_pairs": 16, "heldout_pairs_per_tag": 2,
              "candidates_per_tag": 40},
    "sft": {"init": "scratch", "steps": 3, "batch_size": 4, "eval_every": 100, "log_every": 1, "model": MODEL, "sampling": FAST},
    "rl": {"steps": 2, "group_size": 2, "prompts_per_step": 1, "nodes_per_step": 1, "sample_steps": 2,
           "max_new_tokens": 8, "eval_every": 100, "eval_rows": 2, "validation_rows": 2, "checkpoint_every": 1,
           "eval_sampling": FAST},
    "evaluate": {"per_tag": 1, "max_rounds": 1, "grid_rows": 2, "sampling": {**FAST, "temperature": 0.0}},
}


def tiny_params(path: Path, source: Path = ROOT / "params.yaml") -> Path:
    """Write `source`'s params with the tiny profile over them to `path`."""
    params = yaml.safe_load(source.read_text())
    for section, values in TINY.items():
        params[section] = {**params.get(section, {}), **values}
    path.write_text(yaml.safe_dump(params))
    return path


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    params = tiny_params(root / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        assert pipeline.main(["--params", str(params)]) == 0
        yield root, params


def test_every_stage_writes_its_outputs(pipeline_run):
    root, _ = pipeline_run
    for path in (paths.SYNTH_METRICS, paths.SFT_CHECKPOINT / "model.safetensors", paths.SFT_METRICS,
                 paths.RL_CHECKPOINT / "model.safetensors", paths.RL_METRICS, paths.EVALUATE_METRICS,
                 paths.EVALUATE_REPORT, paths.EVALUATE_SCALING, paths.EVALUATE_TAGS, paths.EVALUATE_COMPUTE,
                 paths.EVALUATE_FIGURES / "scaling.png", paths.EVALUATE_FIGURES / "compute.png"):
        assert (root / path).is_file(), path
    evaluation = json.loads((root / paths.EVALUATE_METRICS).read_text())
    assert set(evaluation["checkpoints"]) == {"sft", "rl"}  # the untrained model only with evaluate.untrained
    assert "Table 1" in (root / paths.EVALUATE_REPORT).read_text()
    validation = json.loads((root / paths.RL_METRICS).read_text())["validation"]  # rl.validation_rows = 2
    assert validation["n"] == 2 and 0.0 <= validation["strict"]["overall"]["geneval_pp"] <= 1.0
    assert {p.name for p in (root / paths.SYNTH_TIIF).iterdir()} == {"train.jsonl", "heldout.jsonl"}
    for name in ("sft", "rl"):  # the synth TIIF suite, scored by default: per type, short and long
        assert set(evaluation["checkpoints"][name]["tiif"]) == {"tiif_short", "tiif_long"}
        assert 0.0 <= evaluation["headline"][f"{name}/tiif_short"] <= 1.0
        assert 0.0 <= evaluation["headline"][f"{name}/tiif_long"] <= 1.0


def test_each_stage_is_one_tagged_mlflow_run(pipeline_run):
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    stages = sorted(run.data.tags["stage"] for run in runs)
    assert stages == ["evaluate", "rl", "sft", "synth"]
    assert all(run.data.tags["git_commit"] for run in runs)
    sft = next(run for run in runs if run.data.tags["stage"] == "sft")
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(sft.info.run_id, "loss/reason")] == [0, 1, 2]
    assert [m.step for m in client.get_metric_history(sft.info.run_id, "loss/generate")] == [0, 1, 2]
    assert sft.data.params["sft.steps"] == "3"
    evaluate = next(run for run in runs if run.data.tags["stage"] == "evaluate")
    curve = client.get_metric_history(evaluate.info.run_id, "rl/compute/best_of_n")
    assert [m.step for m in curve] == [1, 2]  # one point per image budget N = 1 .. max_rounds + 1
    assert {"sft/tiif_short", "sft/tiif_long", "rl/tiif_short", "rl/tiif_long"} <= set(evaluate.data.metrics)
    per_type = {k for k in evaluate.data.metrics if k.startswith("tiif/rl/tiif_long/")}
    assert {"tiif/rl/tiif_long/shape-color/score", "tiif/rl/tiif_long/shape-color/low",
            "tiif/rl/tiif_long/negation/high", "tiif/rl/tiif_long/numeracy/n"} <= per_type


def test_every_metrics_file_and_mlflow_run_records_the_machine(pipeline_run):
    root, _ = pipeline_run
    expected = machine_facts(threads=1)  # the tiny profile's base.num_threads
    for path in (paths.SYNTH_METRICS, paths.SFT_METRICS, paths.RL_METRICS, paths.EVALUATE_METRICS):
        assert json.loads((root / path).read_text())["machine"] == expected, path
    runs = mlflow.search_runs(experiment_names=["smoke"], output_format="list")
    for run in runs:
        tags = {k.removeprefix("machine."): v for k, v in run.data.tags.items() if k.startswith("machine.")}
        assert tags == {k: str(v) for k, v in expected.items()}, run.data.tags["stage"]


def test_rerun_does_no_work(pipeline_run, monkeypatch):
    root, params = pipeline_run
    monkeypatch.chdir(root)

    def no_work(*args, **kwargs):
        raise AssertionError("a cached stage ran again")

    for target in ("tasks.synth.build_table", "tasks.synth.write_suite", "tasks.sft.train_sft", "tasks.rl.train_rl",
                   "tasks.evaluate.run_evaluate"):
        monkeypatch.setattr(target, no_work)
    before = (root / paths.EVALUATE_METRICS).read_bytes()
    assert pipeline.main(["--params", str(params)]) == 0
    assert (root / paths.EVALUATE_METRICS).read_bytes() == before
