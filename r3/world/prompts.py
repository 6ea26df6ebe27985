"""Prompt records (GenEval shape) and concrete scenes that satisfy them, for every tag of both suites.

Every include entry gets an exclude entry with count + 1 (same class / colour / size), so a
ShapeWorld prompt means exact counts. Classes within one prompt are distinct, so no object can
match two include entries. Relation prompts follow GenEval's order: include[0] is the reference,
include[1] carries `position: [relation, 0]` and is mentioned first ("a circle above a square").
"""

from typing import Any

import numpy as np

from r3.world.scene import (
    COLORS,
    GRID,
    PLURALS,
    RELATIONS,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    check_canvas,
    object_extent,
    object_gap,
)
from r3.world.verifier import check, relation_along, relation_margin

GENEVAL_PP_TAGS = (
    "color_attr",
    "counting",
    "color_count_attr",
    "color_spatial_attr",
    "spatial_count_attr",
    "size_spatial_attr",
    "multi_object_count_attr",
)
GENEVAL_TAGS = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
SUITES = {"geneval_pp": GENEVAL_PP_TAGS, "geneval": GENEVAL_TAGS}

COUNT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
RELATION_PHRASES = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
MAX_OBJECTS = 6
"""Most objects a sampled scene holds (they must fit, apart, on a 32x32 canvas)."""

MIN_RELATION_CELLS = 2
"""Sampled scenes put related objects at least this many grid cells apart along the relation."""

_PLACEMENT_TRIES = 200


def count_word(n: int) -> str:
    if not 0 <= n < len(COUNT_WORDS):
        raise ValueError(f"count {n}: only 0..{len(COUNT_WORDS) - 1} have words")
    return COUNT_WORDS[n]


def noun_phrase(count: int, shape: str, color: str | None = None, size: str | None = None) -> str:
    """"a large red circle", "three red circles", "two squares"."""
    words = ["a" if count == 1 else count_word(count)]
    words += [w for w in (size, color) if w is not None]
    words.append(shape if count == 1 else PLURALS[shape])
    return " ".join(words)


def entry_phrase(entry: dict[str, Any]) -> str:
    return noun_phrase(entry["count"], entry["class"], entry.get("color"), entry.get("size"))


def join_phrases(phrases: list[str]) -> str:
    """"a", "a and b", "a, b and c"."""
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def spaced_words(text: str) -> str:
    """The text with a space before each comma ("a, b and c" -> "a , b and c"): the word sequence the
    tokenizer sees, and the order that the synth stage sorts prompt texts in (it did so before prompts lost
    that space, so the held-out split of a seed stays what it was)."""
    return text.replace(",", " ,")


# ---------------------------------------------------------------- records


def _entry(shape: str, count: int, color: str | None = None, size: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"class": shape, "count": count}
    if color is not None:
        entry["color"] = color
    if size is not None:
        entry["size"] = size
    return entry


def _counts(rng: np.random.Generator, groups: int, low: int, high: int, total: int) -> list[int]:
    """Counts in low..high per group, at least one >= 2, summing to <= total."""
    while True:
        counts = [int(c) for c in rng.integers(low, high + 1, size=groups)]
        if sum(counts) <= total and max(counts) >= 2:
            return counts


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int) -> list[str]:
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


def _maybe(rng: np.random.Generator, options: tuple[str, ...]) -> str | None:
    return options[int(rng.integers(len(options)))] if rng.random() < 0.5 else None


Drawn = tuple[list[dict[str, Any]], str]
"""A drawn prompt: its include entries and its text."""


def _listed(entries: list[dict[str, Any]]) -> Drawn:
    return entries, join_phrases([entry_phrase(e) for e in entries])


def _related(subject: dict[str, Any], reference: dict[str, Any], relation: str) -> Drawn:
    prompt = f"{entry_phrase(subject)} {RELATION_PHRASES[relation]} {entry_phrase(reference)}"
    return [reference, {**subject, "position": [relation, 0]}], prompt


