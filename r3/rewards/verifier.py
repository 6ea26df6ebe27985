"""Exact ShapeWorld alignment reward: the pixel verifier of r3.world scores each image."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from r3.rewards.inputs import check_batch


class VerifierReward:
    """Alignment from r3.world.verifier.verify_batch.

    mode "strict": 1 iff every asserted fact holds and nothing excluded is present, else 0.
    mode "partial": the verifier's partial credit in [0, 1] (denser signal for RL).
    Records whose classes or colours are outside ShapeWorld make the verifier raise
    UnsupportedClassError: use the judge reward for those.
    """

    def __init__(self, mode: Literal["strict", "partial"] = "partial") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"VerifierReward: mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode
        self.name = f"verifier_{mode}"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        n = check_batch(images, records, self.name)
        if n == 0:
            return np.zeros(0)
        # Imported here so r3.rewards loads without the world package (e.g. judge-only setups).
        from r3.world.verifier import verify_batch

        verdicts = verify_batch(images, records)
        if self.mode == "strict":
            return np.array([float(v.strict) for v in verdicts])
        return np.array([float(v.partial) for v in verdicts])
