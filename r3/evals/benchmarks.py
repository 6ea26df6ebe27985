"""Benchmark scores: GenEval++-style and GenEval-style generation accuracy from R3 traces, ITA and VQA.

Generation follows GenEval's rules as the verifier implements them (every include entry present
with its count, colour, size and position, and GenEval++'s region and relative size; nothing excluded
present): a row is correct when its score is 1. A suite's overall accuracy is the mean of its tag accuracies, as GenEval++ reports it.
Records outside ShapeWorld are scored by a judge reward instead of the verifier.
"""

from collections.abc import Sequence
from typing import Any

import numpy as np

from r3.data.table import Table
from r3.evals import heldout
from r3.evals.r3_loop import R3Trace, ScoreFn
from r3.models.interface import UnifiedModel
from r3.rewards.base import Reward
from r3.world.verifier import UnsupportedClassError, check_supported, verify_batch


def unsupported(records: Sequence[dict[str, Any]]) -> list[str]:
    """The verifier's one-line complaint about each record it cannot check (empty when all are ShapeWorld)."""
    problems = []
    for record in records:
        try:
            check_supported(record)
        except UnsupportedClassError as error:
            problems.append(str(error))
    return problems


def make_score_fn(judge: Reward | None) -> ScoreFn:
    """Strict verifier score on ShapeWorld records, the judge's score on the others (an error without a judge)."""

    def score(images: np.ndarray, records: list[dict[str, Any]]) -> np.ndarray:
        shapeworld = np.array([not unsupported([r]) for r in records], dtype=bool)
        scores = np.zeros(len(records))
        own = np.flatnonzero(shapeworld)
        if len(own):
            verdicts = verify_batch(images[own], [records[i] for i in own])
            scores[own] = [v.strict for v in verdicts]
        other = np.flatnonzero(~shapeworld)
        if len(other):
            if judge is None:
                raise UnsupportedClassError(unsupported([records[other[0]]])[0])
            scores[other] = judge(np.ascontiguousarray(images[other]), [records[i] for i in other])
        return scores

    return score


def accuracy_by_tag(correct: np.ndarray, tags: Sequence[str]) -> dict:
    """{"overall": mean of the tag accuracies, "per_tag": {tag: share of correct rows}}."""
    per_tag = heldout.grouped_mean([float(c) for c in correct], list(tags))
    return {"overall": float(np.mean(list(per_tag.values()))), "per_tag": per_tag}


def generation_by_round(trace: R3Trace, tags: Sequence[str]) -> list[dict]:
    """accuracy_by_tag after each round of the trace (round 0 = plain reason + generate)."""
    if len(tags) != len(trace.records):
        raise ValueError(f"generation_by_round: {len(tags)} tags for {len(trace.records)} trace rows")
    return [accuracy_by_tag(trace.correct(k), tags) for k in range(len(trace.rounds))]


def understanding(model: UnifiedModel, ita: Table, vqa: Table, batch_size: int = 64) -> dict:
    """ITA (aligned yes/no, per suite/tag) and VQA (exact answer, per category) accuracy on held-out tables, each
    with the number of rows it rests on (n)."""
    return {
        "ita": {**heldout.ita_accuracy(model, ita, batch_size=batch_size), "n": len(ita)},
        "vqa": {**heldout.vqa_accuracy(model, vqa, batch_size=batch_size), "n": len(vqa)},
    }
