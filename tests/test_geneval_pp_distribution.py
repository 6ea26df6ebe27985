"""The synth `geneval_pp` suite draws GenEval++ as the benchmark's file draws it.

The file is Echo-4o's `test_scripts/Geneval++.jsonl`: 280 records, 40 per tag (read from the copy in
github.com/yejy53/Nano-banana-150k at commit 33717d5518764115f629a0ab593cdbf100aeb83d, the same authors' repository;
Echo-4o's own repository is not indexed). Below are its facts per tag, counted by hand from those records -- not its
records: how many records have each count tuple (one count per include entry, in order; its length is the number
of classes), how many put their two entries left / right rather than above / below, which entry is the larger one,
and how each tag is phrased. The tests draw many synth records per tag and compare their histograms and wording
with these facts, and place every count tuple of the file on ShapeWorld's canvas.

What ShapeWorld cannot copy, and the data card states (r3/data/card.py): the file's 80 COCO classes and 10 colours
(ShapeWorld has 4 shapes and 6 colours, so a four-object color_attr prompt names every shape), and sizes of
objects the prompt leaves unsized (drawn; crowded scenes come out small). Everything else is the file's.
"""

import re
from collections import Counter
from math import sqrt

import numpy as np
import pytest

from r3.world.prompts import COUNT_WORDS, GENEVAL_PP_TAGS, draw_record, place_exhaustively, scene_for
from r3.world.scene import COLORS, PLURALS, SHAPES
from r3.world.verifier import check

FILE_RECORDS_PER_TAG = 40

