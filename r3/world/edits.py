"""Wrong scenes with one error, and the one edit instruction that fixes each (reflection targets).

Instructions (cells are "col row" on the layout grid; objects are named by the shortest
description that is unique in the scene, see `describe`):
    add a small red circle at 2 5          remove the red circle at 3 1
    make the blue square red               make the red circle large
    move the red circle to 2 5
`apply_edit` carries out an instruction exactly, so a fix can be checked by the verifier; `reflection_parses`
checks a reflection's grammar without a scene.
"""

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from r3.world.prompts import MAX_OBJECTS, entry_size
from r3.world.scene import (
    COLORS,
    GRID,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    cell_center,
    cell_of,
    cell_size,
    fits,
)
from r3.world.verifier import check, descriptor, in_region, matches, relation_along

STOP_ANSWER = "no further edit needed"
ERROR_KINDS = ("missing", "extra", "recolor", "move", "resize")
EDIT_WORDS = ("add", "remove", "make", "move", "the", "a", "at", "to", *STOP_ANSWER.split())
"""Words of instructions and the stop answer besides sizes, colours, classes and cell numbers."""


# ---------------------------------------------------------------- naming objects


def _name(obj: SceneObject, attributes: tuple[str, ...]) -> tuple[str, ...]:
    return (*(getattr(obj, a) for a in attributes), obj.shape)


def describe(obj: SceneObject, scene: Scene) -> str:
    """Shortest unique name: "circle", "red circle", "large red circle", "large red circle at 2 5"."""
    for attributes in ((), ("color",), ("size", "color")):
        if sum(_name(o, attributes) == _name(obj, attributes) for o in scene.objects) == 1:
            return " ".join(_name(obj, attributes))
    col, row = cell_of(obj.x, obj.y, scene.canvas)
    return f"{obj.size} {obj.color} {obj.shape} at {col} {row}"


def _cell_words(words: list[str], where: str) -> tuple[int, int]:
    if len(words) != 2 or not all(w.isdigit() and int(w) < GRID for w in words):
        raise ValueError(f"edit instruction: expected a cell 'col row' (0..{GRID - 1}) in {where!r}")
    return int(words[0]), int(words[1])


def _reference(reference: str) -> tuple[dict[str, str | None], tuple[int, int] | None]:
    """The entry (class, color, size: what `matches` takes) and the cell (None when not given) of an object's name
    "[size] [color] shape [at col row]"; the size and colour may come in either order."""
    words = reference.split()
    cell = None
    if "at" in words:
        cell = _cell_words(words[words.index("at") + 1 :], reference)
        words = words[: words.index("at")]
    if not words or words[-1] not in SHAPES:
        raise ValueError(f"edit instruction: {reference!r} names no shape")
    size = next((w for w in words[:-1] if w in SIZES), None)
    color = next((w for w in words[:-1] if w in COLORS), None)
    if len(words) - 1 != (size is not None) + (color is not None):
        raise ValueError(f"edit instruction: unknown words in {reference!r}")
    return {"class": words[-1], "color": color, "size": size}, cell


def resolve(reference: str, scene: Scene) -> int:
    """Index of the one object a description ("[size] [color] shape [at col row]") names."""
    entry, cell = _reference(reference)
    found = [
        i
        for i, o in enumerate(scene.objects)
        if matches(o, entry) and (cell is None or cell_of(o.x, o.y, scene.canvas) == cell)
    ]
    if len(found) != 1:
        raise ValueError(f"edit instruction: {reference!r} names {len(found)} objects, not one")
    return found[0]


def _split(instruction: str) -> tuple[str, list[str], list[str]]:
    """(verb, object words, argument words) of an instruction, by its form:
        add a <size color shape> at <col row>       remove the <name>
        make the <name> <colour or size>            move the <name> to <col row>
    The parts are checked by `_new_object`, `_reference`, `_attribute` and `_cell_words`."""
    words = instruction.split()
    if len(words) == 8 and words[:2] == ["add", "a"] and words[5] == "at":
        return "add", words[2:5], words[6:]
    if len(words) >= 3 and words[:2] == ["remove", "the"]:
        return "remove", words[2:], []
    if len(words) >= 4 and words[:2] == ["make", "the"]:
        return "make", words[2:-1], words[-1:]
    if len(words) >= 6 and words[:2] == ["move", "the"] and words[-3] == "to":
        return "move", words[2:-3], words[-2:]
    raise ValueError(f"edit instruction: cannot parse {instruction!r}")


def _new_object(words: list[str]) -> tuple[str, str, str]:
    """(size, color, shape) of the object an "add" instruction adds, named in full and in that order."""
    size, color, shape = words
    if size not in SIZES or color not in COLORS or shape not in SHAPES:
        raise ValueError(f"edit instruction: cannot add {' '.join(words)!r}")
    return size, color, shape


