"""MLflow system metrics: on by default in the training stages' runs (sampling interval logged), off on request,
and never part of a cache key. Under a multi-process launch only the main process tracks and writes."""

import json
import time
from pathlib import Path

import mlflow
import pytest

import tasks.pretrain
import tasks.sft
from flows import evaluate as evaluate_stage
from flows import pretrain as pretrain_stage
from flows import sft as sft_stage
from r3 import paths
from r3.config import BaseConfig
from r3.train.pretrain import PretrainConfig
from r3.train.frame import TrainResult
from r3.train.sft import SftConfig
from tasks.cache import artifact_dir, stage_key
from tasks.tracking import stage_run

EXPERIMENT = "tracking"


@pytest.fixture(autouse=True)
def sample_every_second(monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")


def system_metrics(run_id: str) -> set[str]:
    return {key for key in mlflow.get_run(run_id).data.metrics if key.startswith("system/")}


def fake_train_sft(base: BaseConfig, cfg: SftConfig, synth_dir: Path, out_dir: Path, init_dir: Path | None, log,
                   seconds: float = 2.5) -> TrainResult:
    """Stands in for a few seconds of training: writes what the stage publishes."""
    time.sleep(seconds)
    (out_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out_dir / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    (out_dir / "samples").mkdir(exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps({"headline": {"vqa": 0.5}}))
    (out_dir / "history.jsonl").write_text(json.dumps({"step": 0, "loss/total": 1.0}) + "\n")
    log({"loss/total": 1.0}, 0)
    return TrainResult(out_dir / "checkpoint", {"headline": {"vqa": 0.5}}, out_dir / "history.jsonl", [])


def fake_synth(root: Path) -> None:
    for split in (paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT):
        (root / split).mkdir(parents=True)
        (root / split / "table.parquet").write_text(str(root))  # unique inputs: no cache hit


def test_sft_stage_run_logs_system_metrics_by_default(tmp_path, monkeypatch):
    fake_synth(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tasks.sft, "train_sft", fake_train_sft)
    sft_stage.sft_flow(BaseConfig(experiment=EXPERIMENT), SftConfig(init="scratch"))
    [run] = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.stage = 'sft'",
                               output_format="list")
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system_metrics(
        run.info.run_id)
    assert run.data.params["system_metrics.sampling_interval"] == "1.0"
    assert (tmp_path / paths.SFT_CHECKPOINT / "model.safetensors").is_file()


def test_pretrain_publishes_the_base_model_and_sends_its_sample_grids_to_mlflow_only(tmp_path, monkeypatch):
    """The frozen stage's outputs are the committed models/base: no other file lands in the project."""
    fake_synth(tmp_path)
    monkeypatch.chdir(tmp_path)

    def train(base, cfg, synth_dir, out_dir, log) -> TrainResult:
        result = fake_train_sft(base, cfg, synth_dir, out_dir, None, log, seconds=0)
        (out_dir / "samples" / "generation_final.png").write_bytes(b"png")
        return TrainResult(result.checkpoint, {**result.metrics, "train_seconds": 1.0, "total_seconds": 1.0},
                         result.history, [])

    monkeypatch.setattr(tasks.pretrain, "train_pretrain", train)
    pretrain_stage.pretrain_flow(BaseConfig(experiment=EXPERIMENT, system_metrics=False), PretrainConfig())
    written = {p.relative_to(tmp_path).as_posix() for p in (tmp_path / paths.MODELS).rglob("*")}
    assert written == {"models/base", "models/base/model.safetensors", "models/base/MODEL_CARD.md",
                       "models/base/metrics.json"}
    assert {p.name for p in (tmp_path / paths.DATA).iterdir()} == {"synth"}
    [run] = mlflow.search_runs(experiment_names=[EXPERIMENT], filter_string="tags.stage = 'pretrain'",
                               output_format="list")
    logged = [a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "samples")]
    assert logged == ["samples/generation_final.png"]


def test_system_metrics_off_logs_none():
    base = BaseConfig(experiment=EXPERIMENT, system_metrics=False)
    with stage_run("probe", base.experiment, {"base": base}, base.system_metrics) as run:
        time.sleep(1.5)
    assert system_metrics(run.info.run_id) == set()
    assert "system_metrics.sampling_interval" not in mlflow.get_run(run.info.run_id).data.params


def test_system_metrics_flag_is_not_part_of_cache_keys_or_params():
    on, off = BaseConfig(), BaseConfig(system_metrics=False)
    assert stage_key("sft-train", [on]) == stage_key("sft-train", [off])
    assert "system_metrics" not in on.model_dump()


def test_other_processes_of_a_launch_train_but_neither_track_nor_publish(tmp_path, monkeypatch, capsys):
    fake_synth(tmp_path)
    (tmp_path / "params.yaml").write_text("base: {experiment: followers}\nsft: {init: scratch}\nevaluate: {}\nrunner: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    trained: list[Path] = []

    def train(base, cfg, synth_dir, out_dir, init_dir, log):
        trained.append(out_dir)
        return fake_train_sft(base, cfg, synth_dir, out_dir, init_dir, log, seconds=0)

    monkeypatch.setattr(tasks.sft, "train_sft", train)
    monkeypatch.setattr(sft_stage, "check_inputs", lambda base, sft: None)  # fake_synth's tables are placeholders
    assert sft_stage.main([]) == 0
    assert trained == [artifact_dir(sft_stage.train_key(BaseConfig(experiment="followers"), SftConfig(init="scratch")))]
    assert mlflow.get_experiment_by_name("followers") is None
    assert not (tmp_path / paths.SFT).exists()

    assert evaluate_stage.main([]) == 2
    assert "flows.evaluate runs in one process, but this launch has 2" in capsys.readouterr().err