def _draw(suite: str, tag: str, rng: np.random.Generator) -> Drawn:
    """Include entries and prompt text of one tag."""
    colors = tuple(COLORS)
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    if tag == "single_object":
        return _listed([_entry(_pick(rng, SHAPES, 1)[0], 1)])
    if tag == "two_object":
        return _listed([_entry(s, 1) for s in _pick(rng, SHAPES, 2)])
    if tag == "counting":
        return _listed([_entry(_pick(rng, SHAPES, 1)[0], int(rng.integers(2, 5)))])
    if tag == "colors":
        return _listed([_entry(_pick(rng, SHAPES, 1)[0], 1, _pick(rng, colors, 1)[0])])
    if tag == "position":
        a, b = _pick(rng, SHAPES, 2)
        return _related(_entry(a, 1), _entry(b, 1), relation)
    if tag == "color_attr":
        k = 2 if suite == "geneval" else int(rng.integers(2, 4))
        return _listed([_entry(s, 1, c) for s, c in zip(_pick(rng, SHAPES, k), _pick(rng, colors, k))])
    if tag == "color_count_attr":
        counts = _counts(rng, 2, 1, 3, MAX_OBJECTS)
        shapes, picked = _pick(rng, SHAPES, 2), _pick(rng, colors, 2)
        return _listed([_entry(s, n, c) for s, n, c in zip(shapes, counts, picked)])
    if tag == "color_spatial_attr":
        (a, b), (ca, cb) = _pick(rng, SHAPES, 2), _pick(rng, colors, 2)
        return _related(_entry(a, 1, ca), _entry(b, 1, cb), relation)
    if tag == "spatial_count_attr":
        na, nb = _counts(rng, 2, 1, 3, 4)
        a, b = _pick(rng, SHAPES, 2)
        return _related(_entry(a, na, _maybe(rng, colors)), _entry(b, nb, _maybe(rng, colors)), relation)
    if tag == "size_spatial_attr":
        a, b = _pick(rng, SHAPES, 2)
        sa, sb = (SIZES[int(i)] for i in rng.integers(len(SIZES), size=2))
        return _related(_entry(a, 1, size=sa), _entry(b, 1, size=sb), relation)
    if tag == "multi_object_count_attr":
        counts = _counts(rng, 3, 1, 3, MAX_OBJECTS)
        return _listed([_entry(s, n) for s, n in zip(_pick(rng, SHAPES, 3), counts)])
    raise AssertionError(f"tag {tag!r} has no generator")  # unreachable: tags are validated by the caller


