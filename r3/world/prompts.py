"""Prompt records (GenEval shape) and concrete scenes that satisfy them, for every tag of both suites.

Every include entry gets an exclude entry with count + 1 (same class / colour / absolute size), so a
ShapeWorld prompt means exact counts. Classes within one prompt are distinct, so no object can
match two include entries.

`geneval` writes GenEval's records: relation prompts follow GenEval's order, include[0] is the reference,
include[1] carries `position: [relation, 0]` and is mentioned first ("a circle above a square").
`geneval_pp` writes GenEval++'s (Echo-4o) records and grammar, quirks included: "A photo of ...", a `region`
per entry in the spatial tags ("three circles on the left and one squares on the right": counted entries keep
the plural), and a `size` larger / smaller pair in size_spatial_attr ("a larger circle on the above and a smaller
square on the below").
"""

from typing import Any

import numpy as np

from r3.world.scene import (
    COLORS,
    GRID,
    PLURALS,
    RELATIONS,
    RELATIVE_SIZES,
    SHAPES,
    SIZES,
    Scene,
    SceneObject,
    check_canvas,
    object_extent,
    object_gap,
)
from r3.world.verifier import check, in_region, relation_along

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
PHOTO = "A photo of"
"""How every GenEval++ prompt starts."""
REGION_PAIRS = (("left", "right"), ("above", "below"))
"""The opposite regions a GenEval++ spatial prompt puts its two entries in (either way round)."""
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


def counted_phrase(entry: dict[str, Any]) -> str:
    """GenEval++'s counted entry: count word, attributes, plural, whatever the count ("three red circles", "one
    squares")."""
    words = [count_word(entry["count"]), *(w for w in (entry.get("size"), entry.get("color")) if w)]
    return " ".join([*words, PLURALS[entry["class"]]])


def region_phrase(region: str) -> str:
    """GenEval++'s wording of a region: "on the left", "on the above"."""
    return f"on the {region}"


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


def _entry(shape: str, count: int, color: str | None = None, size: str | None = None,
           region: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"class": shape, "count": count}
    for key, value in (("color", color), ("size", size), ("region", region)):
        if value is not None:
            entry[key] = value
    return entry


def _counts(rng: np.random.Generator, groups: int, low: int, high: int, total: int) -> list[int]:
    """Counts in low..high per group, at least one >= 2, summing to <= total."""
    while True:
        counts = [int(c) for c in rng.integers(low, high + 1, size=groups)]
        if sum(counts) <= total and max(counts) >= 2:
            return counts


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int) -> list[str]:
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


Drawn = tuple[list[dict[str, Any]], str]
"""A drawn prompt: its include entries and its text."""


def _listed(entries: list[dict[str, Any]]) -> Drawn:
    return entries, join_phrases([entry_phrase(e) for e in entries])


def _related(subject: dict[str, Any], reference: dict[str, Any], relation: str) -> Drawn:
    prompt = f"{entry_phrase(subject)} {RELATION_PHRASES[relation]} {entry_phrase(reference)}"
    return [reference, {**subject, "position": [relation, 0]}], prompt


def _photo(entries: list[dict[str, Any]], counted: bool = False) -> Drawn:
    """GenEval++'s grammar: "A photo of " and the entries (counted ones with counted_phrase), each followed by
    its region phrase."""
    phrases = [
        " ".join([counted_phrase(e) if counted else entry_phrase(e), *([region_phrase(e["region"])] if "region" in e
                                                                       else [])])
        for e in entries
    ]
    return entries, f"{PHOTO} {join_phrases(phrases)}"


def _regions(rng: np.random.Generator) -> list[str]:
    """Two opposite regions in random order."""
    pair = REGION_PAIRS[int(rng.integers(len(REGION_PAIRS)))]
    return _pick(rng, pair, 2)


def _draw(suite: str, tag: str, rng: np.random.Generator) -> Drawn:
    """Include entries and prompt text of one tag."""
    return _draw_geneval_pp(tag, rng) if suite == "geneval_pp" else _draw_geneval(tag, rng)


