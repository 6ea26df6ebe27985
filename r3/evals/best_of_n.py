"""R3 against best-of-N at equal compute: N independent samples per prompt, one picked by the model's own judge
(its ITA skill, no access to the verifier) or by the exact verifier (the oracle, the ceiling of any picker),
against the R3 loop allowed as many images.

Compute is counted in images generated per prompt (each one a whole ODE integration, the dominant cost):
best-of-N generates N; the R3 loop with up to N - 1 reflect-refine rounds generates 1 + the rounds in which it
edited the row, counted from its trace (`R3Trace.images_generated`: a round that answers the stop answer
generates none). Text (reasoning, reflections, judge calls) is not counted.

Sample j of every prompt reasons at `temperature` > 0 (at 0 every sample would share the greedy layout) from a
generator seeded by (seed, j) and drawn chunk by chunk in row order, and generates from noise fixed by (seed, j,
row), apart from the R3 loop's noise. Sample j does not depend on N, so one run of N samples gives best-of-n for
every n <= N (the first n samples). The R3 loop's round-0 image is not one of the samples: it reasons at
evaluate.sampling.temperature (greedy by default), another distribution than the samples'.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from r3.evals.benchmarks import accuracy_by_tag
from r3.evals.heldout import chunks, to_uint8
from r3.evals.r3_loop import R3Trace, ScoreFn, from_uint8
from r3.models.interface import SamplingConfig, UnifiedModel

STREAM = 0xB0F
"""First entropy word of every best-of-N seed: keeps its streams apart from the R3 loop's."""


@dataclass(frozen=True)
class Samples:
    """N independent samples per prompt, as the model's judge and the verifier score them."""

    judged: np.ndarray
    """(P, N) the model's judge probability that sample j matches prompt i."""
    scores: np.ndarray
    """(P, N) exact score of sample j of prompt i (1 = aligned)."""


def sample_seed(seed: int, sample: int, row: int | None = None) -> int:
    """Seed of sample `sample`'s reasoning generator (row None) or of one row's starting noise."""
    entropy = [STREAM, seed, sample] + ([] if row is None else [row])
    return int(np.random.SeedSequence(entropy).generate_state(1)[0])


def sample_noise(index: np.ndarray, canvas: int, seed: int, sample: int) -> Tensor:
    """(B, 3, H, W) starting noise of one sample of rows `index`, fixed by (seed, sample, row)."""
    return torch.stack([
        torch.randn(3, canvas, canvas, generator=torch.Generator().manual_seed(sample_seed(seed, sample, int(i))))
        for i in index
    ])


@torch.no_grad()
def sample_best_of_n(
    model: UnifiedModel,
    records: Sequence[dict[str, Any]],
    prompts: Sequence[str],
    sampling: SamplingConfig,
    n: int,
    seed: int,
    score_fn: ScoreFn,
    canvas: int,
    batch_size: int = 64,
) -> Samples:
    """Reason (at `sampling.temperature`, which must be > 0) and generate `n` samples per prompt; the model judges
    each image against its prompt and `score_fn` scores it."""
    if sampling.temperature <= 0:
        raise ValueError("sample_best_of_n: sampling.temperature must be > 0, else every sample has the same layout")
    if n < 1:
        raise ValueError(f"sample_best_of_n: n must be >= 1, got {n}")
    if len(records) != len(prompts):
        raise ValueError(f"sample_best_of_n: {len(records)} records for {len(prompts)} prompts")
    records, prompts = list(records), list(prompts)
    judged, scores = np.zeros((len(prompts), n)), np.zeros((len(prompts), n))
    for j in range(n):
        generator = torch.Generator().manual_seed(sample_seed(seed, j))
        for index in chunks(len(prompts), batch_size):
            batch = [prompts[i] for i in index]
            texts = model.reason(batch, sampling, generator).texts
            noise = sample_noise(index, canvas, seed, j)
            images = to_uint8(model.generate(batch, texts, sampling, noise=noise).images)  # (B, H, W, 3)
            judged[index, j] = model.judge(from_uint8(images), batch).float().cpu().numpy()
            scores[index, j] = score_fn(images, [records[i] for i in index])
    return Samples(judged, scores)


def judge_picks(judged: np.ndarray, n: int) -> np.ndarray:
    """(P,) the sample each prompt's judge rates most likely aligned among its first n (the first on ties)."""
    return judged[:, :n].argmax(axis=1)  # (P,)


def best_of_n_correct(samples: Samples, n: int) -> np.ndarray:
    """(P,) bool: the judge's pick among the first n samples is aligned."""
    picks = judge_picks(samples.judged, n)  # (P,)
    return samples.scores[np.arange(len(picks)), picks] >= 1.0


def oracle_correct(samples: Samples, n: int) -> np.ndarray:
    """(P,) bool: some sample among the first n is aligned (the verifier picks)."""
    return (samples.scores[:, :n] >= 1.0).any(axis=1)


def sampled_accuracy(samples: Samples, n: int, tags: Sequence[str]) -> float:
    """Mean over the first n samples of each one's accuracy (mean of tag accuracies): the policy as it is sampled
    at the samples' temperature, against the greedy reasoning the headline reads."""
    return float(np.mean([accuracy_by_tag(samples.scores[:, j] >= 1.0, tags)["overall"] for j in range(n)]))


def equal_compute(trace: R3Trace, samples: Samples, tags: Sequence[str]) -> list[dict[str, float]]:
    """Per budget of n = 1 .. rounds + 1 images per prompt: accuracy (mean of tag accuracies) of R3 with up to
    n - 1 rounds and the mean images it generated, of best-of-n (the judge picks), of the oracle best-of-n, and of
    one sample (sampled_accuracy over the n)."""
    if samples.scores.shape != (len(trace.records), len(trace.rounds)):
        raise ValueError(f"equal_compute: samples {samples.scores.shape} for {len(trace.records)} prompts and "
                         f"{len(trace.rounds)} images at most")
    return [{
        "images": n,
        "r3": accuracy_by_tag(trace.correct(n - 1), tags)["overall"],
        "r3_images": float(trace.images_generated(n - 1).mean()),
        "best_of_n": accuracy_by_tag(best_of_n_correct(samples, n), tags)["overall"],
        "oracle": accuracy_by_tag(oracle_correct(samples, n), tags)["overall"],
        "sampled": sampled_accuracy(samples, n, tags),
    } for n in range(1, len(trace.rounds) + 1)]
