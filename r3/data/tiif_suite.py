"""The synth stage's TIIF suite: ShapeWorld records in TIIF-Bench's jsonl format (r3.world.tiif_io reads them as it
reads the benchmark's files), for the TIIF-Bench types ShapeWorld can draw. A record has a short description, a long
one that says the same with more words, and yes/no questions with the answers the scene drawn for it gives
(r3.world.tiif_exact), every question in the ShapeWorld grammar, so the suite is scored exactly.

A record describes its whole image (closed world): the objects it names and nothing else. Its questions ask only
what the description decides (the shapes, the colours and sizes it gives, counts, the relation it names, what it
says is absent), so every image that follows the description has the record's answers; each record has both
answers. Short descriptions use GenEval's phrasing and the tiny model's vocabulary; long ones are free English.

Types (TIIF-Bench's names, TYPES):
  shape+color          one or two objects of given shape and colour
  2d_spatial_relation  two objects, one to the left of / to the right of / above / below the other
  numeracy             one counted group of a shape (coloured or not), or two groups of two shapes
  comparison           two objects of given sizes: one larger than the other, or both of one size
  negation             objects and a shape that is absent, or objects of one shape none of which has a colour
  differentiation      objects of one shape told apart by colour or by size (one red and two blue)

The suite draws from its own random streams, seeded [base.seed, TIIF_STREAM, type index], apart from every stream of
the synth tables (r3.data.synth), which are drawn exactly as without it. Per type it draws records until it holds
synth.tiif_heldout_per_type held-out and synth.tiif_train_per_type train records: a record whose short description
was drawn before is dropped, a new one goes to held-out with probability H / (H + T) while held-out is short of H. So
both splits have distinct descriptions, and train and held-out share none.
"""

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from r3 import paths
from r3.config import BaseConfig
from r3.data.io import SYNTH_FIX
from r3.data.table import Table
from r3.errors import InputError
from r3.world.prompts import (
    RELATION_PHRASES,
    PlacementError,
    count_word,
    exact_count_excludes,
    join_phrases,
    noun_phrase,
    scene_for,
)
from r3.world.scene import COLORS, PLURALS, RELATIONS, SHAPES, SIZES, Scene
from r3.world.tiif_exact import ANY_SHAPE, answer, parse_question
from r3.world.tiif_io import TiifRecord, prompt_records, read_tiif_file, tiif_items, write_tiif_file

TIIF_STREAM = 2000
"""Second entropy word of the suite's random streams; the synth tables' streams use 0-5 (table) and 1000 + i
(held-out candidates of suite/tag i)."""

MAX_REPEATS = 10_000
"""Draws of one type in a row that repeat a description (or cannot be placed) before the suite gives up."""

CONVERSE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}
"""The relation the reference stands in to the subject."""

BACKGROUND = "on a plain black background"


@dataclass(frozen=True)
class Described:
    """One drawn record before its scene."""

    include: list[dict[str, Any]]
    """The objects, as GenEval include entries (class, count, color?, size?, position?): all the image holds."""
    short: str
    long: str
    questions: tuple[str, ...]
    exclude: tuple[dict[str, Any], ...] = ()
    """What the description says is absent beyond the exact counts (a colour none of the objects has)."""


@dataclass(frozen=True)
class TiifExample:
    """One record of the suite and the scene its answers were read from."""

    type: str
    record: dict[str, Any]
    """The GenEval-shaped record of the objects (tag = type, include, exclude, prompt = the short description) that
    the scene was drawn for."""
    long: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    """"yes" / "no": each question's exact answer on `scene`."""
    scene: Scene

    def tiif_record(self) -> dict[str, Any]:
        """The record as a line of a TIIF file."""
        return {"type": self.type, "short_description": self.record["prompt"], "long_description": self.long,
                "yn_question_list": list(self.questions), "yn_answer_list": list(self.answers)}


# ---------------------------------------------------------------- phrasing


def _entry(shape: str, count: int, color: str | None = None, size: str | None = None) -> dict[str, Any]:
    return {"class": shape, "count": count, **({"color": color} if color else {}), **({"size": size} if size else {})}


def _pick(rng: np.random.Generator, options: tuple[str, ...], k: int) -> list[str]:
    return [options[i] for i in rng.choice(len(options), size=k, replace=False)]


def _words(*words: str | None) -> str:
    return " ".join(w for w in words if w)


def _plural(shape: str) -> str:
    return PLURALS.get(shape, shape + "s")


