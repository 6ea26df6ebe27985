"""Sharded evaluation through the Prefect task runners: the same numbers with 1 thread, 2 threads and 2 Dask
workers as without Prefect; a rerun served from the per-shard caches; bad runner sections."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from prefect.settings import PREFECT_TASKS_REFRESH_CACHE, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from pydantic import ValidationError

import tasks.evaluate
from flows import evaluate as evaluate_stage
from r3 import paths
from r3.config import BaseConfig, RunnerConfig
from r3.data.synth import SynthConfig, build_table, heldout_pool
from r3.data.tiif_suite import write_suite
from r3.evals.evaluate import EvaluateConfig, run_evaluate
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.world.vocabulary import vocabulary
from tasks.runner import task_runner

BASE = {"num_threads": 1, "experiment": "runner"}
EVALUATE = {"per_tag": 1, "max_rounds": 1, "grid_rows": 2, "batch_size": 4, "untrained": True,
            "sampling": {"steps": 2, "cfg_scale": 1.5, "temperature": 0.0, "max_new_tokens": 8}}
MODEL = TinyConfig(patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=1, head_heads=2)
SHARDS = 3 * 5
"""base, sft and rl on GenEval++, GenEval, TIIF short, TIIF long and ITA / VQA."""


@pytest.fixture(scope="module")
def stage_dir(tmp_path_factory) -> Path:
    """A project directory with tiny held-out tables and two (untrained, differently seeded) checkpoints."""
    root = tmp_path_factory.mktemp("runner")
    base = BaseConfig(**BASE)
    synth = SynthConfig(heldout_per_tag=1, heldout_pairs_per_tag=2, candidates_per_tag=40)
    pool = heldout_pool(base, synth)
    for table in ("prompts", "vqa", "ita"):
        build_table(table, "heldout", base, synth, pool, root / paths.SYNTH_HELDOUT / f"{table}.parquet")
    write_suite(base, {"train": 1, "heldout": 1}, root / paths.SYNTH_TIIF)
    for seed, checkpoint in ((1, paths.SFT_CHECKPOINT), (2, paths.RL_CHECKPOINT)):
        torch.manual_seed(seed)
        TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).save_pretrained(root / checkpoint)
    params = {"base": BASE, "evaluate": EVALUATE, "runner": {}}
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    return root


@pytest.fixture(scope="module")
def unsharded(stage_dir, tmp_path_factory) -> dict:
    """The reference: every shard one after the other in this process, no Prefect."""
    checkpoints = {"base": None, "sft": stage_dir / paths.SFT_CHECKPOINT, "rl": stage_dir / paths.RL_CHECKPOINT}
    out = tmp_path_factory.mktemp("unsharded")
    result = run_evaluate(BaseConfig(**BASE), EvaluateConfig(**EVALUATE), checkpoints, stage_dir / paths.SYNTH, out,
                          MODEL)
    return result.metrics


@pytest.fixture
def shard_log(monkeypatch, tmp_path) -> Path:
    """A directory with one file per shard computed (a Dask worker may run a pickled copy of the patched
    function, so it leaves files rather than appending to a list)."""
    log = tmp_path / "shard-calls"
    log.mkdir()
    compute = tasks.evaluate.evaluate_shard

    def counted(base, cfg, model_config, synth_dir, shard, figure_dir):
        (log / f"{shard.checkpoint}-{shard.part}").touch()
        return compute(base, cfg, model_config, synth_dir, shard, figure_dir)

    monkeypatch.setattr(tasks.evaluate, "evaluate_shard", counted)
    return log


def computed(shard_log: Path) -> list[str]:
    return sorted(p.name for p in shard_log.iterdir())


def run_stage(stage_dir: Path, monkeypatch, *overrides: str, refresh: bool = False) -> dict:
    monkeypatch.chdir(stage_dir)
    argv = [arg for o in overrides for arg in ("-S", o)]
    with temporary_settings({PREFECT_TASKS_REFRESH_CACHE: refresh}):
        assert evaluate_stage.main(argv) == 0
    return json.loads((stage_dir / paths.EVALUATE_METRICS).read_text())


def test_default_thread_runner_equals_unsharded_and_caches_every_shard(stage_dir, unsharded, shard_log,
                                                                       monkeypatch):
    assert run_stage(stage_dir, monkeypatch) == unsharded
    assert len(computed(shard_log)) == SHARDS
    assert sorted(p.name for p in (stage_dir / paths.EVALUATE_FIGURES).iterdir()) == [
        "compute.png", "r3_loop_base.png", "r3_loop_rl.png", "r3_loop_sft.png", "scaling.png"]

    monkeypatch.setattr(tasks.evaluate, "run_evaluate", lambda *a, **k: pytest.fail("the evaluation ran again"))
    before = (stage_dir / paths.EVALUATE_REPORT).read_bytes()
    assert run_stage(stage_dir, monkeypatch) == unsharded
    assert (stage_dir / paths.EVALUATE_REPORT).read_bytes() == before
    assert len(computed(shard_log)) == SHARDS


@pytest.mark.parametrize("runner", [("runner.kind=dask", "runner.workers=2", "runner.processes=false"),
                                    ("runner.kind=thread", "runner.workers=2")], ids=["dask-2", "thread-2"])
def test_two_workers_give_exactly_the_same_numbers(stage_dir, unsharded, shard_log, monkeypatch, runner):
    assert run_stage(stage_dir, monkeypatch, *runner, refresh=True) == unsharded
    assert len(computed(shard_log)) == SHARDS


def rerun_with_input_replaced(stage_dir: Path, shard_log: Path, monkeypatch, path: Path,
                              write: Callable[[Path], None]) -> dict:
    """The stage's metrics after a cached run, with `path` replaced by what `write` puts there (restored after); the
    shard log then holds only the shards this rerun computed."""
    run_stage(stage_dir, monkeypatch)
    shutil.rmtree(shard_log)
    shard_log.mkdir()
    original = path.with_name(f"{path.name}-original")
    path.rename(original)
    write(path)
    try:
        return run_stage(stage_dir, monkeypatch)
    finally:
        shutil.rmtree(path)
        original.rename(path)


def test_only_the_shards_of_a_changed_checkpoint_rerun(stage_dir, unsharded, shard_log, monkeypatch):
    def other_model(checkpoint: Path) -> None:
        torch.manual_seed(3)
        TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).save_pretrained(checkpoint)

    metrics = rerun_with_input_replaced(stage_dir, shard_log, monkeypatch, stage_dir / paths.RL_CHECKPOINT,
                                        other_model)
    assert computed(shard_log) == ["rl-geneval", "rl-geneval_pp", "rl-tiif_long", "rl-tiif_short", "rl-understanding"]
    assert metrics["checkpoints"]["sft"] == unsharded["checkpoints"]["sft"]
    assert metrics["checkpoints"]["rl"] != unsharded["checkpoints"]["rl"]


def test_only_the_tiif_shards_rerun_on_a_new_tiif_suite(stage_dir, unsharded, shard_log, monkeypatch):
    metrics = rerun_with_input_replaced(
        stage_dir, shard_log, monkeypatch, stage_dir / paths.SYNTH_TIIF,
        lambda suite: write_suite(BaseConfig(**{**BASE, "seed": 1}), {"train": 1, "heldout": 1}, suite))
    assert computed(shard_log) == [f"{name}-{suite}" for name in ("base", "rl", "sft")
                                   for suite in ("tiif_long", "tiif_short")]
    assert metrics["checkpoints"]["sft"]["generation"]["geneval"] == unsharded["checkpoints"]["sft"]["generation"][
        "geneval"]


@pytest.mark.parametrize(("runner", "message"), [
    ({"kind": "ray"}, "runner.kind: Input should be 'thread' or 'dask'"),
    ({"workers": 0}, "runner.workers: Input should be greater than or equal to 1"),
    ({"kind": "thread", "address": "tcp://h:8786"}, "address is only used with kind 'dask'"),
    ({"kind": "dask", "address": "tcp://h:8786", "workers": 4}, "workers and processes must be left"),
    ({"wokers": 2}, "runner.wokers: unknown key"),
])
def test_bad_runner_section_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, runner, message):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"base": BASE, "evaluate": EVALUATE, "runner": runner}))
    monkeypatch.chdir(tmp_path)
    assert evaluate_stage.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_runner_kinds():
    assert task_runner(RunnerConfig()) == ThreadPoolTaskRunner(max_workers=1)
    assert task_runner(RunnerConfig(workers=3)) == ThreadPoolTaskRunner(max_workers=3)
    remote = task_runner(RunnerConfig(kind="dask", address="tcp://127.0.0.1:8786"))
    assert remote == DaskTaskRunner(address="tcp://127.0.0.1:8786")
    local = task_runner(RunnerConfig(kind="dask", workers=2, processes=False))
    assert local == DaskTaskRunner(cluster_kwargs={"n_workers": 2, "threads_per_worker": 1, "processes": False})
    with pytest.raises(ValidationError, match="frozen"):
        RunnerConfig().workers = 2  # type: ignore[misc]
