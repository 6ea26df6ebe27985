"""The no-reward control (`-S rl.reward.name=none`): alignment 0 for every sample, so no image advantage and no
alignment term in the text rewards, while the verifier's score is still logged as the training-reward curve."""

import numpy as np
import torch

from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.rewards import RewardConfig, VerifierReward, build_reward, score_with_components
from r3.rl.config import RlConfig
from r3.rl.rollout import reason_rollouts
from r3.world.render import render
from r3.world.scene import Scene, SceneObject
from r3.world.vocabulary import vocabulary

RECORD = {
    "tag": "color_spatial_attr",
    "include": [
        {"class": "circle", "count": 1, "color": "red"},
        {"class": "square", "count": 1, "color": "blue", "position": ["right of", 0]},
    ],
    "prompt": "a blue square right of a red circle",
}
WRONG = {"tag": "counting", "include": [{"class": "circle", "count": 2, "color": "red"}], "prompt": "two red circles"}
# The params of params.yaml's default reward stay in place when only the name is overridden.
CONTROL = RewardConfig(name="none", params={"mode": "partial"})


def test_control_trains_on_zero_and_logs_the_verifier_score() -> None:
    scene = Scene(objects=(SceneObject("circle", "red", "large", 8.0, 16.0),
                           SceneObject("square", "blue", "large", 24.0, 16.0)), canvas=32)
    images = np.stack([render(scene), render(scene)])
    total, components = score_with_components(build_reward(CONTROL), images, [RECORD, WRONG])
    np.testing.assert_array_equal(total, [0.0, 0.0])
    assert set(components) == {"zero", "verifier_partial"}
    np.testing.assert_array_equal(components["verifier_partial"], VerifierReward("partial")(images, [RECORD, WRONG]))
    assert components["verifier_partial"][0] == 1.0  # the aligned render: the monitor sees it, training does not


def test_control_reason_step_has_no_image_signal() -> None:
    torch.manual_seed(0)
    model = TinyUnifiedModel(TinyConfig(canvas=32, patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64,
                                        head_width=32, head_layers=1, head_heads=2), build_tokenizer(vocabulary()))
    cfg = RlConfig(group_size=4, sample_steps=3, max_new_tokens=8, reward=CONTROL)
    rollouts, nodes = reason_rollouts(model, model, build_reward(CONTROL), [RECORD, WRONG], cfg.rollout_settings(),
                                      sde_index=0, seeds=[1, 2], generator=torch.Generator().manual_seed(0))
    assert torch.count_nonzero(rollouts.image_advantages) == 0
    assert rollouts.stats["reward/reason_mean"] == 0.0 and all(node.alignment == 0.0 for node in nodes)
    monitor = VerifierReward("partial")(np.stack([node.image for node in nodes]), [node.record for node in nodes])
    assert rollouts.stats["reward/verifier_partial"] == float(np.mean(monitor))
