"""SFT: a tiny run trains every parameter, its checkpoint round-trips, and its metrics are complete."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import r3.train.frame
import r3.train.sft
from r3.config import BaseConfig
from r3.data.synth import TABLES, SynthConfig, build_table, heldout_pool
from r3.models.interface import SamplingConfig
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.train.data import SFT_TASKS, SynthSplit
from r3.train.heldout_view import evaluate_heldout
from r3.train.sft import SftConfig, TaskWeights, lr_factor, tasks_for_step, train_sft

BASE = BaseConfig(seed=0, num_threads=1)
MODEL = TinyConfig(canvas=32, patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64,
                   head_width=32, head_layers=1, head_heads=2)
TINY_SFT = SftConfig(init="scratch", steps=4, batch_size=4, rotating_tasks_per_step=3, warmup_steps=1, eval_every=2,
                     quick_eval_rows=4, log_every=1, model=MODEL, sampling=SamplingConfig(steps=2, cfg_scale=2.0))


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sft_synth")
    cfg = SynthConfig(train_per_tag=2, heldout_per_tag=2, train_pairs=16, heldout_pairs_per_tag=2, candidates_per_tag=20)
    pool = heldout_pool(BASE, cfg)
    for split in ("train", "heldout"):
        for table in TABLES:
            build_table(table, split, BASE, cfg, pool, root / split / f"{table}.parquet")
    return root


def test_tiny_sft_trains_every_parameter_and_round_trips(synth_dir, tmp_path):
    logged = []
    result = train_sft(BASE, TINY_SFT, synth_dir, tmp_path, log=lambda m, s: logged.append((m, s)))
    torch.manual_seed(BASE.seed)
    untrained = TinyUnifiedModel(MODEL, TinyUnifiedModel.from_pretrained(result.checkpoint).tokenizer)
    before = dict(untrained.named_parameters())
    after = load_file(result.checkpoint / "model.safetensors")
    # the last SD3 block is context_pre_only: its context-query projection output is discarded (no gradient)
    last = f"image_head.transformer_blocks.{MODEL.head_layers - 1}.attn.add_q_proj"
    unchanged = [n for n, p in before.items() if not n.startswith(last) and torch.equal(p.detach(), after[n])]
    assert not unchanged, f"parameters without any update: {unchanged}"

    reloaded = TinyUnifiedModel.from_pretrained(result.checkpoint, expected=MODEL)
    assert all(torch.equal(p, after[n]) for n, p in reloaded.state_dict().items())
    with pytest.raises(ValueError, match="lm_dim"):
        TinyUnifiedModel.from_pretrained(result.checkpoint, expected=MODEL.model_copy(update={"lm_dim": 64}))

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics["headline"]) >= {"vqa", "ita", "reasoning_validity", "reflection", "editing",
                                        "generation_strict/geneval_pp", "generation_partial/geneval_pp"}
    assert all(0.0 <= v <= 1.0 for v in metrics["headline"].values())
    assert len(metrics["generation"]["strict"]["per_tag"]) == 13
    losses = {k for m, _ in logged for k in m if k.startswith("loss/")}
    assert losses == {f"loss/{t}" for t in SFT_TASKS} | {"loss/total"}
    assert [s for m, s in logged if "heldout/vqa" in m] == [2, 4]
    assert {p.name for p in result.samples} >= {"generation_final.png", "rendering_final.png", "editing_final.png"}


def test_mid_run_checks_cover_every_tag_of_both_suites(synth_dir, tmp_path, monkeypatch):
    """13 quick rows of held-out tables of 2 rows per tag: the first 13 would cover 7 tags of GenEval++ only."""
    checked: list[SynthSplit] = []

    def spy(model, data, *args):
        checked.append(data)
        return evaluate_heldout(model, data, *args)

    monkeypatch.setattr(r3.train.sft, "evaluate_heldout", spy)  # the mid-run checks
    monkeypatch.setattr(r3.train.frame, "evaluate_heldout", spy)  # the final evaluation
    quick = TINY_SFT.model_copy(update={"steps": 2, "eval_every": 1, "quick_eval_rows": 13})
    train_sft(BASE, quick, synth_dir, tmp_path)
    mid_run, final = checked

    def tags(table) -> set[tuple[str, str]]:
        return set(zip(table.frame["suite"], table.frame["tag"], strict=True))

    assert len(tags(final.enrichment)) == 13 and {s for s, _ in tags(final.enrichment)} == {"geneval_pp", "geneval"}
    for name in ("enrichment", "editing", "reflection", "vqa", "ita"):
        rows, every = getattr(mid_run, name), getattr(final, name)
        assert len(rows) == 13 < len(every) and tags(rows) == tags(every), name


def test_schedule_covers_every_task_and_lr_warms_up_then_decays():
    cfg = SftConfig(steps=100, warmup_steps=10, every_step=("generate", "reason"), rotating_tasks_per_step=2)
    seen = {t for step in range(3) for t in tasks_for_step(step, cfg)}
    assert seen == set(SFT_TASKS)
    assert all(tasks_for_step(step, cfg)[:2] == ["generate", "reason"] for step in range(5))
    assert all(len(tasks_for_step(step, cfg)) == 4 for step in range(5))
    rotating = SftConfig(every_step=("generate",), rotating_tasks_per_step=3)
    assert [len(tasks_for_step(step, rotating)) for step in range(2)] == [4, 4]
    assert {t for step in range(2) for t in tasks_for_step(step, rotating)} == set(SFT_TASKS)
    factors = [lr_factor(s, cfg) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] > factors[50] > factors[99] >= cfg.min_lr_ratio
    rotated = SftConfig(every_step=("reason", "reflect", "edit"))
    schedule = [tasks_for_step(step, rotated) for step in range(8)]
    assert all(tasks[:3] == ["edit", "reason", "reflect"] and len(tasks) == 4 for tasks in schedule)
    assert [step for step, tasks in enumerate(schedule) if "generate" in tasks] == [0, 4]
    no_edit = SftConfig(weights=TaskWeights(edit=0.0))
    assert all("edit" not in tasks_for_step(s, no_edit) for s in range(12))


@pytest.mark.parametrize("bad", [
    {"weights": {t: 0.0 for t in SFT_TASKS}},
    {"sampling": {"sde_steps": [0]}},
    {"steps": 0},
    {"weights": {"generaet": 1.0}},
])
def test_invalid_sft_configs_are_rejected(bad):
    with pytest.raises(ValueError):
        SftConfig.model_validate(bad)


def test_tasks_named_in_batch_sizes_take_their_own_batch(monkeypatch):
    drawn: dict[str, int] = {}

    def fake_loss(model, data, task, rng, batch_size, generator):
        drawn[task] = batch_size
        return torch.tensor(1.0)

    monkeypatch.setattr(r3.train.sft, "task_loss", fake_loss)
    cfg = SftConfig(batch_size=8, batch_sizes={"edit": 3, "reason": 5})
    total, losses = r3.train.sft.step_losses(None, None, ["generate", "edit", "reason"], cfg, None, None)
    assert drawn == {"generate": 8, "edit": 3, "reason": 5} and float(total) == 3.0
    assert SftConfig().batch_sizes == {}
    with pytest.raises(ValueError):
        SftConfig(batch_sizes={"edit": 0})
    with pytest.raises(ValueError):
        SftConfig(batch_sizes={"edti": 4})
