"""ShapeWorld vocabulary of things: shapes, palette, sizes, relations, and the scene types.

Coordinates are continuous pixels: x to the right, y downward, pixel (row i, column j) covers
[j, j + 1) x [i, i + 1). Objects sit on a coarse grid of GRID x GRID cells whose centres are the
only positions the scene sampler uses, so layout texts (which name cells) are exact.
"""

from dataclasses import dataclass

SHAPES = ("circle", "square", "triangle", "cross")
PLURALS = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "purple": (180, 0, 255),
    "cyan": (0, 255, 255),
}
"""Saturated colours: every pair differs by >= 180 of 255 in RGB, and each is >= 255 from BACKGROUND."""

BACKGROUND = (0, 0, 0)
SIZES = ("small", "large")
RELATIONS = ("left of", "right of", "above", "below")
REGIONS = ("left", "right", "above", "below")
"""GenEval++'s `region` values: the part of the image an object lies in (left, right, top, bottom half)."""
RELATIVE_SIZES = ("larger", "smaller")
"""GenEval++'s relative `size` values: larger / smaller than the objects of the entries carrying the other one."""

GRID = 8
"""Cells per side of the layout grid, whatever the canvas."""

MIN_CANVAS = 32


@dataclass(frozen=True)
class SceneObject:
    shape: str
    color: str
    size: str
    x: float
    y: float


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    canvas: int


def check_canvas(canvas: int) -> None:
    if canvas < MIN_CANVAS or canvas % GRID != 0:
        raise ValueError(f"canvas {canvas}: must be a multiple of {GRID} and at least {MIN_CANVAS}")


def object_extent(size: str, canvas: int) -> int:
    """Side of the object's square bounding box in pixels: 6 / 10 at 32, 12 / 20 at 64.

    Always even, so an object centred on a cell centre covers whole pixels (cell centres are
    pixel corners when the canvas is a multiple of 16).
    """
    check_canvas(canvas)
    if size not in SIZES:
        raise ValueError(f"size {size!r}: expected one of {SIZES}")
    half = canvas * (3 if size == "small" else 5) // 32  # rounded down, so objects always fit the grid
    return 2 * half


def object_gap(canvas: int) -> int:
    """Empty pixels kept between any two objects' boxes (2 at 32): a 3x3 blur cannot bridge them."""
    return canvas // 16


def cell_size(canvas: int) -> float:
    return canvas / GRID


def cell_center(col: int, row: int, canvas: int) -> tuple[float, float]:
    step = cell_size(canvas)
    return (col + 0.5) * step, (row + 0.5) * step


def cell_of(x: float, y: float, canvas: int) -> tuple[int, int]:
    """(col, row) of the grid cell holding the point, clamped to the grid."""
    step = cell_size(canvas)
    return min(GRID - 1, max(0, int(x // step))), min(GRID - 1, max(0, int(y // step)))


def inside_canvas(obj: SceneObject, canvas: int) -> bool:
    half = object_extent(obj.size, canvas) / 2
    return half <= obj.x <= canvas - half and half <= obj.y <= canvas - half


def apart(a: SceneObject, b: SceneObject, canvas: int) -> bool:
    """True iff the two objects' boxes are separated by at least object_gap pixels on some axis."""
    need = (object_extent(a.size, canvas) + object_extent(b.size, canvas)) / 2 + object_gap(canvas)
    return abs(a.x - b.x) >= need or abs(a.y - b.y) >= need


def fits(obj: SceneObject, others: tuple[SceneObject, ...] | list[SceneObject], canvas: int) -> bool:
    return inside_canvas(obj, canvas) and all(apart(obj, other, canvas) for other in others)
