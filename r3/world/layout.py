"""Layout texts, the model's reasoning on ShapeWorld: every object's size, colour, class and grid cell.

    "large red circle at 1 3 ; small blue square at 5 3"     (cells are "col row", GRID per side)
"""

from typing import Any

from r3.world.scene import COLORS, GRID, SHAPES, SIZES, Scene, SceneObject, cell_center, cell_of, check_canvas, fits
from r3.world.verifier import check

LAYOUT_WORDS = ("at", ";", *(str(i) for i in range(GRID)))
"""Words of layout texts besides sizes, colours and classes."""


def object_text(obj: SceneObject, canvas: int) -> str:
    col, row = cell_of(obj.x, obj.y, canvas)
    return f"{obj.size} {obj.color} {obj.shape} at {col} {row}"


def layout_text(scene: Scene) -> str:
    return " ; ".join(object_text(obj, scene.canvas) for obj in scene.objects)


def _parse_object(words: list[str], canvas: int) -> SceneObject | None:
    if len(words) != 6 or words[3] != "at":
        return None
    size, color, shape, _, col, row = words
    if size not in SIZES or color not in COLORS or shape not in SHAPES:
        return None
    if not (col.isdigit() and row.isdigit() and int(col) < GRID and int(row) < GRID):
        return None
    x, y = cell_center(int(col), int(row), canvas)
    return SceneObject(shape=shape, color=color, size=size, x=x, y=y)


def parse_layout(text: str, canvas: int) -> Scene | None:
    """The scene a layout text describes (objects at cell centres), or None if it does not parse."""
    check_canvas(canvas)
    parts = text.split(";")
    objects = [obj for part in parts if (obj := _parse_object(part.split(), canvas)) is not None]
    if not text.strip() or len(objects) != len(parts):
        return None
    return Scene(objects=tuple(objects), canvas=canvas)


def drawable(scene: Scene) -> bool:
    """Every object lies inside the canvas and apart from the others: the world's spacing rule, which synth scenes
    obey and the latent codec enforces, so a layout that breaks it loses objects when drawn."""
    return all(fits(obj, scene.objects[:i], scene.canvas) for i, obj in enumerate(scene.objects))


def layout_satisfies(text: str, record: dict[str, Any], canvas: int) -> bool:
    """The text parses to a drawable scene whose objects satisfy the record (strict check)."""
    scene = parse_layout(text, canvas)
    return (scene is not None and drawable(scene)
            and check(scene.objects, record, canvas=canvas).strict == 1)
