"""The tiif reward (the exact TIIF score of a TIIF prompt record) and RL on the synth TIIF suite's train prompts:
the reward's scores, the configs that pair it with the wrong prompts (refused in one line, exit 2), and a tiny run
that trains on TIIF prompts."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from flows import rl as rl_stage
from r3.data.tiif_suite import prompt_table, tiif_suite, write_suite
from r3.rewards import REGISTRY, RewardConfig, TiifReward, build_reward
from r3.rl.config import RlConfig
from r3.rl.train import train_rl
from r3.world.render import render
from r3.world.tiif_exact import OutsideGrammarError
from test_rl_train import BASE, build_inputs, rl_config

ROOT = Path(__file__).resolve().parent.parent
WANT = {"train": 2, "heldout": 1}
TIIF_PARTIAL = RewardConfig(name="tiif", params={"mode": "partial"})


@pytest.fixture(scope="module")
def suite():
    return tiif_suite(BASE, WANT)


def test_the_reward_is_the_share_of_questions_answered_as_expected(suite, tmp_path):
    write_suite(BASE, WANT, tmp_path / "tiif")
    table = prompt_table(tmp_path, "train")
    records = table.records(range(len(table)))  # each record's short, then its long description
    examples = suite["train"]
    right = np.stack([render(e.scene) for e in examples for _ in ("short", "long")])  # (2 T, 32, 32, 3)
    blank = np.zeros_like(right)
    partial, strict = build_reward(TIIF_PARTIAL), build_reward(RewardConfig(name="tiif", params={"mode": "strict"}))
    assert isinstance(partial, TiifReward) and REGISTRY["tiif"] is TiifReward
    assert (partial.name, strict.name, TiifReward().name) == ("tiif_partial", "tiif_strict", "tiif_partial")
    assert partial(right, records).tolist() == strict(right, records).tolist() == [1.0] * len(records)
    # a blank image answers every question as an empty scene does: "no" to presence, "yes" to absence
    expected = [np.mean([a == ("yes" if q.startswith(("Is there no", "Are there no")) else "no")
                         for q, a in zip(r["questions"], r["answers"])]) for r in records]
    assert partial(blank, records).tolist() == pytest.approx(expected)
    assert strict(blank, records).tolist() == [0.0] * len(records)


def test_the_reward_refuses_records_it_cannot_score_exactly():
    image = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="tiif_partial: the record of 'a red circle' has no 'questions' .*rl.prompts: "
                                         "tiif"):
        TiifReward()(image, [{"prompt": "a red circle", "include": [{"class": "circle", "count": 1}]}])
    three_d = {"prompt": "a cup behind a mug", "tag": "3d_spatial_relation", "questions": ["Is there a circle?"],
               "answers": ["yes"]}
    with pytest.raises(OutsideGrammarError, match="TIIF type '3d_spatial_relation' asks for 3D spatial relations"):
        TiifReward()(image, [three_d])
    with pytest.raises(ValueError, match="mode must be 'strict' or 'partial'"):
        TiifReward("share")


def test_the_default_rl_trains_on_the_synth_prompts_with_the_strict_verifier():
    cfg = RlConfig()
    assert (cfg.prompts, cfg.reward) == ("synth", RewardConfig(name="verifier", params={"mode": "strict"}))


@pytest.mark.parametrize("settings,problem", [
    ({"reward": {"name": "tiif"}}, "rl.reward 'tiif' scores TIIF prompt records, but rl.prompts is 'synth': set "
                                   "rl.prompts=tiif"),
    ({"reward": {"name": "weighted", "components": [{"name": "verifier"}, {"name": "tiif"}], "weights": [0.5, 0.5]}},
     "rl.reward 'tiif' scores TIIF prompt records, but rl.prompts is 'synth'"),
    ({"prompts": "tiif"}, "rl.prompts is 'tiif', but rl.reward 'verifier' scores GenEval records: set "
                          "rl.reward.name=tiif"),
    ({"prompts": "tiif", "reward": {"name": "none"}}, "rl.reward 'none' scores GenEval records"),
    ({"prompts": "tiif", "reward": {"name": "tiif"}, "reasoning_format": "satisfies"},
     "rl.reasoning_format 'satisfies' checks layouts against GenEval records: set rl.reasoning_format=parses"),
])  # fmt: skip
def test_a_reward_and_prompts_of_different_records_are_refused(settings, problem):
    with pytest.raises(ValueError, match=re.escape(problem)):
        RlConfig.model_validate(settings)


@pytest.mark.parametrize("reward", ["tiif", "judge", "intrinsic"])
def test_tiif_prompts_take_the_rewards_that_read_them(reward):
    assert RlConfig.model_validate({"prompts": "tiif", "reward": {"name": reward}}).prompts == "tiif"


def test_the_cli_refuses_the_tiif_reward_without_tiif_prompts_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert rl_stage.main(["--params", str(ROOT / "params.yaml"), "-S", "rl.reward.name=tiif"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "rl.prompts=tiif" in err and "rl.reward 'tiif'" in err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_tiny_run_trains_on_the_tiif_prompts_with_the_tiif_reward(tmp_path):
    init, synth = build_inputs(tmp_path / "inputs")
    write_suite(BASE, WANT, synth / "tiif")
    cfg = rl_config(steps=2, reward=TIIF_PARTIAL, prompts="tiif")
    result = train_rl(BASE, cfg, init, synth, tmp_path / "out")  # the reward raises on a record without questions
    rows = [json.loads(line) for line in result.history.read_text().splitlines() if "time/step_s" in line]
    assert [row["step"] for row in rows] == [0, 1]
    assert 0.0 <= rows[0]["reward/tiif_partial"] <= 1.0 and "reward/refine_mean" in rows[1]
    before, after = load_file(init / "model.safetensors"), load_file(result.checkpoint / "model.safetensors")
    assert any(not torch.equal(before[name], after[name]) for name in before)
