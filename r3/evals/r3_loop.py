"""The R3 inference loop (reason -> generate -> [reflect -> refine] x rounds) and its scaling metrics.

Deterministic by construction: images are integrated with the ODE from noise fixed per (seed, row,
round), reflections are greedy, and the reasoning is greedy unless `sampling.temperature` > 0 (then
drawn from one generator seeded with `seed`). Between rounds images are kept as uint8, exactly what
the scorer sees, so the model refines the image that was scored.

Because every round's noise and text depend only on the row and the round, the first k rounds of a
run with `max_rounds` > k are the run with `max_rounds` = k: one run gives the accuracy of every
round budget 0..max_rounds. Each round records which rows got a new image (a row that stops, or stopped
before, gets none), so the images a budget cost are counted, not assumed (`R3Trace.images_generated`).
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from r3.evals.heldout import chunks, noise_for, to_uint8
from r3.models.interface import SamplingConfig, UnifiedModel
from r3.world.edits import STOP_ANSWER

ScoreFn = Callable[[np.ndarray, list[dict[str, Any]]], np.ndarray]
"""(N, H, W, 3) uint8 images and their N prompt records -> (N,) scores in [0, 1]; 1 = aligned."""


@dataclass(frozen=True)
class R3Round:
    """What the loop holds after one round."""

    images: np.ndarray
    """(N, H, W, 3) uint8 image of each row after this round (unchanged where the row had stopped)."""
    texts: list[str]
    """Round 0: the reasoning; round k >= 1: the reflection written in round k ('' for rows stopped earlier)."""
    finished: np.ndarray
    """(N,) bool, the row answered the stop answer in this round or before."""
    scores: np.ndarray
    """(N,) float score of `images`."""
    generated: np.ndarray
    """(N,) bool, the row got a new image in this round: every row in round 0, the edited rows after."""


@dataclass(frozen=True)
class R3Trace:
    prompts: list[str]
    records: list[dict[str, Any]]
    rounds: list[R3Round]
    """Round 0 (generation) then one entry per reflect-refine round."""

    def correct(self, round: int) -> np.ndarray:
        """(N,) bool: aligned (score 1) after `round`."""
        return self.rounds[round].scores >= 1.0

    def images_generated(self, round: int) -> np.ndarray:
        """(N,) int: images generated for each row in rounds 0..`round` (1 + the rounds it was edited in)."""
        return np.sum([r.generated for r in self.rounds[: round + 1]], axis=0)


def from_uint8(images: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 -> (B, 3, H, W) float in [0, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


@torch.no_grad()
def run_r3(
    model: UnifiedModel,
    records: Sequence[dict[str, Any]],
    prompts: Sequence[str],
    sampling: SamplingConfig,
    max_rounds: int,
    seed: int,
    score_fn: ScoreFn,
    canvas: int,
    batch_size: int = 64,
) -> R3Trace:
    """Run the R3 loop on every prompt, batching the rows still active in each round.

    `sampling` sets the image ODE (steps, cfg, shift) and the reasoning text (temperature, top_p,
    max_new_tokens); reflections are greedy with the same max_new_tokens.
    """
    if not records:
        raise ValueError("run_r3: no prompts to run")
    if len(records) != len(prompts):
        raise ValueError(f"run_r3: {len(records)} records for {len(prompts)} prompts")
    if sampling.sde_steps:
        raise ValueError(f"run_r3: sampling.sde_steps {sampling.sde_steps} must be empty (evaluation uses the ODE)")
    if max_rounds < 0:
        raise ValueError(f"run_r3: max_rounds must be >= 0, got {max_rounds}")
    records, prompts = list(records), list(prompts)
    n = len(prompts)
    greedy = sampling.model_copy(update={"temperature": 0.0})
    text_generator = torch.Generator().manual_seed(seed)

    reasoning: list[str] = []
    generated: list[np.ndarray] = []
    for index in chunks(n, batch_size):
        batch_prompts = [prompts[i] for i in index]
        texts = model.reason(batch_prompts, sampling, text_generator).texts
        images = model.generate(batch_prompts, texts, sampling, noise=noise_for(index, canvas, seed, 0)).images
        reasoning += texts
        generated.append(to_uint8(images))
    images = np.concatenate(generated)  # (N, H, W, 3)
    finished = np.zeros(n, dtype=bool)
    scores = np.asarray(score_fn(images, records), dtype=np.float64)
    rounds = [R3Round(images, reasoning, finished, scores, np.ones(n, dtype=bool))]

    for k in range(1, max_rounds + 1):
        previous = rounds[-1]
        images, finished, texts = previous.images.copy(), previous.finished.copy(), [""] * n
        edited_rows: list[np.ndarray] = []
        active = np.flatnonzero(~previous.finished)
        for start in range(0, len(active), batch_size):
            index = active[start : start + batch_size]
            reflections = model.reflect(from_uint8(previous.images[index]), [prompts[i] for i in index], greedy).texts
            stop = np.array([r.strip() == STOP_ANSWER for r in reflections])
            for i, r in zip(index, reflections, strict=True):
                texts[i] = r
            finished[index[stop]] = True
            edit = index[~stop]
            if len(edit):
                instructions = [r for r, s in zip(reflections, stop, strict=True) if not s]
                noise = noise_for(edit, canvas, seed, k)
                out = model.edit(from_uint8(previous.images[edit]), instructions, sampling, noise=noise)
                images[edit] = to_uint8(out.images)
                edited_rows.append(edit)
        scores = previous.scores.copy()
        edited = np.concatenate(edited_rows) if edited_rows else np.zeros(0, dtype=np.int64)
        if len(edited):
            scores[edited] = score_fn(images[edited], [records[i] for i in edited])
        generated = np.zeros(n, dtype=bool)
        generated[edited] = True
        rounds.append(R3Round(images, texts, finished, scores, generated))
    return R3Trace(prompts, records, rounds)


def scaling_metrics(trace: R3Trace) -> list[dict[str, float]]:
    """Per round: accuracy (share of rows with score 1), finished rate, and how many rows' scores went up
    (improved), down (worse) or stayed (unchanged) against the previous round (all unchanged at round 0)."""
    rows = []
    for k, current in enumerate(trace.rounds):
        before = trace.rounds[k - 1].scores if k > 0 else current.scores
        improved = int((current.scores > before).sum())
        worse = int((current.scores < before).sum())
        rows.append({
            "round": k,
            "accuracy": float(trace.correct(k).mean()),
            "finished": float(current.finished.mean()),
            "improved": improved,
            "worse": worse,
            "unchanged": len(current.scores) - improved - worse,
        })
    return rows


OUTCOMES_ON_WRONG = ("missed", "fixed", "edit_failed")
"""What a round did with a wrong image: stopped on it (a reflection error), edited it right, edited it and it
stayed wrong (the instruction or the edit failed)."""
OUTCOMES_ON_RIGHT = ("kept", "kept_edited", "broke")
"""What a round did with a right image: stopped on it, edited it and it stayed right, edited it wrong."""


def _stop_rate(stopped: np.ndarray, rows: np.ndarray, tags: Sequence[str]) -> dict[str, Any]:
    """Share of `rows` (N,) bool that `stopped` (N,) bool, overall (None without such rows) and per tag (tags with
    no such row omitted)."""
    of_tag = {t: rows & (np.asarray(tags) == t) for t in sorted(set(tags))}  # (N,) bool each
    per_tag = {t: float(stopped[members].mean()) for t, members in of_tag.items() if members.any()}
    return {"overall": float(stopped[rows].mean()) if rows.any() else None, "n": int(rows.sum()),
            "per_tag": per_tag}


def reflection_outcomes(trace: R3Trace, tags: Sequence[str]) -> dict[str, Any]:
    """How the reflect-refine rounds spent their images: the first reflection's stop rate on wrong and on right
    images (overall, with n, and per tag), and every round's cases by outcome (OUTCOMES_ON_WRONG,
    OUTCOMES_ON_RIGHT), counted over the rows still active in each round. Empty when the trace has no round."""
    if len(trace.rounds) < 2:
        return {}
    first = trace.rounds[1]
    right_before = trace.correct(0)  # (N,)
    outcomes = dict.fromkeys(OUTCOMES_ON_WRONG + OUTCOMES_ON_RIGHT, 0)
    for k in range(1, len(trace.rounds)):
        active = ~trace.rounds[k - 1].finished  # (N,)
        was_right, stopped, is_right = trace.correct(k - 1), trace.rounds[k].finished, trace.correct(k)
        for name, rows in (("missed", ~was_right & stopped), ("fixed", ~was_right & ~stopped & is_right),
                           ("edit_failed", ~was_right & ~stopped & ~is_right), ("kept", was_right & stopped),
                           ("kept_edited", was_right & ~stopped & is_right),
                           ("broke", was_right & ~stopped & ~is_right)):
            outcomes[name] += int((active & rows).sum())
    return {"stop_on_wrong": _stop_rate(first.finished, ~right_before, tags),
            "stop_on_right": _stop_rate(first.finished, right_before, tags), "outcomes": outcomes}

