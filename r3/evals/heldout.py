"""Held-out skill metrics of a unified model, measured with the exact verifier and exact answers.

Every function is deterministic: greedy text, ODE images from noise seeded per row chunk.
Accuracies are plain means over rows; `per_tag` / `per_category` break them down, and a suite's
overall generation accuracy is the mean of its tag accuracies (as GenEval++ computes it).
"""

from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from r3.data.table import Table
from r3.models.interface import SamplingConfig, UnifiedModel
from r3.world.edits import STOP_ANSWER
from r3.world.layout import layout_satisfies
from r3.world.verifier import Verdict, verify_batch

GREEDY = SamplingConfig(temperature=0.0, max_new_tokens=64)
"""Held-out reasoning: greedy, long enough for a layout of nine objects (62 tokens and the end token)."""


def chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))


def to_uint8(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) float in [0, 1] -> (B, H, W, 3) uint8 for the verifier."""
    return (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def row_seed(seed: int, row: int, round: int = 0) -> int:
    """Seed of one row's noise in one sampling round; round 0 keeps the seeds generation metrics always used."""
    first = seed * 1_000_003 + row
    return first if round == 0 else int(np.random.SeedSequence([first, round]).generate_state(1)[0])


def seeded_noise(seeds: Sequence[int], canvas: int) -> Tensor:
    """(len(seeds), 3, H, W) starting noise, row i drawn from its own generator seeded by seeds[i], so a row's
    noise does not depend on the batch it is in."""
    return torch.stack([
        torch.randn(3, canvas, canvas, generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ])


def noise_for(index: np.ndarray, canvas: int, seed: int, round: int = 0) -> Tensor:
    """(B, 3, H, W) starting noise fixed by (seed, row, round), independent of batch size."""
    return seeded_noise([row_seed(seed, int(i), round) for i in index], canvas)


def grouped_mean(values: list[float], keys: list[str]) -> dict[str, float]:
    groups: dict[str, list[float]] = defaultdict(list)
    for value, key in zip(values, keys, strict=True):
        groups[key].append(value)
    return {key: float(np.mean(v)) for key, v in sorted(groups.items())}


def summary(values: list[float], keys: list[str]) -> dict:
    per_key = grouped_mean(values, keys)
    return {"overall": float(np.mean(values)), "per_tag": per_key}


def _tag_keys(table: Table, index: np.ndarray) -> list[str]:
    return [f"{s}/{t}" for s, t in zip(table.texts("suite", index), table.texts("tag", index), strict=True)]


def _over_rows(table: Table, batch_size: int, limit: int | None, fn: Callable[[np.ndarray], list[Any]]) -> tuple[list[Any], np.ndarray]:
    n = len(table) if limit is None else min(limit, len(table))
    values: list[Any] = []
    for index in chunks(n, batch_size):
        values += fn(index)
    return values, np.arange(n)


@torch.no_grad()
def vqa_accuracy(model: UnifiedModel, vqa: Table, batch_size: int = 64, limit: int | None = None) -> dict:
    def score(index: np.ndarray) -> list[float]:
        answers = model.answer(vqa.pixels("image", index), vqa.texts("question", index)).texts
        return [float(a.strip() == t) for a, t in zip(answers, vqa.texts("answer", index), strict=True)]

    values, index = _over_rows(vqa, batch_size, limit, score)
    return {"overall": float(np.mean(values)), "per_category": grouped_mean(values, vqa.texts("category", index))}


@torch.no_grad()
def ita_accuracy(model: UnifiedModel, ita: Table, batch_size: int = 64, limit: int | None = None) -> dict:
    def score(index: np.ndarray) -> list[float]:
        aligned = (model.judge(ita.pixels("image", index), ita.texts("prompt", index)) > 0.5).tolist()
        return [float(a == (t == "yes")) for a, t in zip(aligned, ita.texts("answer", index), strict=True)]

    values, index = _over_rows(ita, batch_size, limit, score)
    return summary(values, _tag_keys(ita, index))


@torch.no_grad()
def reasoning_validity(model: UnifiedModel, enrichment: Table, canvas: int, batch_size: int = 64,
                       limit: int | None = None) -> dict:
    """Share of greedy layouts that satisfy their prompt and obey the world's spacing rule (r3.world.layout
    .layout_satisfies): the layouts the exact codec draws as written."""

    def score(index: np.ndarray) -> list[float]:
        texts = model.reason(enrichment.texts("prompt", index), GREEDY).texts
        return [float(layout_satisfies(z, r, canvas)) for z, r in zip(texts, enrichment.records(index), strict=True)]

    values, index = _over_rows(enrichment, batch_size, limit, score)
    return summary(values, _tag_keys(enrichment, index))


@torch.no_grad()
def generation_accuracy(model: UnifiedModel, enrichment: Table, sampling: SamplingConfig, canvas: int, seed: int,
                        batch_size: int = 64, limit: int | None = None, true_layouts: bool = False) -> dict:
    """Reason (greedy) then generate (ODE) per held-out prompt; strict and partial verifier scores.

    With `true_layouts` the image is generated from the prompt's ground-truth layout instead of the model's own
    reasoning: render fidelity, which isolates the image head from the reasoning."""
    def score(index: np.ndarray) -> list[Verdict]:
        prompts = enrichment.texts("prompt", index)
        reasoning = enrichment.texts("reasoning", index) if true_layouts else model.reason(prompts, GREEDY).texts
        images = model.generate(prompts, reasoning, sampling, noise=noise_for(index, canvas, seed)).images
        return verify_batch(to_uint8(images), enrichment.records(index))

    verdicts, index = _over_rows(enrichment, batch_size, limit, score)
    keys = _tag_keys(enrichment, index)
    return {"strict": suite_summary([float(v.strict) for v in verdicts], keys),
            "partial": suite_summary([float(v.partial) for v in verdicts], keys)}


def suite_summary(values: list[float], keys: list[str]) -> dict:
    """Per suite/tag means and, per suite, the mean of its tag means (GenEval's overall)."""
    per_tag = grouped_mean(values, keys)
    suites: dict[str, list[float]] = defaultdict(list)
    for key, value in per_tag.items():
        suites[key.split("/")[0]].append(value)
    return {"overall": {s: float(np.mean(v)) for s, v in suites.items()}, "per_tag": per_tag}


@torch.no_grad()
def editing_success(model: UnifiedModel, editing: Table, sampling: SamplingConfig, canvas: int, seed: int,
                    batch_size: int = 64, limit: int | None = None) -> dict:
    """Share of edited images that satisfy their prompt (strict verifier), per error kind."""
    def score(index: np.ndarray) -> list[float]:
        edited = model.edit(editing.pixels("source_image", index), editing.texts("instruction", index), sampling,
                            noise=noise_for(index, canvas, seed)).images
        return [float(v.strict) for v in verify_batch(to_uint8(edited), editing.records(index))]

    values, index = _over_rows(editing, batch_size, limit, score)
    return {"overall": float(np.mean(values)), "per_error": grouped_mean(values, editing.texts("error", index))}


@torch.no_grad()
def reflection_accuracy(model: UnifiedModel, reflection: Table, batch_size: int = 64, limit: int | None = None) -> dict:
    """Stops on correct images and instructs (anything but the stop answer) on wrong ones."""
    def score(index: np.ndarray) -> list[float]:
        texts = model.reflect(reflection.pixels("image", index), reflection.texts("prompt", index), GREEDY).texts
        targets = reflection.texts("target", index)
        return [float((z.strip() == STOP_ANSWER) == (t == STOP_ANSWER)) for z, t in zip(texts, targets, strict=True)]

    values, index = _over_rows(reflection, batch_size, limit, score)
    kinds = ["stop" if t == STOP_ANSWER else "instruct" for t in reflection.texts("target", index)]
    return {"overall": float(np.mean(values)), "per_target": grouped_mean(values, kinds)}
