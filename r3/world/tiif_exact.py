"""TIIF yes/no questions about ShapeWorld, answered exactly from a scene.

A closed grammar of the questions ShapeWorld can express (case and runs of spaces ignored, the final "?" optional):

    presence    "Is there a/an NOUN in the image?"                   at least one NOUN
    absence     "Is there no NOUN in the image?"                     no NOUN
                "Are there no NOUNS in the image?"
    count       "Is there exactly one NOUN in the image?"            exactly that many NOUNs
                "Are there [exactly] N NOUNS in the image?"          (N: two .. ten or a number >= 2)
    attribute   "Is the NOUN COLOR?" / "Is the NOUN SIZE?"           there is a NOUN and every NOUN is of that
                "Is the NOUN a/an SHAPE?"                            colour / size / shape
    region      "Is the NOUN in/on the left/right/top/bottom         there is a NOUN and every NOUN lies in that half
                part/side of the image?"                             of the canvas (verifier.in_region)
    relation    "Is the NOUN RELATION the NOUN?"                     both exist and every pair of distinct objects
                RELATION: [to the / on the] left of, [to the / on    stands in the relation (verifier.relation_holds,
                the] right of, above, below                          margin verifier.relation_margin)
    comparison  "Is the NOUN larger/smaller than the NOUN?"          both exist and every pair of distinct objects
                                                                     is of a larger / smaller size (verifier.larger)

NOUN is [small|large] [COLOR] SHAPE, SHAPE one of r3.world.scene.SHAPES or "object" (any shape); NOUNS its plural.
"in the image" may be left out of presence, absence and count questions.
"The NOUN" names every object matching it, as GenEval's facts do (r3.world.verifier.entry_facts). A question
outside the grammar raises OutsideGrammarError naming it: only a judge can answer it. So does a record of a TIIF-Bench
type that asks for what ShapeWorld cannot draw (JUDGE_ONLY_PARTS: 3D relations, actions, textures, rendered text,
styles, real-world scenes), whatever its questions.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from r3.world.prompts import COUNT_WORDS
from r3.world.scene import COLORS, PLURALS, SHAPES, SIZES, Scene, SceneObject
from r3.world.tiif_io import ANSWERS
from r3.world.verifier import (
    UnsupportedClassError,
    detect_batch,
    in_region,
    relation_holds,
    relation_margin,
    size_holds,
)

YES, NO = ANSWERS

ANY_SHAPE = "object"
"""The noun that matches an object of any shape ("Is the red object a circle?")."""


class OutsideGrammarError(UnsupportedClassError):
    """A question the ShapeWorld grammar cannot express, or a TIIF type ShapeWorld cannot draw (a judge has to score
    it); the message names it."""


JUDGE_ONLY_PARTS = {
    "3d": "3D spatial relations", "3d_spatial_relation": "3D spatial relations", "action": "actions",
    "texture": "textures", "text": "rendered text", "style": "styles", "real_world": "real-world scenes",
}  # fmt: skip
"""The parts of TIIF-Bench's type names (a type is one part or several joined by "+": "action+3d", "shape+color")
that ShapeWorld cannot draw, and what they ask for. The others (shape, color, 2d, 2d_spatial_relation, numeracy,
comparison, negation, differentiation) and types of other files ("counting", "region") are ShapeWorld's."""


def type_refusal(type_name: str) -> str | None:
    """Why ShapeWorld cannot express a TIIF type ("TIIF type '3d_spatial_relation' asks for 3D spatial relations,
    which ShapeWorld cannot draw"); None when it can."""
    asked = [JUDGE_ONLY_PARTS[part] for part in type_name.strip().lower().split("+") if part in JUDGE_ONLY_PARTS]
    if not asked:
        return None
    return f"TIIF type {type_name!r} asks for {' and '.join(dict.fromkeys(asked))}, which ShapeWorld cannot draw"


def check_type(type_name: str) -> None:
    """OutsideGrammarError, one line naming the type, when ShapeWorld cannot express it."""
    if refusal := type_refusal(type_name):
        raise OutsideGrammarError(f"{refusal}; only a judge can score it")


@dataclass(frozen=True)
class Noun:
    """The objects a question names: of `shape` (None: any), and of `color` and `size` where given."""

    shape: str | None
    color: str | None = None
    size: str | None = None


@dataclass(frozen=True)
class Presence:
    noun: Noun


@dataclass(frozen=True)
class Absence:
    noun: Noun


@dataclass(frozen=True)
class Count:
    noun: Noun
    count: int


@dataclass(frozen=True)
class Attribute:
    noun: Noun
    attribute: str
    """"color", "size" or "shape": the SceneObject field asked about."""
    value: str