def _attribute(value: str) -> str:
    """The attribute ("color" or "size") a "make" instruction sets to `value`."""
    if value in COLORS:
        return "color"
    if value in SIZES:
        return "size"
    raise ValueError(f"edit instruction: {value!r} is neither a colour nor a size")


def apply_edit(scene: Scene, instruction: str) -> Scene:
    """The scene after the instruction; raises ValueError if it does not parse or names no single object."""
    verb, named, argument = _split(instruction)
    objects = list(scene.objects)
    if verb == "add":
        size, color, shape = _new_object(named)
        x, y = cell_center(*_cell_words(argument, instruction), scene.canvas)
        return replace(scene, objects=(*objects, SceneObject(shape, color, size, x, y)))
    i = resolve(" ".join(named), scene)
    if verb == "remove":
        del objects[i]
    elif verb == "make":
        objects[i] = replace(objects[i], **{_attribute(argument[0]): argument[0]})
    else:
        x, y = cell_center(*_cell_words(argument, instruction), scene.canvas)
        objects[i] = replace(objects[i], x=x, y=y)
    return replace(scene, objects=tuple(objects))


def reflection_parses(text: str) -> bool:
    """The reflection's format reward: the stop answer or one instruction that `apply_edit` parses, its object
    named as `describe` names objects (the size before the colour, where `resolve` takes either order).

    A grammar check only (no scene): whether the instruction names an object of the image is left to
    the alignment reward of the edited image.
    """
    if text.strip() == STOP_ANSWER:
        return True
    try:
        verb, named, argument = _split(text)
        if verb == "add":
            _new_object(named)
        else:
            _reference(" ".join(named))
        if verb == "make":
            _attribute(argument[0])
        elif verb != "remove":
            _cell_words(argument, text)
    except ValueError:
        return False
    attributes = [w for w in named if w in SIZES or w in COLORS]
    return attributes == sorted(attributes, key=lambda w: w in COLORS)  # sizes before colours


# ---------------------------------------------------------------- corrupting scenes


def _strict(scene: Scene, record: dict[str, Any]) -> int:
    return check(scene.objects, record, canvas=scene.canvas).strict


def _fixes(wrong: Scene, instruction: str, record: dict[str, Any]) -> bool:
    return _strict(wrong, record) == 0 and _strict(apply_edit(wrong, instruction), record) == 1


def _recounted(record: dict[str, Any], i: int, delta: int) -> dict[str, Any]:
    """The record with include i (and its paired excludes) expecting `delta` more objects."""
    include = [dict(e) for e in record["include"]]
    include[i]["count"] += delta
    exclude = [
        {**e, "count": e["count"] + delta} if descriptor(e) == descriptor(include[i]) else e
        for e in record.get("exclude", [])
    ]
    return {**record, "include": include, "exclude": exclude}