def _counted(entry: dict[str, Any]) -> str:
    """ "one red circle", "three squares": an entry with its count word (long descriptions)."""
    count, shape = entry["count"], entry["class"]
    return _words(count_word(count), entry.get("size"), entry.get("color"), shape if count == 1 else _plural(shape))


def _listed(entries: list[dict[str, Any]]) -> str:
    """ "a red circle and three squares": GenEval's phrasing (short descriptions)."""
    return join_phrases([noun_phrase(e["count"], e["class"], e.get("color"), e.get("size")) for e in entries])


def _count_question(count: int, shape: str, color: str | None = None, size: str | None = None) -> str:
    """ "Is there exactly one red circle in the image?", "Are there three objects in the image?" (count >= 1)."""
    if count == 1:
        return f"Is there exactly one {_words(size, color, shape)} in the image?"
    return f"Are there {count_word(count)} {_words(size, color, _plural(shape))} in the image?"


# ---------------------------------------------------------------- the types


def _shape_color(rng: np.random.Generator) -> Described:
    n = int(rng.integers(1, 3))
    shapes, colors = _pick(rng, SHAPES, n + 1), _pick(rng, tuple(COLORS), n + 1)  # the last ones: absent
    entries = [_entry(s, 1, c) for s, c in zip(shapes[:n], colors[:n])]
    (s1, c1), other_shape, other_color = (shapes[0], colors[0]), shapes[n], colors[n]
    if n == 1:
        questions = (f"Is the {s1} {c1}?", f"Is the {s1} {other_color}?", f"Is there a {c1} {s1} in the image?",
                     f"Is the {c1} object a {other_shape}?")
    else:
        s2, c2 = shapes[1], colors[1]
        questions = (f"Is the {s1} {c1}?", f"Is the {s2} {c1}?", f"Is the {c2} object a {s2}?",
                     f"Is there a {other_color} {s1} in the image?")
    listing = join_phrases([_counted(e) for e in entries])
    own = ", each drawn in its own colour," if n > 1 else ""
    long = f"A plain black image that shows exactly {listing}{own} and no other object."
    return Described(entries, _listed(entries), long, questions)


def _spatial(rng: np.random.Generator) -> Described:
    (sa, sb), (ca, cb) = _pick(rng, SHAPES, 2), _pick(rng, tuple(COLORS), 2)
    relation = RELATIONS[int(rng.integers(len(RELATIONS)))]
    phrase, converse = RELATION_PHRASES[relation], RELATION_PHRASES[CONVERSE[relation]]
    entries = [_entry(sb, 1, cb), {**_entry(sa, 1, ca), "position": [relation, 0]}]  # the reference first
    questions = (f"Is the {sa} {phrase} the {sb}?", f"Is the {sb} {converse} the {sa}?",
                 f"Is the {sa} {converse} the {sb}?", f"Is the {sb} {ca}?")
    long = (f"{BACKGROUND.capitalize()} a {ca} {sa} is placed {phrase} a {cb} {sb}; these two shapes are the only "
            "objects in the image.")
    return Described(entries, f"a {ca} {sa} {phrase} a {cb} {sb}", long, questions)


def _numeracy(rng: np.random.Generator) -> Described:
    if rng.random() < 0.5:  # one group, coloured or not
        shape = _pick(rng, SHAPES, 1)[0]
        color = _pick(rng, tuple(COLORS), 1)[0] if rng.random() < 0.5 else None
        n = int(rng.integers(2, 7))
        entries = [_entry(shape, n, color)]
        questions = (_count_question(n, shape, color), _count_question(n + 1, shape, color),
                     _count_question(1, shape), _count_question(n, ANY_SHAPE))
    else:  # two groups
        s1, s2 = _pick(rng, SHAPES, 2)
        n1, n2 = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        entries = [_entry(s1, n1), _entry(s2, n2)]
        questions = (_count_question(n1, s1), _count_question(n2 + 1, s2), _count_question(n1 + n2, ANY_SHAPE),
                     f"Is there no {s1} in the image?")
    long = (f"Count them: the image shows exactly {join_phrases([_counted(e) for e in entries])} {BACKGROUND}, "
            "and nothing else.")
    return Described(entries, _listed(entries), long, questions)


