"""Deterministic rasteriser: flat palette colours, hard edges, one boolean mask per shape and extent."""

from functools import lru_cache
from math import floor

import numpy as np

from r3.world.scene import BACKGROUND, COLORS, SHAPES, Scene, check_canvas, object_extent


@lru_cache(maxsize=None)
def shape_mask(shape: str, extent: int) -> np.ndarray:
    """(extent, extent) bool mask of the shape filling its box; the triangle points up."""
    if shape not in SHAPES:
        raise ValueError(f"shape {shape!r}: expected one of {SHAPES}")
    centres = (np.arange(extent) + 0.5) / extent * 2 - 1  # pixel centres in (-1, 1)
    u, v = np.meshgrid(centres, centres)  # (E, E) each
    if shape == "square":
        mask = np.ones((extent, extent), dtype=bool)
    elif shape == "circle":
        mask = u**2 + v**2 <= 0.92  # slightly inside the box's inscribed disc: an octagon at extent 6
    elif shape == "triangle":
        # row i spans 2 * ceil((i + 1) / 2) pixels: a symmetric staircase from apex to full base
        widths = 2 * ((np.arange(extent) + 2) // 2)  # (E,)
        mask = np.abs(u) * extent / 2 < widths[:, None] / 2
    else:
        # arm thickness near extent / 3 with the extent's parity, so the cross is symmetric
        thickness = min(range(extent % 2 or 2, extent, 2), key=lambda t: abs(t - extent / 3))
        half = thickness / extent  # in the same (-1, 1) units as u, v
        mask = (np.abs(u) < half) | (np.abs(v) < half)
    mask.setflags(write=False)
    return mask


def render(scene: Scene) -> np.ndarray:
    """(H, W, 3) uint8 image of the scene, H = W = scene.canvas; parts outside the canvas are cut."""
    canvas = scene.canvas
    check_canvas(canvas)
    image = np.empty((canvas, canvas, 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for obj in scene.objects:
        if obj.color not in COLORS:
            raise ValueError(f"color {obj.color!r}: expected one of {tuple(COLORS)}")
        extent = object_extent(obj.size, canvas)
        mask = shape_mask(obj.shape, extent)
        x0, y0 = floor(obj.x - extent / 2 + 0.5), floor(obj.y - extent / 2 + 0.5)
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + extent, canvas), min(y0 + extent, canvas)
        if xa >= xb or ya >= yb:
            continue
        window = image[ya:yb, xa:xb]  # (h, w, 3) view
        window[mask[ya - y0 : yb - y0, xa - x0 : xb - x0]] = COLORS[obj.color]
    return image