@dataclass(frozen=True)
class Region:
    noun: Noun
    region: str
    """One of r3.world.scene.REGIONS."""


@dataclass(frozen=True)
class Relation:
    subject: Noun
    relation: str
    """One of r3.world.scene.RELATIONS."""
    reference: Noun


@dataclass(frozen=True)
class Comparison:
    subject: Noun
    size: str
    """"larger" or "smaller" (r3.world.scene.RELATIVE_SIZES)."""
    reference: Noun


Question = Presence | Absence | Count | Attribute | Region | Relation | Comparison
"""A parsed question: one fact about the scene, true or false."""


# ---------------------------------------------------------------- parsing


def _alternatives(words: Sequence[str]) -> str:
    return "|".join(re.escape(w) for w in words)


_COLOR, _SIZE, _SHAPE = _alternatives(tuple(COLORS)), _alternatives(SIZES), _alternatives((*SHAPES, ANY_SHAPE))
_SINGULARS = {**{plural: shape for shape, plural in PLURALS.items()}, ANY_SHAPE + "s": ANY_SHAPE}
_PLURAL = _alternatives(tuple(_SINGULARS))
_NUMBER = _alternatives(COUNT_WORDS[2:]) + r"|\d+"
_RELATION_PHRASES = {
    **{f"{lead}{side} of": f"{side} of" for side in ("left", "right") for lead in ("", "to the ", "on the ")},
    "above": "above", "below": "below",
}  # fmt: skip
_RELATION = _alternatives(tuple(_RELATION_PHRASES))
_PARTS = {"left": "left", "right": "right", "top": "above", "bottom": "below"}
"""Image parts a region question names -> r3.world.scene.REGIONS."""


def _noun(name: str, plural: bool = False) -> str:
    """Regex of a NOUN (NOUNS) with groups {name}_size, {name}_color, {name}_shape."""
    shape = _PLURAL if plural else _SHAPE
    return rf"(?:(?P<{name}_size>{_SIZE}) )?(?:(?P<{name}_color>{_COLOR}) )?(?P<{name}_shape>{shape})"


_IN_IMAGE = "(?: in the image)?"
_PART = rf"(?:in|on) the (?P<part>{_alternatives(tuple(_PARTS))}) (?:part|side) of the image"
_GRAMMAR: tuple[tuple[str, re.Pattern[str]], ...] = tuple((kind, re.compile(pattern)) for kind, pattern in (
    ("presence", rf"is there an? {_noun('a')}{_IN_IMAGE}"),
    ("absence", rf"is there no {_noun('a')}{_IN_IMAGE}"),
    ("absence", rf"are there no {_noun('a', plural=True)}{_IN_IMAGE}"),
    ("count", rf"is there exactly (?P<count>one) {_noun('a')}{_IN_IMAGE}"),
    ("count", rf"are there (?:exactly )?(?P<count>{_NUMBER}) {_noun('a', plural=True)}{_IN_IMAGE}"),
    ("color", rf"is the {_noun('a')} (?P<value>{_COLOR})"),
    ("size", rf"is the {_noun('a')} (?P<value>{_SIZE})"),
    ("shape", rf"is the {_noun('a')} an? (?P<value>{_alternatives(SHAPES)})"),
    ("region", rf"is the {_noun('a')} {_PART}"),
    ("relation", rf"is the {_noun('a')} (?P<relation>{_RELATION}) the {_noun('b')}"),
    ("comparison", rf"is the {_noun('a')} (?P<size>larger|smaller) than the {_noun('b')}"),
))  # fmt: skip


def _parsed_noun(match: re.Match[str], name: str) -> Noun:
    shape = _SINGULARS.get(match[f"{name}_shape"], match[f"{name}_shape"])
    return Noun(shape=None if shape == ANY_SHAPE else shape, color=match[f"{name}_color"], size=match[f"{name}_size"])


def _count(word: str) -> int | None:
    """The number a count question names; None for a digit string below 2 (the grammar's numbers start at two)."""
    n = COUNT_WORDS.index(word) if word in COUNT_WORDS else int(word)
    return n if word == "one" or n >= 2 else None


def _question(kind: str, match: re.Match[str]) -> Question | None:
    a = _parsed_noun(match, "a")
    if kind == "presence":
        return Presence(a)
    if kind == "absence":
        return Absence(a)
    if kind == "count":
        n = _count(match["count"])
        return None if n is None else Count(a, n)
    if kind in ("color", "size", "shape"):
        return Attribute(a, kind, match["value"])
    if kind == "region":
        return Region(a, _PARTS[match["part"]])
    if kind == "relation":
        return Relation(a, _RELATION_PHRASES[match["relation"]], _parsed_noun(match, "b"))
    return Comparison(a, match["size"], _parsed_noun(match, "b"))


