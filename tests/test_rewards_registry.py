"""Reward registry, config validation and weighted sums."""

import numpy as np
import pytest
from pydantic import ValidationError

from r3.rewards import (
    REGISTRY,
    IntrinsicReward,
    JudgeReward,
    RewardConfig,
    VerifierReward,
    WeightedReward,
    build_reward,
    score_with_components,
)

IMAGES = np.zeros((3, 4, 4, 3), dtype=np.uint8)
RECORDS = [{"prompt": f"p{i}"} for i in range(3)]


class FakeReward:
    def __init__(self, values: list[float], name: str = "fake") -> None:
        self.values = np.array(values)
        self.name = name
        self.calls = 0

    def __call__(self, images, records, **ctx):
        self.calls += 1
        return self.values[: len(records)]


def test_registry_names_and_builds():
    assert set(REGISTRY) == {"verifier", "intrinsic", "judge", "tiif", "none"}
    assert isinstance(build_reward(RewardConfig(name="verifier", params={"mode": "strict"})), VerifierReward)
    assert isinstance(build_reward(RewardConfig(name="intrinsic")), IntrinsicReward)
    judge = build_reward(RewardConfig(name="judge", params={"url": "http://127.0.0.1:1/v1", "model": "m"}))
    assert isinstance(judge, JudgeReward) and judge.endpoint == "http://127.0.0.1:1/v1/chat/completions"


def test_unknown_name_lists_valid_names_on_one_line():
    with pytest.raises(ValueError) as err:
        build_reward(RewardConfig(name="clip_score"))
    message = str(err.value)
    assert "\n" not in message and "'clip_score'" in message
    assert "intrinsic, judge, none, tiif, verifier, weighted" in message


def test_bad_params_fail_clearly():
    with pytest.raises(ValueError, match=r"reward 'verifier': bad params \['bogus'\]"):
        build_reward(RewardConfig(name="verifier", params={"bogus": 1}))
    with pytest.raises(ValueError, match="mode must be"):
        build_reward(RewardConfig(name="verifier", params={"mode": "lenient"}))


@pytest.mark.parametrize(
    "bad",
    [
        {"name": "weighted", "components": [{"name": "verifier"}], "weights": [0.5, 0.5]},
        {"name": "weighted", "components": [{"name": "verifier"}, {"name": "intrinsic"}], "weights": [0.7, 0.7]},
        {"name": "weighted"},
        {"name": "verifier", "weights": [1.0]},
        {"name": "verifier", "mode": "strict"},  # params belong under `params`
    ],
)
def test_invalid_configs_are_rejected(bad):
    with pytest.raises(ValidationError):
        RewardConfig.model_validate(bad)


def test_weighted_sum_and_components(monkeypatch):
    a = FakeReward([1.0, 0.0, 0.5], name="a")
    b = FakeReward([0.0, 1.0, 0.5], name="b")
    monkeypatch.setitem(REGISTRY, "fake_a", lambda: a)
    monkeypatch.setitem(REGISTRY, "fake_b", lambda: b)
    spec = RewardConfig(name="weighted", components=[{"name": "fake_a"}, {"name": "fake_b"}], weights=[0.25, 0.75])
    reward = build_reward(spec)
    np.testing.assert_allclose(reward(IMAGES, RECORDS), [0.25, 0.75, 0.5])
    total, components = score_with_components(reward, IMAGES, RECORDS)
    np.testing.assert_allclose(total, [0.25, 0.75, 0.5])
    assert list(components) == ["a", "b"]
    np.testing.assert_allclose(components["a"], [1.0, 0.0, 0.5])
    assert a.calls == 2 and b.calls == 2  # score_with_components ran each reward once


def test_plain_reward_is_its_own_component():
    total, components = score_with_components(FakeReward([0.2, 0.4, 0.6]), IMAGES, RECORDS)
    np.testing.assert_allclose(total, [0.2, 0.4, 0.6])
    assert list(components) == ["fake"]


def test_weighted_rejects_duplicate_names_and_bad_shapes():
    with pytest.raises(ValueError, match="unique"):
        WeightedReward([FakeReward([1.0]), FakeReward([0.0])], [0.5, 0.5])
    short = WeightedReward([FakeReward([1.0], name="short")], [1.0])
    with pytest.raises(ValueError, match=r"short: returned shape \(1,\), expected \(3,\)"):
        short(IMAGES, RECORDS)
