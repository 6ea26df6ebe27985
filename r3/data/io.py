"""Parquet tables with PNG-encoded images, and scene (de)serialisation."""

import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from r3.world.scene import Scene, SceneObject


def png_bytes(image: np.ndarray) -> bytes:
    """(H, W, 3) uint8 -> PNG bytes (lossless, deterministic)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def decode_png(data: bytes) -> np.ndarray:
    """PNG bytes -> (H, W, 3) uint8."""
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def decode_images(column: pl.Series | list[bytes]) -> np.ndarray:
    """A column of PNG bytes -> (N, H, W, 3) uint8."""
    return np.stack([decode_png(b) for b in column])


def scene_to_json(scene: Scene) -> str:
    return json.dumps({"canvas": scene.canvas, "objects": [asdict(o) for o in scene.objects]})


def scene_from_json(text: str) -> Scene:
    data = json.loads(text)
    return Scene(objects=tuple(SceneObject(**o) for o in data["objects"]), canvas=data["canvas"])


def write_table(rows: list[dict[str, Any]], path: Path) -> int:
    """Write rows as Parquet (schema from the first row) and return the row count."""
    if not rows:
        raise ValueError(f"{path}: refusing to write an empty table")
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(rows).write_parquet(path, compression="zstd", statistics=False)
    return len(rows)


def read_table(path: str | Path) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: table not found (run the synth stage first)")
    return pl.read_parquet(path)
