"""Exact TIIF reward: the share of a prompt record's yes/no questions whose answer on the image is the expected one,
answered from the scene the ShapeWorld verifier reads off the image (r3.world.tiif_exact)."""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np

from r3.rewards.inputs import check_batch
from r3.world.tiif_exact import exact_scores

PERFECT = 1.0 - 1e-9
"""A partial score at or above this is every question answered as expected (strict 1)."""


class TiifReward:
    """TIIF's score of each image against its TIIF prompt record ({"prompt", "tag": the type, "questions",
    "answers"}: r3.world.tiif_io.prompt_records, e.g. the synth TIIF suite's train records, rl.prompts: tiif).

    mode "partial" (TIIF's score, the default): the share of the questions answered as expected.
    mode "strict": 1 iff every question is answered as expected, else 0.
    A record of a type ShapeWorld cannot draw, or with a question outside the ShapeWorld grammar, raises
    OutsideGrammarError (an UnsupportedClassError): use the judge reward for those.
    """

    def __init__(self, mode: Literal["strict", "partial"] = "partial") -> None:
        if mode not in ("strict", "partial"):
            raise ValueError(f"TiifReward: mode must be 'strict' or 'partial', got {mode!r}")
        self.mode = mode
        self.name = f"tiif_{mode}"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        n = check_batch(images, records, self.name)
        if n == 0:
            return np.zeros(0)
        if missing := next((r for r in records if "questions" not in r or "answers" not in r), None):
            raise ValueError(f"{self.name}: the record of {missing.get('prompt')!r} has no 'questions' and 'answers' "
                             "(not a TIIF prompt record); train on TIIF prompts (rl.prompts: tiif)")
        scores = exact_scores(images, records)  # (N,) shares
        return scores if self.mode == "partial" else (scores >= PERFECT).astype(np.float64)
