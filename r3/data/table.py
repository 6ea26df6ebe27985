"""One synth table in memory: text columns as a polars frame, image columns as uint8 tensors."""

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import Tensor

from r3.data.io import decode_images, read_table


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


    def take(self, index: np.ndarray) -> "Table":
        """The rows at `index` (int array), in its order."""
        return Table(self.frame[index], {name: images[index] for name, images in self.images.items()})


def spread_index(rows: int, n: int) -> np.ndarray:
    """(<= n,) int64: n row numbers evenly spread over `rows` rows (tables sorted or cycled by tag: the first n
    would cover one tag or follow the cycle)."""
    return np.unique(np.linspace(0, rows - 1, min(n, rows)).round().astype(np.int64))


def spread_rows(table: Table, n: int) -> Table:
    """n rows evenly spread over the table (spread_index)."""
    return table.take(spread_index(len(table), n))