def _cells(canvas: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    order = rng.permutation(GRID * GRID)
    return [cell_center(int(k % GRID), int(k // GRID), canvas) for k in order]


def _replaced(scene: Scene, i: int, obj: SceneObject) -> Scene:
    """The scene with its i-th object swapped for `obj` (order kept)."""
    return replace(scene, objects=tuple(obj if k == i else o for k, o in enumerate(scene.objects)))


def _without(scene: Scene, i: int) -> list[SceneObject]:
    return [o for k, o in enumerate(scene.objects) if k != i]


def _swapped(scene: Scene, record: dict[str, Any], i: int, changed: SceneObject, verb: str,
             undo: str) -> tuple[Scene, str] | None:
    """The scene with its i-th object swapped for `changed` and the instruction "<verb> the <name> <undo>" that
    puts the object back, if `changed` fits beside the others and the instruction fixes the record; else None."""
    if not fits(changed, _without(scene, i), scene.canvas):
        return None
    wrong = _replaced(scene, i, changed)
    instruction = f"{verb} the {describe(changed, wrong)} {undo}"
    return (wrong, instruction) if _fixes(wrong, instruction, record) else None


def _missing(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> tuple[Scene, str] | None:
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[i]
        wrong = replace(scene, objects=tuple(_without(scene, i)))
        col, row = cell_of(obj.x, obj.y, scene.canvas)
        instruction = f"add a {obj.size} {obj.color} {obj.shape} at {col} {row}"
        if any(matches(obj, e) for e in record["include"]) and _fixes(wrong, instruction, record):
            return wrong, instruction
    return None


def _extra(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> tuple[Scene, str] | None:
    if len(scene.objects) > MAX_OBJECTS:
        return None
    colors = tuple(COLORS)
    for i in rng.permutation(len(record["include"])):
        entry = record["include"][i]
        color = entry.get("color") or colors[int(rng.integers(len(colors)))]
        size = entry_size(entry) or SIZES[int(rng.integers(len(SIZES)))]
        only_count_wrong = _recounted(record, int(i), 1)
        for x, y in _cells(scene.canvas, rng):
            extra = SceneObject(entry["class"], color, size, x, y)
            if not fits(extra, scene.objects, scene.canvas):
                continue
            wrong = replace(scene, objects=(*scene.objects, extra))
            instruction = f"remove the {describe(extra, wrong)}"
            if _strict(wrong, only_count_wrong) == 1 and _fixes(wrong, instruction, record):
                return wrong, instruction
    return None


def _change_attribute(scene: Scene, record: dict[str, Any], rng: np.random.Generator, attribute: str,
                      other_value: Callable[[str, np.random.Generator], str]) -> tuple[Scene, str] | None:
    """Give one object whose `attribute` (color / size) the prompt asserts another value; the instruction
    restores the old value ("make the <object> <old value>")."""
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[i]
        if not any(matches(obj, e) and e.get(attribute) for e in record["include"]):
            continue
        changed = replace(obj, **{attribute: other_value(getattr(obj, attribute), rng)})
        result = _swapped(scene, record, int(i), changed, "make", getattr(obj, attribute))
        if result is not None:
            return result
    return None


def _other_color(color: str, rng: np.random.Generator) -> str:
    others = [c for c in COLORS if c != color]
    return others[int(rng.integers(len(others)))]


def _recolor(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> tuple[Scene, str] | None:
    return _change_attribute(scene, record, rng, "color", _other_color)


def _resize(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> tuple[Scene, str] | None:
    return _change_attribute(scene, record, rng, "size", lambda size, rng: SIZES[1 - SIZES.index(size)])


def _move(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> tuple[Scene, str] | None:
    """Move one object that a position or region fact places to where that fact fails."""
    include = record["include"]
    for g in rng.permutation(len(include)):
        if include[g].get("position"):
            result = _move_across(scene, record, int(g), rng)
        elif include[g].get("region"):
            result = _move_out_of_region(scene, record, int(g), rng)
        else:
            continue
        if result is not None:
            return result
    return None


def _move_out_of_region(scene: Scene, record: dict[str, Any], g: int,
                        rng: np.random.Generator) -> tuple[Scene, str] | None:
    """Move one object of include g out of the entry's region (into the other half)."""
    entry, canvas = record["include"][g], scene.canvas
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[i]
        if not matches(obj, entry):
            continue
        col, row = cell_of(obj.x, obj.y, canvas)
        for x, y in _cells(canvas, rng):
            if in_region(x, y, entry["region"], canvas):
                continue
            result = _swapped(scene, record, int(i), replace(obj, x=x, y=y), "move", f"to {col} {row}")
            if result is not None:
                return result
    return None


def _move_across(scene: Scene, record: dict[str, Any], g: int, rng: np.random.Generator) -> tuple[Scene, str] | None:
    """Move one object of include g or of its reference at least one cell onto the wrong side of a partner."""
    include, canvas = record["include"], scene.canvas
    relation, h = include[g]["position"]
    subjects, references = include[g], include[h]
    for i in rng.permutation(len(scene.objects)):
        obj = scene.objects[i]
        is_subject = matches(obj, subjects)
        if not is_subject and not matches(obj, references):
            continue
        partners = [o for o in _without(scene, i) if matches(o, references if is_subject else subjects)]
        col, row = cell_of(obj.x, obj.y, canvas)
        for x, y in _cells(canvas, rng):
            # offset subject - reference along the relation: <= -1 cell means plainly on the wrong side
            sign = 1 if is_subject else -1
            crossed = any(
                relation_along(sign * (x - o.x), sign * (y - o.y), relation) <= -cell_size(canvas)
                for o in partners
            )
            if not crossed:
                continue
            result = _swapped(scene, record, int(i), replace(obj, x=x, y=y), "move", f"to {col} {row}")
            if result is not None:
                return result
    return None


_CORRUPTERS = {"missing": _missing, "extra": _extra, "recolor": _recolor, "move": _move, "resize": _resize}


def corrupt(scene: Scene, record: dict[str, Any], kind: str, rng: np.random.Generator) -> tuple[Scene, str] | None:
    """A wrong scene with one error of `kind` that makes the record false, and the instruction
    that fixes it; None if this kind of error cannot break this record (e.g. recolor without colours)."""
    if kind not in _CORRUPTERS:
        raise ValueError(f"error kind {kind!r}: expected one of {ERROR_KINDS}")
    return _CORRUPTERS[kind](scene, record, rng)


def violate(scene: Scene, record: dict[str, Any], rng: np.random.Generator) -> Scene:
    """The scene with one random error (of a kind this record admits) that makes the record false."""
    for kind in rng.permutation(ERROR_KINDS):
        result = corrupt(scene, record, str(kind), rng)
        if result is not None:
            return result[0]
    raise ValueError(f"no error kind can break prompt {record['prompt']!r} on this scene")
