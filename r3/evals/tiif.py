"""TIIF-Bench files: which scorer a file needs, its items as prompt records, exact scores on ShapeWorld images,
scores per type with 95% intervals.

A TIIF record's two prompts (short and long description) are each scored by the share of the record's yes/no
questions whose answer on the generated image is the expected one. A file whose every record is of a type ShapeWorld
can draw and whose every question is in the ShapeWorld grammar (r3.world.tiif_exact) is scored exactly, from the
scene the verifier reads off the image; any other file needs the judge reward (evaluate.judge), for all of its
questions, so that the numbers of one file never mix two scorers. The evaluate stage runs the short and the long
descriptions as two suites, tiif_short and tiif_long, tagged by type.
"""

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np

from r3.errors import InputError
from r3.evals.benchmarks import accuracy_by_tag
from r3.evals.r3_loop import R3Trace, ScoreFn
from r3.evals.report import wilson_interval
from r3.rewards.base import Reward, RewardConfig
from r3.world.tiif_exact import exact_scores, in_grammar, type_refusal
from r3.world.tiif_io import DESCRIPTIONS, TiifRecord

Scorer = Literal["exact", "judge"]

JUDGE_SETTING = "evaluate.judge"
"""The param that configures the judge reward for prompts outside ShapeWorld."""

JUDGE_FIX = f"set {JUDGE_SETTING} to {{name: judge, params: {{url: ..., model: ...}}}}"


def suite(description: str) -> str:
    """The evaluate suite of one description: tiif_short, tiif_long."""
    return f"tiif_{description}"


TIIF_SUITES = tuple(suite(d) for d in DESCRIPTIONS)


def _judge_only(path: str | Path, records: Sequence[TiifRecord]) -> str | None:
    """Why the file needs the judge ("{path}:{line}: ..."), naming its first record of a type ShapeWorld cannot draw,
    else its first question outside the grammar; None when every record can be scored exactly."""
    refused = [(r.line, refusal) for r in records if (refusal := type_refusal(r.type))]
    if refused:
        line, refusal = refused[0]
        return (f"{path}:{line}: {refusal} ({len(refused)} of {len(records)} records of the file are "
                "of such types), so the file needs the judge reward")
    outside = [(r.line, q) for r in records for q in r.questions if not in_grammar(q)]
    if outside:
        line, question = outside[0]
        total = sum(len(r.questions) for r in records)
        return (f"{path}:{line}: question {question!r} is outside the ShapeWorld question grammar ({len(outside)} of "
                f"{total} questions of the file are), so the file needs the judge reward")
    return None


def tiif_scorer(path: str | Path, records: Sequence[TiifRecord], judge: RewardConfig | None) -> Scorer:
    """"exact" when every record is of a type ShapeWorld can draw and every question is in the ShapeWorld grammar,
    else "judge"; an InputError (one line naming the file, line and type or question, and the setting) when the file
    needs a judge and none is set, or the one set is not the judge reward in partial mode (whose score is the share of
    questions answered as expected)."""
    if not records:
        raise InputError(f"{path}: no TIIF records in the file; give a file with records")
    needs = _judge_only(path, records)
    if needs is None:
        return "exact"
    if judge is None:
        raise InputError(f"{needs}, but {JUDGE_SETTING} is not set; {JUDGE_FIX}")
    if judge.name != "judge" or judge.params.get("mode", "partial") != "partial":
        raise InputError(f"{needs} in partial mode (the share of questions answered as expected), but {JUDGE_SETTING} "
                         f"is {judge.name!r} in mode {judge.params.get('mode', 'default')!r}; {JUDGE_FIX}")
    return "judge"


def score_fn(scorer: Scorer, judge: Reward | None) -> ScoreFn:
    """The R3 loop's scorer of TIIF prompt records: exact_scores, or the judge reward (partial: the share)."""
    if scorer == "exact":
        return exact_scores
    if judge is None:
        raise ValueError("tiif.score_fn: the file needs the judge reward and none was given")
    return judge


def scores_by_round(trace: R3Trace, tags: Sequence[str]) -> list[dict]:
    """After each round of the trace: {"overall": mean of the per-type scores, "per_tag": {type: mean score}}."""
    return [accuracy_by_tag(r.scores, tags) for r in trace.rounds]


def _with_interval(score: float, n: int) -> dict[str, float]:
    low, high = wilson_interval(score, n)
    return {"score": score, "low": low, "high": high, "n": n}


def type_scores(scores: Sequence[float], types: Sequence[str]) -> dict[str, Any]:
    """{"overall": ..., "per_type": {type: ...}} of one description's items, each {"score", "low", "high", "n"}: the
    mean score of its n items with a 95% Wilson interval (a score in [0, 1] of mean p varies at most as a yes/no of
    share p does, so the interval is conservative). overall is the mean of the types, its n every item."""
    if len(scores) != len(types) or not len(scores):
        raise ValueError(f"type_scores: {len(scores)} scores for {len(types)} types (need >= 1 each)")
    means = accuracy_by_tag(np.asarray(scores, dtype=np.float64), types)
    per_type = {t: _with_interval(s, list(types).count(t)) for t, s in means["per_tag"].items()}
    return {"overall": _with_interval(means["overall"], len(types)), "per_type": per_type}
