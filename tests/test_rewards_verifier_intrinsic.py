"""Verifier and intrinsic rewards against stand-ins, plus the real verifier once r3.world exists."""

import sys
import types
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from r3.rewards import IntrinsicReward, VerifierReward

IMAGES = np.zeros((2, 4, 4, 3), dtype=np.uint8)
RECORDS = [{"prompt": "a red circle"}, {"prompt": "two blue squares"}]


@dataclass(frozen=True)
class StubVerdict:
    strict: int
    partial: float


@pytest.fixture
def stub_verifier(monkeypatch):
    seen = {}

    def verify_batch(images, records):
        seen["n"] = len(records)
        return [StubVerdict(1, 1.0), StubVerdict(0, 0.25)]

    module = types.ModuleType("r3.world.verifier")
    module.verify_batch = verify_batch
    monkeypatch.setitem(sys.modules, "r3.world.verifier", module)
    return seen


def test_verifier_reward_modes(stub_verifier):
    np.testing.assert_array_equal(VerifierReward("strict")(IMAGES, RECORDS), [1.0, 0.0])
    np.testing.assert_allclose(VerifierReward("partial")(IMAGES, RECORDS), [1.0, 0.25])
    assert stub_verifier["n"] == 2


def test_reward_input_checks(stub_verifier):
    with pytest.raises(ValueError, match="uint8"):
        VerifierReward()(IMAGES.astype(np.float32), RECORDS)
    with pytest.raises(ValueError, match="2 images but 1 records"):
        VerifierReward()(IMAGES, RECORDS[:1])


def test_verifier_reward_on_real_renders():
    """Runs once r3.world lands: a clean render scores 1 on its own prompt, not on a wrong count."""
    pytest.importorskip("r3.world.verifier")
    pytest.importorskip("r3.world.render")
    from r3.world.render import render
    from r3.world.scene import Scene, SceneObject

    scene = Scene(
        objects=(SceneObject("circle", "red", "large", 8.0, 16.0), SceneObject("square", "blue", "large", 24.0, 16.0)),
        canvas=32,
    )
    right = {
        "tag": "color_spatial_attr",
        "include": [
            {"class": "circle", "count": 1, "color": "red"},
            {"class": "square", "count": 1, "color": "blue", "position": ["right of", 0]},
        ],
        "prompt": "a blue square right of a red circle",
    }
    wrong = {"tag": "counting", "include": [{"class": "circle", "count": 2, "color": "red"}], "prompt": "two red circles"}
    images = np.stack([render(scene), render(scene)])
    np.testing.assert_array_equal(VerifierReward("strict")(images, [right, wrong]), [1.0, 0.0])
    partial = VerifierReward("partial")(images, [right, wrong])
    assert partial[0] == 1.0 and 0.0 <= partial[1] < 1.0


class FakeUnderstander:
    def __init__(self, score: float) -> None:
        self.score = score
        self.inputs = None

    def prompt_likelihood(self, images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        self.inputs = (images, prompts)
        return torch.full((len(prompts),), self.score)


def test_intrinsic_reward_uses_reference_by_default():
    policy, reference = FakeUnderstander(0.9), FakeUnderstander(0.3)
    images = np.full((2, 4, 4, 3), 255, dtype=np.uint8)
    scores = IntrinsicReward()(images, RECORDS, policy=policy, reference=reference)
    np.testing.assert_allclose(scores, [0.3, 0.3], rtol=1e-6)
    assert policy.inputs is None
    pixels, prompts = reference.inputs
    assert pixels.shape == (2, 3, 4, 4) and pixels.dtype == torch.float32 and torch.all(pixels == 1.0)
    assert prompts == ["a red circle", "two blue squares"]
    np.testing.assert_allclose(IntrinsicReward("policy")(images, RECORDS, policy=policy), [0.9, 0.9], rtol=1e-6)


def test_intrinsic_reward_needs_its_model():
    with pytest.raises(ValueError, match=r"ctx\['reference'\]"):
        IntrinsicReward()(IMAGES, RECORDS, policy=FakeUnderstander(0.5))