def exact_count_excludes(include: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One exclude per include with count + 1: "two circles" then means exactly two."""
    return [{k: v for k, v in {**e, "count": e["count"] + 1}.items() if k != "position"} for e in include]


# ---------------------------------------------------------------- scenes


def clear_relation(dx: np.ndarray, dy: np.ndarray, relation: str, cell: float) -> np.ndarray:
    """Offsets (subject - reference) showing the relation plainly: >= MIN_RELATION_CELLS cells along it,
    at most 45 degrees off its axis."""
    along = relation_along(dx, dy, relation)
    across = np.abs(dy) if relation in ("left of", "right of") else np.abs(dx)
    return (along >= MIN_RELATION_CELLS * cell - 1e-6) & (across <= along)


class PlacementError(RuntimeError):
    """No placement of a record's objects exists (or none was found within the search budget)."""


def _free_cells(
    xs: np.ndarray, ys: np.ndarray, spec: tuple[str, str, str, int], placed: list[SceneObject],
    specs: list[tuple[str, str, str, int]], relations: dict[int, tuple[str, int]], canvas: int,
) -> np.ndarray:
    """Indices of the cell centres where `spec` fits beside the `placed` objects (the first of `specs`)."""
    _, _, size, group = spec
    half = object_extent(size, canvas) / 2
    ok = (xs >= half) & (xs <= canvas - half) & (ys >= half) & (ys <= canvas - half)
    for other in placed:
        need = half + object_extent(other.size, canvas) / 2 + object_gap(canvas)
        ok &= (np.abs(xs - other.x) >= need) | (np.abs(ys - other.y) >= need)
    if group in relations:
        relation, reference = relations[group]
        for other, (*_, other_group) in zip(placed, specs):
            if other_group == reference:
                ok &= clear_relation(xs - other.x, ys - other.y, relation, canvas / GRID)
    return np.flatnonzero(ok)


def _cell_centres(canvas: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(GRID) + 0.5) * canvas / GRID
    xs, ys = (a.ravel() for a in np.meshgrid(centres, centres))  # (G*G,) each
    return xs, ys


def place_objects(
    specs: list[tuple[str, str, str, int]],
    relations: dict[int, tuple[str, int]],
    canvas: int,
    rng: np.random.Generator,
) -> list[SceneObject] | None:
    """Put objects (shape, color, size, group) on free cell centres, in order, or None if stuck.

    relations[g] = (relation, h): every object of group g must stand plainly in the relation to
    every object of group h (h's objects come first in `specs`).
    """
    xs, ys = _cell_centres(canvas)
    placed: list[SceneObject] = []
    for spec in specs:
        free = _free_cells(xs, ys, spec, placed, specs, relations, canvas)
        if len(free) == 0:
            return None
        i = free[int(rng.integers(len(free)))]
        placed.append(SceneObject(*spec[:3], float(xs[i]), float(ys[i])))
    return placed


SEARCH_BUDGET = 200_000
"""Most partial placements the exhaustive search visits before it gives up."""


def place_exhaustively(
    specs: list[tuple[str, str, str, int]], relations: dict[int, tuple[str, int]], canvas: int
) -> list[SceneObject] | None:
    """The first placement of `specs` (same rules as `place_objects`) in a depth-first search over the cell
    centres, or None if there is none. Identical consecutive specs take increasing cells (their order does not
    matter), which keeps the search small."""
    xs, ys = _cell_centres(canvas)
    placed: list[SceneObject] = []
    cells: list[int] = []
    visits = 0

    def extend() -> bool:
        nonlocal visits
        k = len(placed)
        if k == len(specs):
            return True
        visits += 1
        if visits > SEARCH_BUDGET:
            return False
        free = _free_cells(xs, ys, specs[k], placed, specs, relations, canvas)
        if k > 0 and specs[k] == specs[k - 1]:
            free = free[free > cells[-1]]
        for i in free:
            placed.append(SceneObject(*specs[k][:3], float(xs[i]), float(ys[i])))
            cells.append(int(i))
            if extend():
                return True
            placed.pop()
            cells.pop()
        return False

    return placed if extend() else None


def scene_for(record: dict[str, Any], rng: np.random.Generator, canvas: int = 32) -> Scene:
    """A scene holding exactly the record's objects (which must be ShapeWorld's), satisfying it;
    unspecified colours and sizes are drawn at random.

    Random placement is tried first; when every try is stuck, an exhaustive search places the last drawn
    objects (then, if that fails, with every unspecified size small). PlacementError if neither finds a scene.
    Objects are listed in the prompt's order of mention, each group left to right.
    """
    check_canvas(canvas)
    include = record["include"]
    relations = {i: (e["position"][0], e["position"][1]) for i, e in enumerate(include) if e.get("position")}
    colors = tuple(COLORS)
    specs: list[tuple[str, str, str, int]] = []
    for _ in range(_PLACEMENT_TRIES):
        specs = [
            (
                entry["class"],
                entry.get("color") or colors[int(rng.integers(len(colors)))],
                entry.get("size") or SIZES[int(rng.integers(len(SIZES)))],
                g,
            )
            for g, entry in enumerate(include)
            for _ in range(entry["count"])
        ]
        placed = place_objects(specs, relations, canvas, rng)
        # the check matters only for outside records (e.g. a position naming a later include)
        if placed is not None and check(placed, record, margin=relation_margin(canvas)).strict:
            return _in_mention_order(placed, specs, include, canvas)
    smallest = [(shape, color, include[g].get("size") or SIZES[0], g) for shape, color, _, g in specs]
    for candidate in (specs, smallest):
        placed = place_exhaustively(candidate, relations, canvas)
        if placed is not None and check(placed, record, margin=relation_margin(canvas)).strict:
            return _in_mention_order(placed, candidate, include, canvas)
    raise PlacementError(f"could not place the objects of {record['prompt']!r} on a {canvas}x{canvas} canvas")


def _in_mention_order(placed: list[SceneObject], specs: list[tuple[str, str, str, int]],
                      include: list[dict[str, Any]], canvas: int) -> Scene:
    mention = _mention_order(include)
    order = sorted(range(len(placed)), key=lambda k: (mention.index(specs[k][3]), placed[k].x, placed[k].y))
    return Scene(objects=tuple(placed[k] for k in order), canvas=canvas)


def _mention_order(include: list[dict[str, Any]]) -> list[int]:
    """Include indices in the order the prompt mentions them (the positioned subject first)."""
    subjects = [i for i, e in enumerate(include) if e.get("position")]
    return subjects + [i for i in range(len(include)) if i not in subjects]


def sample_example(suite: str, tag: str, rng: np.random.Generator, canvas: int = 32) -> tuple[dict, Scene]:
    """A prompt record of `tag` in `suite` (GenEval record shape) and a scene that satisfies it."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r}: expected one of {tuple(SUITES)}")
    if tag not in SUITES[suite]:
        raise ValueError(f"tag {tag!r}: suite {suite!r} has tags {SUITES[suite]}")
    include, prompt = _draw(suite, tag, rng)
    record = {"tag": tag, "include": include, "exclude": exact_count_excludes(include), "prompt": prompt}
    return record, scene_for(record, rng, canvas)


def examples_over_tags(n: int, seed: int, canvas: int = 32) -> list[tuple[dict, Scene]]:
    """`n` seeded examples cycling over every tag of both suites (for benchmarks and exactness checks)."""
    rng = np.random.default_rng(seed)
    tags = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]
    return [sample_example(*tags[i % len(tags)], rng, canvas) for i in range(n)]


def vocabulary() -> list[str]:
    """Every word of prompts, layout texts, edit instructions, the stop answer, VQA and ITA texts.

    Texts are words separated by spaces, commas attached to the word before them ("a cross, two squares"); the
    tokenizer splits punctuation off.
    """
    # imported here: these modules build on this one
    from r3.world.edits import EDIT_WORDS
    from r3.world.layout import LAYOUT_WORDS
    from r3.world.questions import QUESTION_WORDS

    words = [
        *SHAPES, *PLURALS.values(), *COLORS, *SIZES, *COUNT_WORDS, "a", "and", ",",
        *(w for phrase in RELATION_PHRASES.values() for w in phrase.split()),
        *LAYOUT_WORDS, *EDIT_WORDS, *QUESTION_WORDS,
    ]  # fmt: skip
    return list(dict.fromkeys(words))
