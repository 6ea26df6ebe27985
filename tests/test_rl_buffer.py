"""Rollout buffer sampling and the step schedule."""

import json

import numpy as np
import pytest

from r3.rl.objective import sde_step_index, step_kind
from r3.rl.rollout import Node, RolloutBuffer


def _node(alignment: float, seed: int = 0) -> Node:
    record = {"tag": "counting", "include": [{"class": "circle", "count": 2}], "prompt": "two circles"}
    return Node(record=record, image=np.zeros((4, 4, 3), dtype=np.uint8), alignment=alignment, seed=seed)


def test_sample_node_split_matches_p_perfect():
    buffer = RolloutBuffer(capacity=100)
    buffer.extend([_node(1.0, i) for i in range(10)] + [_node(0.5, 10 + i) for i in range(30)])
    assert buffer.counts() == (10, 30)
    rng = np.random.default_rng(0)
    draws = [buffer.sample_node(rng).perfect for _ in range(20_000)]
    assert np.mean(draws) == pytest.approx(0.15, abs=0.01)


def test_sample_node_falls_back_to_the_non_empty_side():
    rng = np.random.default_rng(1)
    imperfect_only = RolloutBuffer(capacity=10)
    imperfect_only.extend([_node(0.0), _node(0.99)])
    assert not any(imperfect_only.sample_node(rng, p_perfect=1.0).perfect for _ in range(50))
    perfect_only = RolloutBuffer(capacity=10)
    perfect_only.push(_node(1.0))
    assert all(perfect_only.sample_node(rng, p_perfect=0.0).perfect for _ in range(50))


def test_sample_node_on_empty_buffer_fails_clearly():
    with pytest.raises(ValueError, match="buffer is empty"):
        RolloutBuffer(capacity=3).sample_node(np.random.default_rng(0))


def test_buffer_is_fifo_bounded():
    buffer = RolloutBuffer(capacity=3)
    for seed in range(5):
        buffer.push(_node(0.5, seed))
    assert len(buffer) == 3
    rng = np.random.default_rng(0)
    assert {buffer.sample_node(rng).seed for _ in range(100)} == {2, 3, 4}


def test_buffer_state_restores_the_same_nodes_in_fifo_order():
    buffer = RolloutBuffer(capacity=3)
    for seed in range(5):
        image = np.full((4, 4, 3), seed, dtype=np.uint8)
        buffer.push(Node({"prompt": f"p{seed}"}, image, alignment=seed / 4, seed=seed, reasoning=f"r{seed}"))
    fields, images = buffer.state()
    assert [f["seed"] for f in fields] == [2, 3, 4] and images.shape == (3, 4, 4, 3)
    json.dumps(fields)  # saved as JSON beside the stacked images
    restored = RolloutBuffer.restore(3, fields, images)
    assert [(n.seed, n.reasoning, n.alignment) for n in restored.nodes()] == [(n.seed, n.reasoning, n.alignment)
                                                                               for n in buffer.nodes()]
    assert all(np.array_equal(a.image, b.image) for a, b in zip(restored.nodes(), buffer.nodes(), strict=True))
    restored.push(_node(0.5, 9))  # the oldest leaves first, as it would have from the original buffer
    assert [n.seed for n in restored.nodes()] == [3, 4, 9]
    assert RolloutBuffer.restore(3, *RolloutBuffer(3).state()).nodes() == ()


def test_node_validates_inputs():
    with pytest.raises(ValueError, match="alignment"):
        _node(1.5)
    with pytest.raises(ValueError, match="uint8"):
        Node(record={"prompt": "x"}, image=np.zeros((4, 4, 3)), alignment=0.5, seed=0)
    with pytest.raises(ValueError, match="prompt"):
        Node(record={}, image=np.zeros((4, 4, 3), dtype=np.uint8), alignment=0.5, seed=0)


def test_step_kind_cycles():
    assert [step_kind(i) for i in range(4)] == ["reason", "refine", "reason", "refine"]
    assert [step_kind(i, reason_steps=2, refine_steps=1) for i in range(6)] == [
        "reason", "reason", "refine", "reason", "reason", "refine"
    ]
    assert {step_kind(i, refine_steps=0) for i in range(5)} == {"reason"}
    with pytest.raises(ValueError, match="reason_steps >= 1"):
        step_kind(0, reason_steps=0)


def test_sde_step_index_ranges():
    rng = np.random.default_rng(0)
    assert {sde_step_index(rng, 8, "reason") for _ in range(500)} == set(range(8))
    assert {sde_step_index(rng, 8, "refine") for _ in range(200)} == {0, 1}
    assert sde_step_index(rng, 1, "refine") == 0
    with pytest.raises(ValueError, match="stage"):
        sde_step_index(rng, 8, "reflect")