FILE_COUNT_TUPLES: dict[str, dict[tuple[int, ...], int]] = {
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
"""Records per count tuple. No record has a count above 3 except counting's (4-7); no spatial or multi-object
record counts (2, 1); multi_object_count_attr holds up to 9 objects (three classes of three)."""

FILE_CLASSES = {"color_attr": {3: 30, 4: 10}, "multi_object_count_attr": {2: 19, 3: 21}}
"""Records per number of classes where it varies (every other tag: 1 class in counting, 2 in the rest)."""

FILE_FIRST_REGION = {
    "color_spatial_attr": {"left": 14, "above": 26},
    "spatial_count_attr": {"left": 19, "above": 21},
    "size_spatial_attr": {"left": 17, "above": 23},
}
"""Records per region of the first entry; the second entry is always in the opposite one (right / below): the file
never names the right or lower entry first."""

FILE_SIZE_ORDER = {"size_spatial_attr": {("larger", "smaller"): 40}}
"""The larger entry always comes first."""

WORD = r"[a-z]+"
COUNT = "(one|two|three|four|five|six|seven)"
FILE_PATTERNS = {
    "color_attr": rf"A photo of an? {WORD} {WORD}(, an? {WORD} {WORD}){{1,2}}, and an? {WORD} {WORD}",
    "counting": rf"A photo of (four|five|six|seven) {WORD}s",
    "color_count_attr": rf"A photo of {COUNT} {WORD} {WORD}s and {COUNT} {WORD} {WORD}s",
    "color_spatial_attr": rf"A photo of {WORD} {WORD} on the (left|above) and {WORD} {WORD} on the (right|below)",
    "spatial_count_attr": rf"A photo of {COUNT} {WORD}s on the (left|above) and {COUNT} {WORD}s on the (right|below)",
    "size_spatial_attr": rf"A photo of a larger {WORD} on the (left|above) and a smaller {WORD} on the (right|below)",
    "multi_object_count_attr": (rf"A photo of ((one {WORD}|(two|three) {WORD}s) and (one {WORD}|(two|three) {WORD}s)"
                                rf"|(one {WORD}|(two|three) {WORD}s), (one {WORD}|(two|three) {WORD}s), "
                                rf"and (one {WORD}|(two|three) {WORD}s))"),
}
"""The file's phrasing per tag (its classes and colours are one word here, as ShapeWorld's are): "A photo of",
Oxford commas; articles ("a" / "an") in color_attr and size_spatial_attr only; none in color_spatial_attr ("A photo
of blue spoon on the left and red couch on the right"); count words elsewhere, with the plural even at one in
counting, color_count_attr and spatial_count_attr ("one cats on the right") but the singular at one in
multi_object_count_attr ("one sandwich and two baseball gloves"); regions as "on the left / right / above / below"."""

N_DRAWS = 4000


def file_plural(name: str) -> str:
    """The file's plural: "es" after a final s ("buses", "skises", "scissorses"), else "s" ("benchs", "knifes")."""
    return name + ("es" if name.endswith("s") else "s")


def file_prompt(tag: str, include: list[dict]) -> str:
    """The prompt the file writes for these include entries (FILE_PATTERNS)."""

    def entry(e: dict) -> str:
        attributes = [w for w in (e.get("size"), e.get("color")) if w]
        if tag in ("color_attr", "size_spatial_attr"):
            words = ["an" if (attributes or [e["class"]])[0][0] in "aeiou" else "a", *attributes, e["class"]]
        elif tag == "color_spatial_attr":
            words = [*attributes, e["class"]]
        elif tag == "multi_object_count_attr":
            words = [COUNT_WORDS[e["count"]], *attributes, e["class"] if e["count"] == 1 else file_plural(e["class"])]
        else:
            words = [COUNT_WORDS[e["count"]], *attributes, file_plural(e["class"])]
        return " ".join([*words, *(["on", "the", e["region"]] if "region" in e else [])])

    parts = [entry(e) for e in include]
    return "A photo of " + (" and ".join(parts) if len(parts) <= 2 else ", ".join(parts[:-1]) + ", and " + parts[-1])


def assert_close(drawn: Counter, file: dict, what: str) -> None:
    """Same support, and every share within 4 binomial standard errors of the file's."""
    assert set(drawn) == set(file), f"{what}: drawn {sorted(drawn)} vs the file's {sorted(file)}"
    n, n_file = sum(drawn.values()), sum(file.values())
    for key, count in file.items():
        p, q = count / n_file, drawn[key] / n
        assert abs(q - p) <= 4 * sqrt(p * (1 - p) / n) + 1e-9, f"{what} {key}: drawn share {q:.3f}, file {p:.3f}"


def marginal(tuples: dict[tuple[int, ...], int]) -> Counter:
    out: Counter = Counter()
    for counts, n in tuples.items():
        for c in counts:
            out[c] += n
    return out


@pytest.fixture(scope="module")
def drawn() -> dict[str, list[dict]]:
    rng = np.random.default_rng(29)
    return {tag: [draw_record("geneval_pp", tag, rng) for _ in range(N_DRAWS)] for tag in GENEVAL_PP_TAGS}


def test_the_description_adds_up_to_the_file():
    assert set(FILE_COUNT_TUPLES) == set(GENEVAL_PP_TAGS) == set(FILE_PATTERNS)
    assert all(sum(h.values()) == FILE_RECORDS_PER_TAG for h in FILE_COUNT_TUPLES.values())
    assert sum(sum(h.values()) for h in FILE_COUNT_TUPLES.values()) == 280
    for tag, classes in FILE_CLASSES.items():
        assert set(classes) == {len(t) for t in FILE_COUNT_TUPLES[tag]}, tag
        for k, n in classes.items():
            assert sum(v for t, v in FILE_COUNT_TUPLES[tag].items() if len(t) == k) == n
    for tag, regions in {**FILE_FIRST_REGION, **FILE_SIZE_ORDER}.items():
        assert sum(regions.values()) == FILE_RECORDS_PER_TAG, tag
    # ShapeWorld's plurals are the file's rule ("crosses" as the file's "buses")
    assert all(PLURALS[s] == file_plural(s) for s in SHAPES)


@pytest.mark.parametrize("tag", GENEVAL_PP_TAGS)
def test_synth_draws_the_file_s_counts_and_classes(drawn, tag):
    records = drawn[tag]
    tuples = Counter(tuple(e["count"] for e in r["include"]) for r in records)
    assert_close(tuples, FILE_COUNT_TUPLES[tag], f"{tag} count tuples")
    assert_close(Counter(c for t, n in tuples.items() for c in t for _ in range(n)), marginal(FILE_COUNT_TUPLES[tag]),
                 f"{tag} counts")
    classes = Counter(len(r["include"]) for r in records)
    assert_close(classes, FILE_CLASSES.get(tag, {len(next(iter(FILE_COUNT_TUPLES[tag]))): 40}), f"{tag} classes")
    for r in records:  # distinct classes (and colours) within a prompt, as in every record of the file
        assert len({e["class"] for e in r["include"]}) == len(r["include"])
        assert len({e.get("color") for e in r["include"]}) == len(r["include"]) or "color" not in r["include"][0]
    # every ShapeWorld class (and colour, where the tag has colours) about equally often
    shapes = Counter(e["class"] for r in records for e in r["include"])
    assert_close(shapes, {s: 1 for s in SHAPES}, f"{tag} classes used")
    if "color" in records[0]["include"][0]:
        assert_close(Counter(e["color"] for r in records for e in r["include"]), {c: 1 for c in COLORS},
                     f"{tag} colours used")


@pytest.mark.parametrize("tag", sorted(FILE_FIRST_REGION))
def test_synth_draws_the_file_s_regions_and_sizes(drawn, tag):
    records = drawn[tag]
    assert_close(Counter(r["include"][0]["region"] for r in records), FILE_FIRST_REGION[tag], f"{tag} first region")
    opposite = {"left": "right", "above": "below"}
    assert all(r["include"][1]["region"] == opposite[r["include"][0]["region"]] for r in records)
    sizes = Counter(tuple(e.get("size") for e in r["include"]) for r in records)
    assert_close(sizes, FILE_SIZE_ORDER.get(tag, {(None, None): 40}), f"{tag} sizes")


@pytest.mark.parametrize("tag", GENEVAL_PP_TAGS)
def test_synth_prompts_are_phrased_as_the_file_phrases_them(drawn, tag):
    for record in drawn[tag][:500]:
        assert re.fullmatch(FILE_PATTERNS[tag], record["prompt"]), record["prompt"]
        assert record["prompt"] == file_prompt(tag, record["include"])
        assert "exclude" in record  # synth's addition: exact counts for every entry (the file: counting only)


def test_file_phrasing_examples():
    """file_prompt writes the file's own records back (three of them, with its classes)."""
    assert file_prompt("color_spatial_attr", [{"class": "spoon", "count": 1, "color": "blue", "region": "left"},
                                              {"class": "couch", "count": 1, "color": "red", "region": "right"}]) == \
        "A photo of blue spoon on the left and red couch on the right"
    assert file_prompt("color_attr", [{"class": "laptop", "count": 1, "color": "blue"},
                                      {"class": "chair", "count": 1, "color": "orange"},
                                      {"class": "hair drier", "count": 1, "color": "white"}]) == \
        "A photo of a blue laptop, an orange chair, and a white hair drier"
    assert file_prompt("multi_object_count_attr", [{"class": "sandwich", "count": 1},
                                                   {"class": "baseball glove", "count": 2}]) == \
        "A photo of one sandwich and two baseball gloves"
    assert file_prompt("spatial_count_attr", [{"class": "scissors", "count": 3, "region": "above"},
                                              {"class": "dining table", "count": 2, "region": "below"}]) == \
        "A photo of three scissorses on the above and two dining tables on the below"


def _record(tag: str, counts: tuple[int, ...], rng: np.random.Generator) -> dict:
    """A record of the tag with these counts (classes, colours and regions drawn as synth draws them)."""
    while True:
        record = draw_record("geneval_pp", tag, rng)
        if tuple(e["count"] for e in record["include"]) == counts:
            return record


@pytest.mark.parametrize("tag", GENEVAL_PP_TAGS)
def test_every_count_tuple_of_the_file_places_on_the_canvas(tag):
    """What the file asks, ShapeWorld draws: every count tuple (up to 7 objects of a class, 3 + 3 in two halves,
    three classes of three) places, on both region axes, and the scene satisfies the record exactly."""
    rng = np.random.default_rng(7)
    for counts in FILE_COUNT_TUPLES[tag]:
        for _ in range(4):
            record = _record(tag, counts, rng)
            scene = scene_for(record, rng)
            assert len(scene.objects) == sum(counts) and check(scene.objects, record).strict == 1


def test_canvas_capacity():
    """The spacing rule's limits on the 32-pixel canvas (8 x 8 cells): 9 small objects, 4 large ones, 1 large with 8
    small; a half holds 6 small or 2 large. GenEval++ asks for at most 9 (three classes of three) and 3 per half."""
    def fits(n_small: int, n_large: int = 0, region: str | None = None) -> bool:
        specs = [("circle", "red", "large", 0)] * n_large + [("square", "red", "small", 1)] * n_small
        regions = {0: region, 1: region} if region else {}
        return place_exhaustively(specs, {}, regions, 32) is not None

    assert fits(9) and fits(8, 1) and fits(0, 4) and not fits(0, 5)
    assert fits(6, region="left") and not fits(7, region="left") and fits(0, 2, "above") and not fits(0, 3, "above")