def _comparison(rng: np.random.Generator) -> Described:
    (sa, sb), (ca, cb) = _pick(rng, SHAPES, 2), _pick(rng, tuple(COLORS), 2)
    if rng.random() < 0.75:  # one larger than the other, either mentioned first
        za, zb = _pick(rng, SIZES, 2)
        bigger, smaller = (sa, sb) if za == "large" else (sb, sa)
        how = f"of different sizes, so the {bigger} is clearly bigger than the {smaller}"
        questions = (f"Is the {sa} larger than the {sb}?", f"Is the {sb} smaller than the {sa}?",
                     f"Is the {sa} smaller than the {sb}?", f"Is the {sb} larger than the {sa}?")
    else:  # both of one size
        za = zb = SIZES[int(rng.integers(len(SIZES)))]
        how = f"of the same {za} size, neither bigger than the other"
        questions = (f"Is the {sa} larger than the {sb}?", f"Is the {sb} smaller than the {sa}?",
                     f"Is the {sa} {za}?", f"Is the {sb} {za}?")
    entries = [_entry(sa, 1, ca, za), _entry(sb, 1, cb, zb)]
    long = f"A plain black image with two objects {how}: a {za} {ca} {sa} and a {zb} {cb} {sb}, and nothing else."
    return Described(entries, _listed(entries), long, questions)


def _negation(rng: np.random.Generator) -> Described:
    if rng.random() < 0.5:  # a shape that is absent
        shape, absent = _pick(rng, SHAPES, 2)
        color, n = _pick(rng, tuple(COLORS), 1)[0], int(rng.integers(1, 4))
        entries = [_entry(shape, n, color)]
        questions = (f"Is there no {absent} in the image?", f"Is there no {shape} in the image?",
                     f"Is there a {absent} in the image?", _count_question(n, shape, color))
        long = (f"The image shows {_counted(entries[0])} {BACKGROUND}, and there is not a single {absent} anywhere "
                "in it.")
        return Described(entries, f"{_listed(entries)} and no {_plural(absent)}", long, questions)
    shape, color, n = _pick(rng, SHAPES, 1)[0], _pick(rng, tuple(COLORS), 1)[0], int(rng.integers(2, 4))  # a colour
    entries = [_entry(shape, n)]
    questions = (f"Are there no {color} {_plural(shape)} in the image?", f"Is there a {color} {shape} in the image?",
                 _count_question(n, shape), f"Are there no {_plural(shape)} in the image?")
    long = (f"The image shows {_counted(entries[0])} {BACKGROUND}, and not one of them is {color}; there is nothing "
            "else in it.")
    return Described(entries, f"{_listed(entries)} and no {color} {_plural(shape)}", long, questions,
                     exclude=(_entry(shape, 1, color),))


def _differentiation(rng: np.random.Generator) -> Described:
    shape, others = _pick(rng, SHAPES, 1)[0], int(rng.integers(2, 4))
    total = f"{count_word(1 + others)} {_plural(shape)}"
    if rng.random() < 0.5:  # by colour
        one, rest = _pick(rng, tuple(COLORS), 2)
        entries = [_entry(shape, 1, one), _entry(shape, others, rest)]
        questions = (_count_question(1, shape, one), _count_question(others, shape, rest), f"Is the {shape} {one}?",
                     _count_question(2, shape, one))
        how = "colour"
    else:  # by size
        one, rest = "large", "small"
        entries = [_entry(shape, 1, size=one), _entry(shape, others, size=rest)]
        questions = (_count_question(1, shape, size=one), _count_question(others, shape, size=rest),
                     f"Is the {shape} {one}?", f"Is the {one} {shape} smaller than the {rest} {shape}?")
        how = "size"
    long = (f"The image holds {total} {BACKGROUND} and nothing else; they differ in {how}: exactly one of them is "
            f"{one} and the other {count_word(others)} are {rest}.")
    return Described(entries, f"{total}, one {one} and {count_word(others)} {rest}", long, questions)


DRAWS: dict[str, Callable[[np.random.Generator], Described]] = {
    "shape+color": _shape_color,
    "2d_spatial_relation": _spatial,
    "numeracy": _numeracy,
    "comparison": _comparison,
    "negation": _negation,
    "differentiation": _differentiation,
}
"""How each type's records are drawn."""

TYPES = tuple(DRAWS)

TYPE_DOCS = {
    "shape+color": "one or two objects of given shape and colour (TIIF-Bench's basic attribute)",
    "2d_spatial_relation": "two objects, one to the left of / to the right of / above / below the other",
    "numeracy": "one counted group of a shape (2-6, coloured or not), or two groups of 1-4",
    "comparison": "two objects of given sizes: one larger (3 in 4), or both of one size",
    "negation": "objects and an absent shape, or objects of one shape none of which has a given colour",
    "differentiation": "3-4 objects of one shape told apart by colour or by size (one red and two blue)",
}
"""What each type's records describe (the data card)."""