def _draw_geneval_pp(tag: str, rng: np.random.Generator) -> Drawn:
    """A GenEval++ tag's include entries and prompt text, in the benchmark's schema and grammar."""
    colors = tuple(COLORS)
    if tag == "color_attr":
        k = int(rng.integers(2, 4))
        return _photo([_entry(s, 1, c) for s, c in zip(_pick(rng, SHAPES, k), _pick(rng, colors, k))])
    if tag == "counting":
        return _photo([_entry(_pick(rng, SHAPES, 1)[0], int(rng.integers(2, 5)))], counted=True)
    if tag == "color_count_attr":
        counts = _counts(rng, 2, 1, 3, MAX_OBJECTS)
        shapes, picked = _pick(rng, SHAPES, 2), _pick(rng, colors, 2)
        return _photo([_entry(s, n, c) for s, n, c in zip(shapes, counts, picked)], counted=True)
    if tag == "color_spatial_attr":
        shapes, picked, regions = _pick(rng, SHAPES, 2), _pick(rng, colors, 2), _regions(rng)
        return _photo([_entry(s, 1, c, region=r) for s, c, r in zip(shapes, picked, regions)])
    if tag == "spatial_count_attr":
        counts, shapes, regions = _counts(rng, 2, 1, 3, 4), _pick(rng, SHAPES, 2), _regions(rng)
        return _photo([_entry(s, n, region=r) for s, n, r in zip(shapes, counts, regions)], counted=True)
    if tag == "size_spatial_attr":
        shapes, sizes, regions = _pick(rng, SHAPES, 2), _pick(rng, RELATIVE_SIZES, 2), _regions(rng)
        return _photo([_entry(s, 1, size=z, region=r) for s, z, r in zip(shapes, sizes, regions)])
    if tag == "multi_object_count_attr":
        counts = _counts(rng, 3, 1, 3, MAX_OBJECTS)
        return _photo([_entry(s, n) for s, n in zip(_pick(rng, SHAPES, 3), counts)], counted=True)
    raise AssertionError(f"tag {tag!r} has no generator")  # unreachable: tags are validated by the caller


def _draw_geneval(tag: str, rng: np.random.Generator) -> Drawn:
    """A GenEval tag's include entries and prompt text."""
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
        return _listed([_entry(s, 1, c) for s, c in zip(_pick(rng, SHAPES, 2), _pick(rng, colors, 2))])
    raise AssertionError(f"tag {tag!r} has no generator")  # unreachable: tags are validated by the caller


def exact_count_excludes(include: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One exclude per include with count + 1, of the same class, colour and absolute size: "two circles" then
    means exactly two. Where objects lie (position, region) and relative sizes stay facts of the include."""
    return [
        {k: v for k, v in {**e, "count": e["count"] + 1}.items()
         if k not in ("position", "region") and not (k == "size" and v in RELATIVE_SIZES)}
        for e in include
    ]


def entry_size(entry: dict[str, Any]) -> str | None:
    """The ShapeWorld size an entry's objects must have: its own (absolute) size, or the only one its relative
    size leaves with two sizes (larger -> large, smaller -> small); None if it gives no size."""
    size = entry.get("size")
    if size in RELATIVE_SIZES:
        return SIZES[-1] if size == "larger" else SIZES[0]
    return size


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
    specs: list[tuple[str, str, str, int]], relations: dict[int, tuple[str, int]], regions: dict[int, str],
    canvas: int,
) -> np.ndarray:
    """Indices of the cell centres where `spec` fits beside the `placed` objects (the first of `specs`) and in its
    group's region."""
    _, _, size, group = spec
    half = object_extent(size, canvas) / 2
    ok = (xs >= half) & (xs <= canvas - half) & (ys >= half) & (ys <= canvas - half)
    if group in regions:
        ok &= in_region(xs, ys, regions[group], canvas)
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
    regions: dict[int, str],
    canvas: int,
    rng: np.random.Generator,
) -> list[SceneObject] | None:
    """Put objects (shape, color, size, group) on free cell centres, in order, or None if stuck.

    relations[g] = (relation, h): every object of group g must stand plainly in the relation to
    every object of group h (h's objects come first in `specs`); regions[g]: every object of group g
    lies in that region (in_region).
    """
    xs, ys = _cell_centres(canvas)
    placed: list[SceneObject] = []
    for spec in specs:
        free = _free_cells(xs, ys, spec, placed, specs, relations, regions, canvas)
        if len(free) == 0:
            return None
        i = free[int(rng.integers(len(free)))]
        placed.append(SceneObject(*spec[:3], float(xs[i]), float(ys[i])))
    return placed


SEARCH_BUDGET = 200_000
"""Most partial placements the exhaustive search visits before it gives up."""


def place_exhaustively(
    specs: list[tuple[str, str, str, int]], relations: dict[int, tuple[str, int]], regions: dict[int, str],
    canvas: int,
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
        free = _free_cells(xs, ys, specs[k], placed, specs, relations, regions, canvas)
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
    regions = {i: e["region"] for i, e in enumerate(include) if e.get("region")}
    colors = tuple(COLORS)
    specs: list[tuple[str, str, str, int]] = []
    for _ in range(_PLACEMENT_TRIES):
        specs = [
            (
                entry["class"],
                entry.get("color") or colors[int(rng.integers(len(colors)))],
                entry_size(entry) or SIZES[int(rng.integers(len(SIZES)))],
                g,
            )
            for g, entry in enumerate(include)
            for _ in range(entry["count"])
        ]
        placed = place_objects(specs, relations, regions, canvas, rng)
        # the check matters only for outside records (e.g. a position naming a later include)
        if placed is not None and check(placed, record, canvas=canvas).strict:
            return _in_mention_order(placed, specs, include, canvas)
    smallest = [(shape, color, entry_size(include[g]) or SIZES[0], g) for shape, color, _, g in specs]
    for candidate in (specs, smallest):
        placed = place_exhaustively(candidate, relations, regions, canvas)
        if placed is not None and check(placed, record, canvas=canvas).strict:
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

