"""The exact ShapeWorld latent codec: the tiny model's "VAE", as SD3's VAE is for real models.

A latent is a grid of CHANNELS x GRID x GRID values in [-1, 1], one cell per layout cell:

    channel 0      presence: +1 where an object's centre is in the cell, -1 elsewhere
    channels 1-4   shape one-hot over SHAPES (+1 / -1; 0 in empty cells)
    channels 5-7   colour RGB scaled to [-1, 1] (0 in empty cells)
    channel 8      size: +1 large, -1 small (0 in empty cells)

`encode` reads objects with the verifier's detector; `decode` reads objects back from any latent and renders
them. Decoding keeps presence peaks in order of strength and drops every candidate that would not fit beside
the objects already kept (too close, or out of the canvas) — non-maximum suppression with the world's own
spacing rule — so every latent, random noise included, decodes to a valid scene the verifier reads exactly.
Objects sit on cell centres, so decode(encode(render(scene))) == render(scene) byte for byte.
"""

import numpy as np

from r3.world.render import render
from r3.world.scene import COLORS, GRID, SHAPES, SIZES, Scene, SceneObject, cell_center, cell_of, fits
from r3.world.verifier import Detection, detect_batch

PRESENCE = 0
SHAPE_CHANNELS = slice(1, 1 + len(SHAPES))
COLOR_CHANNELS = slice(1 + len(SHAPES), 4 + len(SHAPES))
SIZE = 4 + len(SHAPES)
CHANNELS = SIZE + 1
"""Latent channels per cell: presence, shape one-hot, colour RGB, size."""

_PALETTE = np.array(list(COLORS.values()), dtype=np.float32) / 127.5 - 1  # (K, 3) colours in [-1, 1]
_COLOR_NAMES = tuple(COLORS)


def objects_latent(objects: list[Detection] | list[SceneObject] | tuple[SceneObject, ...], canvas: int) -> np.ndarray:
    """(CHANNELS, GRID, GRID) float32 latent of objects (each written into the cell of its centre)."""
    latent = np.zeros((CHANNELS, GRID, GRID), dtype=np.float32)
    latent[PRESENCE] = -1
    for obj in objects:
        col, row = cell_of(obj.x, obj.y, canvas)
        latent[:, row, col] = 0
        latent[PRESENCE, row, col] = 1
        latent[SHAPE_CHANNELS, row, col] = -1
        latent[SHAPE_CHANNELS.start + SHAPES.index(obj.shape), row, col] = 1
        latent[COLOR_CHANNELS, row, col] = _PALETTE[_COLOR_NAMES.index(obj.color)]
        latent[SIZE, row, col] = 1 if obj.size == "large" else -1
    return latent


def latent_scene(latent: np.ndarray, canvas: int) -> Scene:
    """The valid scene a (CHANNELS, GRID, GRID) latent decodes to: presence peaks kept strongest first,
    attributes read by argmax / nearest palette colour / sign, candidates that do not fit dropped."""
    if latent.shape != (CHANNELS, GRID, GRID):
        raise ValueError(f"latent: expected shape {(CHANNELS, GRID, GRID)}, got {latent.shape}")
    presence = latent[PRESENCE]  # (GRID, GRID)
    rows, cols = np.nonzero(presence > 0)
    kept: list[SceneObject] = []
    for i in np.argsort(-presence[rows, cols], kind="stable"):
        row, col = int(rows[i]), int(cols[i])
        cell = latent[:, row, col]  # (CHANNELS,)
        x, y = cell_center(col, row, canvas)
        obj = SceneObject(
            shape=SHAPES[int(np.argmax(cell[SHAPE_CHANNELS]))],
            color=_COLOR_NAMES[int(np.argmin(((_PALETTE - cell[COLOR_CHANNELS]) ** 2).sum(axis=1)))],
            size=SIZES[1] if cell[SIZE] > 0 else SIZES[0],
            x=x,
            y=y,
        )
        if fits(obj, kept, canvas):
            kept.append(obj)
    return Scene(objects=tuple(kept), canvas=canvas)


def encode(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 or float [0, 1] images -> (N, CHANNELS, GRID, GRID) float32 latents."""
    canvas = images.shape[2]
    return np.stack([objects_latent(found, canvas) for found in detect_batch(images)]).astype(np.float32)


def decode(latents: np.ndarray, canvas: int) -> np.ndarray:
    """(N, CHANNELS, GRID, GRID) latents -> (N, canvas, canvas, 3) uint8 renders of valid scenes."""
    if latents.ndim != 4:
        raise ValueError(f"latents: expected shape (N, {CHANNELS}, {GRID}, {GRID}), got {latents.shape}")
    out = np.empty((len(latents), canvas, canvas, 3), dtype=np.uint8)
    for i, latent in enumerate(np.asarray(latents, dtype=np.float32)):
        out[i] = render(latent_scene(latent, canvas))
    return out
