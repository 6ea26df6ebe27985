"""Parquet tables with PNG-encoded images, and scene (de)serialisation."""

import io
import json
import zlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from PIL import Image

from r3.errors import InputError
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


_TEXT = ("suite", "tag", "prompt", "metadata")
SYNTH_COLUMNS: dict[str, dict[str, type[pl.DataType]]] = {
    table: {**{c: pl.String for c in _TEXT}, **{c: pl.String for c in text}, **{c: pl.Binary for c in images}}
    for table, text, images in (
        ("prompts", ("scene",), ()),
        ("enrichment", ("reasoning",), ("image",)),
        ("editing", ("error", "instruction"), ("source_image", "target_image")),
        ("reflection", ("error", "target"), ("image",)),
        ("vqa", ("category", "question", "answer"), ("image",)),
        ("ita", ("question", "answer"), ("image",)),
    )
}
"""The columns (and types) of each synth table, by file stem; binary columns hold PNG images."""

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


SYNTH_FIX = "run `dvc repro synth` (or `dvc checkout` if it is tracked)"


def read_table(path: str | Path) -> pl.DataFrame:
    """A Parquet table; InputError (one line, with the fix) if it is missing, unreadable or, for a synth table
    (named `<table>.parquet`), lacks a column, has a column of another type or an image that is not a PNG."""
    path = Path(path)
    fix = SYNTH_FIX
    if not path.is_file():
        raise InputError(f"{path}: table not found; {fix}")
    try:
        frame = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise InputError(f"{path}: not a readable Parquet table ({reason}); {fix}") from None
    for column, dtype in SYNTH_COLUMNS.get(path.stem, {}).items():
        if column not in frame.columns:
            raise InputError(f"{path}: column '{column}' is missing; {fix}")
        if frame.schema[column] != dtype:
            raise InputError(f"{path}: column '{column}' is {frame.schema[column]}, expected {dtype}; {fix}")
        if dtype == pl.Binary and not frame[column].bin.starts_with(PNG_SIGNATURE).all():
            raise InputError(f"{path}: column '{column}' holds an image that is not a PNG; {fix}")
    return frame


def check_table(path: str | Path) -> None:
    """`read_table`, and every PNG of its binary columns decodes; InputError naming the file, column and row."""
    frame = read_table(path)
    for column in (name for name, dtype in frame.schema.items() if dtype == pl.Binary):
        for row, data in enumerate(frame[column]):
            try:
                Image.open(io.BytesIO(data)).load()
            except (OSError, SyntaxError, ValueError, zlib.error) as error:
                raise InputError(f"{path}: column '{column}' row {row}: image does not decode ({error}); "
                                 f"{SYNTH_FIX}") from None
