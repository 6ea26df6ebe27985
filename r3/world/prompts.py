"""Prompt records (GenEval shape) and concrete scenes that satisfy them, for every tag of both suites.

Every include entry gets an exclude entry with count + 1 (same class / colour / absolute size), so a
ShapeWorld prompt means exact counts. Classes within one prompt are distinct, so no object can
match two include entries.

`geneval` writes GenEval's records: relation prompts follow GenEval's order, include[0] is the reference,
include[1] carries `position: [relation, 0]` and is mentioned first ("a circle above a square").
`geneval_pp` draws GenEval++'s (Echo-4o) records as its file (`test_scripts/Geneval++.jsonl`, 40 records per tag)
draws them: the same count tuples with the same frequencies (GENEVAL_PP_COUNTS), the same share of left / right
against above / below (GENEVAL_PP_LEFT_RIGHT; the left or upper entry first), the larger entry first, and the
file's grammar per tag, quirks included (GENEVAL_PP_PHRASING): "A photo of ...", Oxford commas, a `region` per
entry in the spatial tags ("on the above"), counted entries that keep the plural at one in counting /
color_count_attr / spatial_count_attr ("one squares") but not in multi_object_count_attr ("one square"), no
article in color_spatial_attr ("blue circle on the left").
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
"""The opposite regions a GenEval++ spatial prompt puts its two entries in, in the file's order."""
MAX_OBJECTS = 9
"""Most objects a sampled scene holds: GenEval++'s three classes of three ("A photo of three circles, three squares,
and three triangles"). Nine small objects fit, apart, on any canvas (a 3 x 3 lattice of every other cell; at most
four large ones do), so scene_for draws crowded scenes small."""

GENEVAL_PP_RECORDS_PER_TAG = 40
"""Records per tag in GenEval++'s file (280 in all)."""

GENEVAL_PP_COUNTS: dict[str, dict[tuple[int, ...], int]] = {
    "color_attr": {(1, 1, 1): 30, (1, 1, 1, 1): 10},
    "counting": {(4,): 10, (5,): 11, (6,): 7, (7,): 12},
    "color_count_attr": {(1, 1): 5, (1, 2): 5, (1, 3): 2, (2, 1): 4, (2, 2): 7, (2, 3): 2, (3, 1): 10, (3, 2): 3,
                         (3, 3): 2},
    "color_spatial_attr": {(1, 1): 40},
    "spatial_count_attr": {(1, 1): 5, (1, 2): 3, (1, 3): 3, (2, 2): 8, (2, 3): 8, (3, 1): 3, (3, 2): 4, (3, 3): 6},
    "size_spatial_attr": {(1, 1): 40},
    "multi_object_count_attr": {
        (1, 1): 1, (1, 2): 1, (1, 3): 1, (2, 2): 5, (2, 3): 3, (3, 1): 1, (3, 2): 4, (3, 3): 3,
        (1, 1, 1): 1, (1, 2, 1): 1, (1, 2, 2): 1, (1, 2, 3): 2, (1, 3, 1): 1, (1, 3, 3): 1, (2, 1, 1): 1,
        (2, 2, 1): 2, (2, 2, 3): 2, (2, 3, 1): 1, (2, 3, 2): 2, (2, 3, 3): 1, (3, 1, 1): 1, (3, 1, 3): 1,
        (3, 2, 2): 1, (3, 3, 2): 1, (3, 3, 3): 1,
    },
}  # fmt: skip
"""Per GenEval++ tag, how many of the file's 40 records have each count tuple (one count per include entry, in
order of mention; its length is the number of classes). Synth draws tuples with these weights."""

GENEVAL_PP_LEFT_RIGHT = {"color_spatial_attr": 14, "spatial_count_attr": 19, "size_spatial_attr": 17}
"""Per spatial tag, how many of the file's 40 records put their entries left / right (the others above / below);
the first entry is always the left (upper) one. Synth draws the axis with these weights."""

GENEVAL_PP_PHRASING = {
    "color_attr": "article",
    "counting": "counted",
    "color_count_attr": "counted",
    "color_spatial_attr": "bare",
    "spatial_count_attr": "counted",
    "size_spatial_attr": "article",
    "multi_object_count_attr": "numbered",
}
"""How the file writes an entry of each tag: `article` "a red circle"; `counted` count word and plural, whatever
the count ("one squares"); `numbered` count word, singular at one ("one square", "two squares"); `bare` no article
("blue spoon"). Entries are joined with "and", three or more with Oxford commas ("a, b, and c")."""