def parse_question(text: str) -> Question:
    """The fact a yes/no question asks; OutsideGrammarError (one line naming it) when ShapeWorld cannot express it."""
    words = " ".join(text.strip().lower().removesuffix("?").split())
    for kind, pattern in _GRAMMAR:
        if (match := pattern.fullmatch(words)) and (question := _question(kind, match)) is not None:
            return question
    raise OutsideGrammarError(f"question {text!r} is outside the ShapeWorld question grammar (r3.world.tiif_exact); "
                              "only a judge can answer it")


def in_grammar(text: str) -> bool:
    """parse_question accepts the question."""
    try:
        parse_question(text)
    except OutsideGrammarError:
        return False
    return True


# ---------------------------------------------------------------- answering


def named(noun: Noun, objects: Sequence[SceneObject]) -> list[SceneObject]:
    """The objects a noun names."""
    return [o for o in objects
            if noun.shape in (None, o.shape) and noun.color in (None, o.color) and noun.size in (None, o.size)]


def _pairs(subject: Noun, reference: Noun, objects: Sequence[SceneObject]) -> list[tuple[SceneObject, SceneObject]]:
    """(subject object, reference object) pairs of distinct objects: "the object" never stands left of itself."""
    return [(a, b) for a in named(subject, objects) for b in named(reference, objects) if a is not b]


def holds(question: Question, scene: Scene) -> bool:
    """The fact the question asks holds on the scene (the semantics in the module docstring)."""
    objects = scene.objects
    match question:
        case Presence(noun):
            return bool(named(noun, objects))
        case Absence(noun):
            return not named(noun, objects)
        case Count(noun, count):
            return len(named(noun, objects)) == count
        case Attribute(noun, attribute, value):
            found = named(noun, objects)
            return bool(found) and all(getattr(o, attribute) == value for o in found)
        case Region(noun, region):
            found = named(noun, objects)
            return bool(found) and all(in_region(o.x, o.y, region, scene.canvas) for o in found)
        case Relation(subject, relation, reference):
            pairs, margin = _pairs(subject, reference, objects), relation_margin(scene.canvas)
            return bool(pairs) and all(relation_holds(a, b, relation, margin) for a, b in pairs)
        case Comparison(subject, size, reference):
            pairs = _pairs(subject, reference, objects)
            return bool(pairs) and all(size_holds(a, b, size) for a, b in pairs)
    raise TypeError(f"holds: not a parsed question: {question!r}")


def answer(question: Question, scene: Scene) -> str:
    """"yes" or "no": the exact answer to the question on the scene."""
    return YES if holds(question, scene) else NO


def score_questions(questions: Sequence[str], answers: Sequence[str], scene: Scene) -> float:
    """TIIF's score of one image: the share of the questions whose exact answer on its scene is the expected one.

    Raises OutsideGrammarError for a question outside the grammar (the file needs a judge)."""
    if not questions or len(questions) != len(answers):
        raise ValueError(f"score_questions: {len(questions)} questions for {len(answers)} answers (need >= 1 each)")
    parsed = [parse_question(q) for q in questions]
    return sum(answer(q, scene) == a for q, a in zip(parsed, answers, strict=True)) / len(parsed)


def record_score(record: Mapping[str, Any], scene: Scene) -> float:
    """score_questions of a TIIF prompt record ({"tag": its type, "questions", "answers"}: r3.world.tiif_io.
    prompt_records) on a scene; OutsideGrammarError for a type ShapeWorld cannot draw or a question outside the
    grammar."""
    check_type(record["tag"])
    return score_questions(record["questions"], record["answers"], scene)


def exact_scores(images: np.ndarray, records: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(N,) TIIF scores of N ShapeWorld images (N, H, W, 3), one prompt record each: the share of its questions
    answered as expected on the scene the verifier detects (record_score)."""
    if len(images) != len(records):
        raise ValueError(f"exact_scores: {len(images)} images but {len(records)} records")
    return np.array([record_score(r, scene) for r, scene in zip(records, detected_scenes(images), strict=True)],
                    dtype=np.float64)


def detected_scenes(images: np.ndarray) -> list[Scene]:
    """The scenes the verifier reads off a batch of images (N, H, W, 3): its detections as scene objects."""
    images = np.asarray(images)
    detections = detect_batch(images)  # raises for a batch that is not (N, H, W, 3) square ShapeWorld canvases
    canvas = images.shape[2]
    return [Scene(objects=tuple(SceneObject(d.shape, d.color, d.size, d.x, d.y) for d in found), canvas=canvas)
            for found in detections]