# ---------------------------------------------------------------- the suite


def draw_example(type_name: str, rng: np.random.Generator, canvas: int) -> TiifExample:
    """One record of the type, its scene (scene_for: exactly its objects; PlacementError if they do not fit) and its
    questions' answers on that scene."""
    described = DRAWS[type_name](rng)
    record = {"tag": type_name, "include": described.include,
              "exclude": exact_count_excludes(described.include) + list(described.exclude), "prompt": described.short}
    scene = scene_for(record, rng, canvas)
    answers = tuple(answer(parse_question(q), scene) for q in described.questions)
    return TiifExample(type_name, record, described.long, described.questions, answers, scene)


def type_rng(base: BaseConfig, type_name: str) -> np.random.Generator:
    return np.random.default_rng([base.seed, TIIF_STREAM, TYPES.index(type_name)])


def type_examples(base: BaseConfig, want: dict[str, int], type_name: str) -> dict[str, list[TiifExample]]:
    """{split: examples} of one type, `want[split]` of each ("train", "heldout"), split as the module docstring
    says."""
    rng = type_rng(base, type_name)
    found: dict[str, list[TiifExample]] = {split: [] for split in want}
    seen: set[str] = set()
    repeats = 0
    while any(len(found[split]) < n for split, n in want.items()):
        try:
            example = draw_example(type_name, rng, base.canvas)
        except PlacementError:
            example = None
        if example is None or example.record["prompt"] in seen:
            repeats += 1
            if repeats > MAX_REPEATS:
                raise RuntimeError(f"synth: {MAX_REPEATS} draws of TIIF type {type_name} in a row gave no new "
                                   "description; lower synth.tiif_train_per_type or synth.tiif_heldout_per_type")
            continue
        repeats = 0
        seen.add(example.record["prompt"])
        held_short = len(found["heldout"]) < want["heldout"]
        to_heldout = held_short and (len(found["train"]) >= want["train"]
                                     or rng.random() < want["heldout"] / (want["heldout"] + want["train"]))
        found["heldout" if to_heldout else "train"].append(example)
    return found


def tiif_suite(base: BaseConfig, want: dict[str, int]) -> dict[str, list[TiifExample]]:
    """{split: examples} with `want[split]` records per type ({"train": T, "heldout": H}: SynthConfig.tiif_per_type),
    type after type in TYPES order."""
    per_type = [type_examples(base, want, t) for t in TYPES]
    return {split: [e for found in per_type for e in found[split]] for split in want}


def split_file(tiif_dir: Path, split: str) -> Path:
    """A split's file in a directory of the suite (paths.SYNTH_TIIF)."""
    return tiif_dir / f"{split}.jsonl"


def suite_file(synth_dir: Path, split: str) -> Path:
    """Where a split of the suite lives under a synth directory (paths.SYNTH_TIIF under paths.SYNTH)."""
    return split_file(synth_dir / paths.SYNTH_TIIF.relative_to(paths.SYNTH), split)


def write_suite(base: BaseConfig, want: dict[str, int], tiif_dir: Path) -> None:
    """Draw the suite (tiif_suite) and write each split to its split_file in `tiif_dir`."""
    for split, examples in tiif_suite(base, want).items():
        write_tiif_file(split_file(tiif_dir, split), [e.tiif_record() for e in examples])


def read_split(path: Path) -> list[TiifRecord]:
    """The records of a split's file; InputError with the fix when the synth stage has not written it (or it is
    malformed)."""
    if not path.is_file():
        raise InputError(f"{path}: TIIF suite not found; {SYNTH_FIX}")
    return read_tiif_file(path)


def read_suite(synth_dir: Path, split: str) -> list[TiifRecord]:
    """The records of a split under a synth directory (read_split of suite_file)."""
    return read_split(suite_file(synth_dir, split))


def prompt_table(synth_dir: Path, split: str) -> Table:
    """A split's prompt records (each record's short, then its long description: r3.world.tiif_io.prompt_records)
    as a Table whose `metadata` column holds them as JSON (Table.records reads them back)."""
    records = prompt_records(tiif_items(read_suite(synth_dir, split)))
    frame = pl.DataFrame({"prompt": [r["prompt"] for r in records], "metadata": [json.dumps(r) for r in records]},
                         schema={"prompt": pl.String, "metadata": pl.String})
    return Table(frame, {})