MIN_RELATION_CELLS = 2
"""Sampled scenes put related objects at least this many grid cells apart along the relation."""

_PLACEMENT_TRIES = 200

LARGE_DECAY = 0.9
"""Random placement try t (from 0) draws each unspecified size large with probability 0.5 * LARGE_DECAY ** t: as
likely as small on the first try (where nearly every scene of up to five objects is placed), less after each stuck
try, so that a crowded scene (GenEval++ counts 7 and three classes of up to three) comes out in a few tries with
small objects instead of hundreds of tries."""


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


def numbered_phrase(entry: dict[str, Any]) -> str:
    """GenEval++'s multi_object_count_attr entry: count word, attributes, singular at one ("one square", "two red
    squares")."""
    words = [count_word(entry["count"]), *(w for w in (entry.get("size"), entry.get("color")) if w)]
    return " ".join([*words, entry["class"] if entry["count"] == 1 else PLURALS[entry["class"]]])


def bare_phrase(entry: dict[str, Any]) -> str:
    """GenEval++'s color_spatial_attr entry: attributes and the class, no article ("blue circle")."""
    return " ".join([*(w for w in (entry.get("size"), entry.get("color")) if w), entry["class"]])


ENTRY_PHRASES = {"article": entry_phrase, "counted": counted_phrase, "numbered": numbered_phrase,
                 "bare": bare_phrase}
"""GenEval++'s ways of writing an entry (GENEVAL_PP_PHRASING)."""


def region_phrase(region: str) -> str:
    """GenEval++'s wording of a region: "on the left", "on the above"."""
    return f"on the {region}"


def join_phrases(phrases: list[str], oxford: bool = False) -> str:
    """"a", "a and b", "a, b and c" (GenEval), or with `oxford` "a, b, and c" (GenEval++)."""
    if len(phrases) <= 2:
        return " and ".join(phrases)
    return ", ".join(phrases[:-1]) + ("," if oxford else "") + " and " + phrases[-1]


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


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int) -> list[str]:
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


Drawn = tuple[list[dict[str, Any]], str]
"""A drawn prompt: its include entries and its text."""


def _listed(entries: list[dict[str, Any]]) -> Drawn:
    return entries, join_phrases([entry_phrase(e) for e in entries])


def _related(subject: dict[str, Any], reference: dict[str, Any], relation: str) -> Drawn:
    prompt = f"{entry_phrase(subject)} {RELATION_PHRASES[relation]} {entry_phrase(reference)}"
    return [reference, {**subject, "position": [relation, 0]}], prompt


def _photo(tag: str, entries: list[dict[str, Any]]) -> Drawn:
    """GenEval++'s grammar: "A photo of " and the entries written the tag's way (GENEVAL_PP_PHRASING), each followed
    by its region phrase."""
    phrase = ENTRY_PHRASES[GENEVAL_PP_PHRASING[tag]]
    phrases = [" ".join([phrase(e), *([region_phrase(e["region"])] if "region" in e else [])]) for e in entries]
    return entries, f"{PHOTO} {join_phrases(phrases, oxford=True)}"


def _weighted(rng: np.random.Generator, weights: dict[Any, int]) -> Any:
    """One key, drawn with probability proportional to its weight."""
    keys, p = list(weights), np.array(list(weights.values()), dtype=float)
    return keys[int(rng.choice(len(keys), p=p / p.sum()))]


def _regions(tag: str, rng: np.random.Generator) -> tuple[str, str]:
    """The regions of a spatial tag's two entries: left then right, or above then below (GENEVAL_PP_LEFT_RIGHT)."""
    left_right = GENEVAL_PP_LEFT_RIGHT[tag]
    return REGION_PAIRS[_weighted(rng, {0: left_right, 1: GENEVAL_PP_RECORDS_PER_TAG - left_right})]


def _draw(suite: str, tag: str, rng: np.random.Generator) -> Drawn:
    """Include entries and prompt text of one tag."""
    return _draw_geneval_pp(tag, rng) if suite == "geneval_pp" else _draw_geneval(tag, rng)


