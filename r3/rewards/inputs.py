"""Input checks shared by every reward (kept apart from base.py, which imports the rewards)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def check_batch(images: np.ndarray, records: Sequence[dict[str, Any]], who: str) -> int:
    """Validate a reward's inputs and return the batch size N.

    images: (N, H, W, 3) uint8; records: N prompt records in the GenEval shape.
    """
    if not isinstance(images, np.ndarray) or images.ndim != 4 or images.shape[-1] != 3:
        shape = getattr(images, "shape", type(images).__name__)
        raise ValueError(f"{who}: images must be a (N, H, W, 3) numpy array, got {shape}")
    if images.dtype != np.uint8:
        raise ValueError(f"{who}: images must be uint8, got {images.dtype}")
    if len(records) != images.shape[0]:
        raise ValueError(f"{who}: {images.shape[0]} images but {len(records)} records")
    return images.shape[0]
