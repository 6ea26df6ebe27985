"""Rollout buffer of reason-step outcomes, the nodes that reflect-refine steps grow children from."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from r3.rl.stage_rewards import is_perfect


@dataclass(frozen=True)
class Node:
    """One reason-step outcome: enough to score it again and to edit it."""

    record: Mapping[str, Any]
    """The prompt record (GenEval shape: tag, include, exclude?, prompt)."""
    image: np.ndarray
    """(H, W, 3) uint8, the image exactly as it was scored."""
    alignment: float
    """Its alignment reward r in [0, 1]."""
    seed: int
    """Seed of the rollout that produced it (initial noise and text sampling)."""
    reasoning: str = ""
    """The reasoning text the image was conditioned on (with seed and prompt: enough to regenerate it)."""

    def __post_init__(self) -> None:
        if "prompt" not in self.record:
            raise ValueError(f"Node: record has no 'prompt' key (keys: {sorted(self.record)})")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[-1] != 3:
            raise ValueError(f"Node: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if not 0.0 <= self.alignment <= 1.0:
            raise ValueError(f"Node: alignment must be in [0, 1], got {self.alignment}")

    @property
    def prompt(self) -> str:
        return str(self.record["prompt"])

    @property
    def perfect(self) -> bool:
        return bool(is_perfect(self.alignment))


class RolloutBuffer:
    """FIFO buffer of at most `capacity` nodes; the oldest node leaves first when full.

    Sampling does not remove a node: a node may be refined several times until it ages out.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"RolloutBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._nodes: deque[Node] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._nodes)

    def push(self, node: Node) -> None:
        self._nodes.append(node)

    def extend(self, nodes: Iterable[Node]) -> None:
        self._nodes.extend(nodes)

    def nodes(self) -> tuple[Node, ...]:
        """Every node, oldest first (the order in which they leave)."""
        return tuple(self._nodes)

    def state(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The buffer as data: each node's fields but its image (JSON-able), oldest first, and the (N, H, W, 3)
        uint8 stack of their images. `RolloutBuffer.restore` rebuilds the same buffer from them."""
        nodes = self.nodes()
        fields = [{"record": n.record, "alignment": n.alignment, "seed": n.seed, "reasoning": n.reasoning}
                  for n in nodes]
        images = np.stack([n.image for n in nodes]) if nodes else np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return fields, images

    @classmethod
    def restore(cls, capacity: int, fields: Sequence[Mapping[str, Any]], images: np.ndarray) -> RolloutBuffer:
        """The buffer whose `state()` was (fields, images)."""
        buffer = cls(capacity)
        buffer.extend(Node(f["record"], images[i], f["alignment"], f["seed"], f["reasoning"])
                      for i, f in enumerate(fields))
        return buffer

    def counts(self) -> tuple[int, int]:
        """(number of perfect nodes, number of imperfect nodes)."""
        perfect = sum(node.perfect for node in self._nodes)
        return perfect, len(self._nodes) - perfect

    def sample_node(self, rng: np.random.Generator, p_perfect: float = 0.15) -> Node:
        """With probability p_perfect a uniformly drawn node with r == 1, else one with r < 1.

        If the drawn side is empty we fall back to the other side rather than fail, so early
        in training (no perfect image yet) or late (all perfect) refinement still proceeds;
        the realised perfect fraction then differs from p_perfect.
        """
        if not 0.0 <= p_perfect <= 1.0:
            raise ValueError(f"sample_node: p_perfect must be in [0, 1], got {p_perfect}")
        if not self._nodes:
            raise ValueError("sample_node: the rollout buffer is empty; run a reason step first")
        perfect = [node for node in self._nodes if node.perfect]
        imperfect = [node for node in self._nodes if not node.perfect]
        side = perfect if rng.random() < p_perfect else imperfect
        pool = side or (imperfect if side is perfect else perfect)
        return pool[int(rng.integers(len(pool)))]