def _draw_geneval_pp(tag: str, rng: np.random.Generator) -> Drawn:
    """A GenEval++ tag's include entries and prompt text, drawn as the benchmark's file draws them (module docstring):
    distinct classes, distinct colours, the file's count tuples, regions and order."""
    counts = _weighted(rng, GENEVAL_PP_COUNTS[tag])
    shapes = _pick(rng, SHAPES, len(counts))
    if tag in ("color_attr", "color_count_attr"):
        colors = _pick(rng, tuple(COLORS), len(counts))
        return _photo(tag, [_entry(s, n, c) for s, n, c in zip(shapes, counts, colors)])
    if tag in ("counting", "multi_object_count_attr"):
        return _photo(tag, [_entry(s, n) for s, n in zip(shapes, counts)])
    regions = _regions(tag, rng)
    if tag == "color_spatial_attr":
        colors = _pick(rng, tuple(COLORS), 2)
        return _photo(tag, [_entry(s, n, c, region=r) for s, n, c, r in zip(shapes, counts, colors, regions)])
    if tag == "spatial_count_attr":
        return _photo(tag, [_entry(s, n, region=r) for s, n, r in zip(shapes, counts, regions)])
    if tag == "size_spatial_attr":  # the larger entry first, as in every record of the file
        larger_first = ("larger", "smaller")
        return _photo(tag, [_entry(s, n, size=z, region=r) for s, n, z, r in zip(shapes, counts, larger_first,
                                                                                  regions)])
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

DRAWN_SIZES_BUDGET = 2_000
"""Most partial placements scene_for's exhaustive search visits with the drawn sizes before it tries every
unspecified size small (which places whatever can be placed at all). A search that fails visits its whole budget:
at SEARCH_BUDGET that is ~10 s for GenEval++'s nine objects with a large one drawn among them."""


def place_exhaustively(
    specs: list[tuple[str, str, str, int]], relations: dict[int, tuple[str, int]], regions: dict[int, str],
    canvas: int, budget: int = SEARCH_BUDGET,
) -> list[SceneObject] | None:
    """The first placement of `specs` (same rules as `place_objects`) in a depth-first search over the cell
    centres, or None if there is none (or none within `budget` visited partial placements). Identical consecutive
    specs take increasing cells (their order does not matter), which keeps the search small."""
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
        if visits > budget:
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
    unspecified colours and sizes are drawn at random (sizes large less often after each stuck try: LARGE_DECAY).

    Random placement is tried first; when every try is stuck, an exhaustive search places the last drawn
    objects (within DRAWN_SIZES_BUDGET, or SEARCH_BUDGET when none of their sizes is unspecified and large), then,
    if that fails, with every unspecified size small (within SEARCH_BUDGET). PlacementError if neither finds a
    scene.
    Objects are listed in the prompt's order of mention, each group left to right.
    """
    check_canvas(canvas)
    include = record["include"]
    relations = {i: (e["position"][0], e["position"][1]) for i, e in enumerate(include) if e.get("position")}
    regions = {i: e["region"] for i, e in enumerate(include) if e.get("region")}
    colors = tuple(COLORS)
    specs: list[tuple[str, str, str, int]] = []
    for t in range(_PLACEMENT_TRIES):
        p_large = 0.5 * LARGE_DECAY**t
        specs = [
            (
                entry["class"],
                entry.get("color") or colors[int(rng.integers(len(colors)))],
                entry_size(entry) or SIZES[int(rng.random() < p_large)],
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
    # with no size left to shrink, the one search gets the whole budget
    searches = ([(specs, SEARCH_BUDGET)] if smallest == specs
                else [(specs, DRAWN_SIZES_BUDGET), (smallest, SEARCH_BUDGET)])
    for candidate, budget in searches:
        placed = place_exhaustively(candidate, relations, regions, canvas, budget)
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


def draw_record(suite: str, tag: str, rng: np.random.Generator) -> dict:
    """A prompt record of `tag` in `suite` (GenEval record shape), without a scene."""
    if suite not in SUITES:
        raise ValueError(f"suite {suite!r}: expected one of {tuple(SUITES)}")
    if tag not in SUITES[suite]:
        raise ValueError(f"tag {tag!r}: suite {suite!r} has tags {SUITES[suite]}")
    include, prompt = _draw(suite, tag, rng)
    return {"tag": tag, "include": include, "exclude": exact_count_excludes(include), "prompt": prompt}


def sample_example(suite: str, tag: str, rng: np.random.Generator, canvas: int = 32) -> tuple[dict, Scene]:
    """A prompt record of `tag` in `suite` (GenEval record shape) and a scene that satisfies it."""
    record = draw_record(suite, tag, rng)
    return record, scene_for(record, rng, canvas)


def examples_over_tags(n: int, seed: int, canvas: int = 32) -> list[tuple[dict, Scene]]:
    """`n` seeded examples cycling over every tag of both suites (for benchmarks and exactness checks)."""
    rng = np.random.default_rng(seed)
    tags = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]
    return [sample_example(*tags[i % len(tags)], rng, canvas) for i in range(n)]

