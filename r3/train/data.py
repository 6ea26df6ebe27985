"""The synth stage's tables of one split as model-ready training batches, and the loss of one task's batch
(SFT trains on them; RL replays them)."""

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import torch

from r3.data.table import Table, spread_rows
from r3.models.interface import ImageCondition, TextQuery, TrainableUnifiedModel
from r3.models.losses import ImageBatch, TextBatch, flow_matching_loss, text_loss

SftTask = Literal["generate", "edit", "reason", "reflect", "answer", "judge", "caption"]
SFT_TASKS: tuple[str, ...] = get_args(SftTask)
"""Every skill the warm-up trains: two image tasks and five text tasks."""


@dataclass(frozen=True)
class SynthSplit:
    """The tables of one split of the synth stage's output."""

    enrichment: Table
    editing: Table
    reflection: Table
    vqa: Table
    ita: Table

    @classmethod
    def load(cls, split_dir: Path) -> "SynthSplit":
        return cls(*(Table.load(split_dir / f"{name}.parquet") for name in ("enrichment", "editing", "reflection", "vqa", "ita")))

    def spread(self, n: int) -> "SynthSplit":
        """n rows of every table, evenly spread over it (every tag of both suites, where the first n would not)."""
        return SynthSplit(*(spread_rows(getattr(self, field.name), n) for field in fields(self)))

    def size(self, task: str) -> int:
        return len(self.table(task))

    def table(self, task: str) -> Table:
        return {
            "generate": self.enrichment, "reason": self.enrichment, "caption": self.enrichment,
            "edit": self.editing, "reflect": self.reflection, "answer": self.vqa, "judge": self.ita,
        }[task]

    def batch(self, task: str, index: np.ndarray) -> TextBatch | ImageBatch:
        """The training batch of one task for the given row indices."""
        t = self.table(task)
        if task == "generate":
            condition = ImageCondition(t.texts("prompt", index), t.texts("reasoning", index))
            return ImageBatch(condition, t.pixels("image", index))
        if task == "edit":
            condition = ImageCondition(t.texts("instruction", index), sources=t.pixels("source_image", index))
            return ImageBatch(condition, t.pixels("target_image", index))
        if task == "reason":
            return TextBatch(TextQuery("reason", t.texts("prompt", index)), t.texts("reasoning", index))
        if task == "caption":
            n = len(index)
            return TextBatch(TextQuery("caption", [""] * n, t.pixels("image", index)), t.texts("prompt", index))
        if task == "reflect":
            return TextBatch(TextQuery("reflect", t.texts("prompt", index), t.pixels("image", index)), t.texts("target", index))
        if task == "answer":
            return TextBatch(TextQuery("answer", t.texts("question", index), t.pixels("image", index)), t.texts("answer", index))
        if task == "judge":
            return TextBatch(TextQuery("judge", t.texts("prompt", index), t.pixels("image", index)), t.texts("answer", index))
        raise ValueError(f"unknown SFT task {task!r}; expected one of {SFT_TASKS}")


def task_loss(model: TrainableUnifiedModel, data: SynthSplit, task: str, rng: np.random.Generator,
              batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """The SFT loss of one random batch of `task`: flow matching for image tasks, token cross-entropy for text."""
    index = rng.integers(0, data.size(task), size=batch_size)
    batch = data.batch(task, index)
    if isinstance(batch, ImageBatch):
        return flow_matching_loss(model, batch, generator)
    return text_loss(model, batch)
