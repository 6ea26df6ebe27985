"""Synth tables loaded once into memory as model-ready batches, for SFT, RL and evaluation."""

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import polars as pl
import torch
from torch import Tensor

from r3.data.io import decode_images, read_table
from r3.models.interface import ImageCondition, TextQuery
from r3.models.losses import ImageBatch, TextBatch


def images_tensor(column: pl.Series) -> Tensor:
    """PNG bytes column -> (N, 3, H, W) uint8 tensor (converted to float per batch)."""
    return torch.from_numpy(decode_images(column)).permute(0, 3, 1, 2).contiguous()


def as_float(images: Tensor) -> Tensor:
    """(B, 3, H, W) uint8 -> float in [0, 1]."""
    return images.float() / 255.0


@dataclass(frozen=True)
class Table:
    """One synth table: its text columns as lists, its image columns as uint8 tensors."""

    frame: pl.DataFrame
    images: dict[str, Tensor]

    @classmethod
    def load(cls, path: Path) -> "Table":
        frame = read_table(path)
        image_columns = [c for c in frame.columns if c == "image" or c.endswith("_image")]
        return cls(frame.drop(image_columns), {c: images_tensor(frame[c]) for c in image_columns})

    def __len__(self) -> int:
        return self.frame.height

    def texts(self, column: str, index: np.ndarray | list[int]) -> list[str]:
        return self.frame[column].gather(list(map(int, index))).to_list()

    def records(self, index: np.ndarray | list[int]) -> list[dict]:
        return [json.loads(m) for m in self.texts("metadata", index)]

    def pixels(self, column: str, index: np.ndarray | list[int]) -> Tensor:
        return as_float(self.images[column][torch.as_tensor(np.asarray(index), dtype=torch.long)])


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
