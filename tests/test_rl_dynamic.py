"""Dynamic sampling (a step draws groups until enough are informative), the permuted-reward null control, and the
reflection's own temperature."""

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
import torch
from test_rl_train import BASE, RED_REWARD, build_inputs, register_test_reward, rl_config

from r3.data.table import Table
from r3.models.tiny import TinyUnifiedModel
from r3.rewards import REGISTRY, RewardConfig
from r3.rewards.base import build_reward
from r3.rl.checkpoint import fresh_state
from r3.rl.config import RlConfig
from r3.rl.objective import group_has_signal, permuted_within_groups, random_orders
from r3.rl.rollout import concat_texts, reason_rollouts
from r3.rl.train import train_step, validation_split


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_inputs(tmp_path_factory.mktemp("rl_dynamic"))


@pytest.fixture(autouse=True)
def test_reward() -> None:
    register_test_reward()


def one_step(inputs: tuple[Path, Path], cfg: RlConfig, reward: RewardConfig) -> tuple[dict[str, float], bool, int]:
    """Train step 0 (a reason step) from the tiny checkpoint: its metrics, whether any weight moved, buffer size."""
    init, synth = inputs
    state = fresh_state(BASE, cfg, init)
    reference = TinyUnifiedModel.from_pretrained(init).eval().requires_grad_(False)
    metrics = train_step(state, reference, build_reward(reward), Table.load(synth / "train" / "prompts.parquet"), cfg)
    moved = any(not torch.equal(p, q) for p, q in zip(state.policy.parameters(), reference.parameters()))
    return metrics, moved, len(state.buffer)


def test_a_step_draws_until_it_holds_enough_informative_groups(inputs: tuple[Path, Path]) -> None:
    """Without drop_equal_groups every group counts (its samples all enter the loss): 3 groups of 2 prompts x 4 need
    2 draws, and their 4 groups make one update; every draw's nodes join the buffer."""
    cfg = rl_config(drop_equal_groups=False, min_informative_groups=3, max_draws=4)
    metrics, moved, buffered = one_step(inputs, cfg, RED_REWARD)
    assert (metrics["rl/draws"], metrics["rl/groups_informative"], metrics["train/skipped"]) == (2.0, 4.0, 0.0)
    assert moved and buffered == 2 * 2 * 4


def test_a_step_that_stays_short_of_informative_groups_is_skipped(inputs: tuple[Path, Path]) -> None:
    """No reward signal on an untrained model (nothing parses, every alignment 0): every draw up to the cap is made,
    none is informative, and neither weights nor optimizer move."""
    control = RewardConfig(name="none", params={"mode": "strict"})
    cfg = rl_config(reward=control, drop_equal_groups=True, min_informative_groups=1, max_draws=3, weight_decay=0.1)
    metrics, moved, buffered = one_step(inputs, cfg, control)
    assert (metrics["rl/draws"], metrics["rl/groups_informative"], metrics["train/skipped"]) == (3.0, 0.0, 1.0)
    assert not moved and buffered == 3 * 2 * 4


def test_one_draw_is_the_default_and_more_groups_than_the_draws_hold_is_refused() -> None:
    assert (RlConfig().min_informative_groups, RlConfig().max_draws) == (1, 1)
    with pytest.raises(ValueError, match="min_informative_groups=33 exceeds the 32 groups"):
        RlConfig(min_informative_groups=33, max_draws=2)


def test_group_signal_is_text_or_image() -> None:
    text = torch.tensor([1.0, 1, 0, 0, 0, 0])  # (N G,) with G = 2
    image = torch.tensor([0.0, 0, 1, 1, 0, 0])
    assert group_has_signal(text, image, 2).tolist() == [True, True, False]


def test_permuted_rewards_keep_each_group_and_share_one_order() -> None:
    text = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])  # (N, G)
    image = text * 10
    order = random_orders(2, 4, torch.Generator().manual_seed(0))
    shuffled_text, shuffled_image = permuted_within_groups(text, order), permuted_within_groups(image, order)
    assert torch.equal(shuffled_text.sort(dim=1).values, text)  # each group keeps its own rewards
    assert torch.equal(shuffled_image, shuffled_text * 10)  # a sample's text and image rewards move together
    assert not torch.equal(shuffled_text, text)
    with pytest.raises(ValueError, match="order"):
        permuted_within_groups(text, order[:1])


class PositionReward:
    """Sample i of N earns i / N: every group's rewards differ, whatever the images."""

    name = "position"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        return np.arange(len(images)) / len(images)


def test_the_null_control_samples_the_same_rollouts_with_shuffled_advantages(
    inputs: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    init, synth = inputs
    policy = TinyUnifiedModel.from_pretrained(init).eval()
    records = Table.load(synth / "train" / "prompts.parquet").records([0, 1])
    monkeypatch.setitem(REGISTRY, "test_position", PositionReward)
    reward = build_reward(RewardConfig(name="test_position"))
    runs = {}
    for permute in (False, True):
        settings = rl_config(permute_rewards=permute).rollout_settings()
        runs[permute], _ = reason_rollouts(policy, policy, reward, records, settings, 1, [5, 6],
                                           torch.Generator().manual_seed(0))
    real, null = runs[False], runs[True]
    assert real.text.texts == null.text.texts and real.stats["reward/reason_mean"] == null.stats["reward/reason_mean"]
    for a, b in ((real.image_advantages, null.image_advantages), (real.text_advantages, null.text_advantages)):
        assert torch.allclose(a.view(2, 4).sort(dim=1).values, b.view(2, 4).sort(dim=1).values)
    assert not torch.allclose(real.image_advantages, null.image_advantages)


def test_reflections_sample_at_their_own_temperature() -> None:
    settings = RlConfig(temperature=0.7, reflect_temperature=1.0).rollout_settings()
    assert (settings.text.temperature, settings.reflection.temperature) == (0.7, 1.0)
    assert RlConfig().rollout_settings().reflection.temperature == 1.0  # the default: reflections apart
    assert RlConfig(temperature=0.5, reflect_temperature=None).rollout_settings().reflection.temperature == 0.5


def test_concatenated_texts_pad_to_the_longest_draw(inputs: tuple[Path, Path]) -> None:
    init, _ = inputs
    policy = TinyUnifiedModel.from_pretrained(init).eval()
    short, long = (policy.reason(["A photo of a red circle"], rl_config(max_new_tokens=n).rollout_settings().text,
                                 torch.Generator().manual_seed(0)) for n in (3, 8))
    both = concat_texts([short, long])
    width = long.token_ids.shape[1]
    assert both.token_ids.shape == (2, width) and both.mask.dtype == torch.bool
    assert torch.equal(both.token_ids[1], long.token_ids[0]) and torch.equal(both.logprobs[1], long.logprobs[0])
    assert int(both.mask[0].sum()) == int(short.mask[0].sum())
    assert both.query.contexts == ["A photo of a red circle"] * 2


def test_validation_rows_are_spread_over_train_and_never_drawn(inputs: tuple[Path, Path]) -> None:
    _, synth = inputs
    table = Table.load(synth / "train" / "prompts.parquet")  # 26 rows, tags cycled
    drawn, validation = validation_split(table, 5)
    assert (len(drawn), len(validation)) == (21, 5)
    assert validation.frame["prompt"].to_list() == [table.texts("prompt", [i])[0] for i in (0, 6, 12, 19, 25)]
    assert not set(map(str, validation.frame.rows())) & set(map(str, drawn.frame.rows()))
    assert len(validation_split(table, 0)[1]) == 0 and len(validation_split(table, 0)[0]) == 26
