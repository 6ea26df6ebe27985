"""TIIF questions about ShapeWorld answered exactly, on scenes written out here with explicit coordinates; TIIF
types ShapeWorld cannot draw refused; which files need a judge; the hand-written example file scored on its scenes
and on their renders."""

import json
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from r3.errors import InputError
from r3.evals.report import wilson_interval
from r3.evals.tiif import tiif_scorer, type_scores
from r3.rewards.base import RewardConfig
from r3.world.render import render
from r3.world.scene import Scene, SceneObject
from r3.world.tiif_exact import (
    Absence,
    Attribute,
    Comparison,
    Count,
    Noun,
    OutsideGrammarError,
    Presence,
    Region,
    Relation,
    answer,
    check_type,
    exact_scores,
    parse_question,
    score_questions,
    type_refusal,
)
from r3.world.tiif_io import prompt_records, read_tiif_file, tiif_items
from r3.world.verifier import UnsupportedClassError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tiif_shapeworld.jsonl"
JUDGE = RewardConfig(name="judge", params={"url": "http://127.0.0.1:8000/v1", "model": "judge-vlm"})


def o(shape: str, color: str, x: float, y: float, size: str = "small") -> SceneObject:
    return SceneObject(shape=shape, color=color, size=size, x=x, y=y)


def scene(*objects: SceneObject) -> Scene:
    return Scene(objects=objects, canvas=32)


# ---------------------------------------------------------------- parsing


@pytest.mark.parametrize("question,parsed", [
    ("Is there a red circle in the image?", Presence(Noun("circle", "red"))),
    ("is there an object?", Presence(Noun(None))),
    ("Is there no large triangle in the image?", Absence(Noun("triangle", size="large"))),
    ("Are there no red crosses in the image?", Absence(Noun("cross", "red"))),
    ("Are there three squares in the image?", Count(Noun("square"), 3)),
    ("Are there exactly 12 objects in the image?", Count(Noun(None), 12)),
    ("Is there exactly one small blue cross in the image?", Count(Noun("cross", "blue", "small"), 1)),
    ("Is the circle red?", Attribute(Noun("circle"), "color", "red")),
    ("Is the red circle large?", Attribute(Noun("circle", "red"), "size", "large")),
    ("Is the red object a triangle?", Attribute(Noun(None, "red"), "shape", "triangle")),
    ("Is the square in the top part of the image?", Region(Noun("square"), "above")),
    ("Is the square on the left side of the image?", Region(Noun("square"), "left")),
    ("Is the circle above the square?", Relation(Noun("circle"), "above", Noun("square"))),
    ("Is the circle to the left of the blue square?", Relation(Noun("circle"), "left of", Noun("square", "blue"))),
    ("Is the circle on the right of the square ?", Relation(Noun("circle"), "right of", Noun("square"))),
    ("IS THE CIRCLE  BELOW THE SQUARE", Relation(Noun("circle"), "below", Noun("square"))),
    ("Is the large circle smaller than the small cross?", Comparison(Noun("circle", size="large"), "smaller",
                                                                      Noun("cross", size="small"))),
])  # fmt: skip
def test_questions_parse_into_facts(question, parsed):
    assert parse_question(question) == parsed


@pytest.mark.parametrize("question", [
    "Is the lamp on the right of the sofa?",   # classes outside ShapeWorld
    "Is there a sofa in the image?",
    "Is the circle pink?",                     # a colour outside the palette
    "Is the circle made of wood?",             # an attribute ShapeWorld has not
    "Is the circle next to the square?",       # a relation it has not
    "Are the circles red?",                    # a plural referent: not in the grammar
    "Are there 1 circles in the image?",       # counts in the plural start at two
    "What colour is the circle?",              # not a yes/no question
])  # fmt: skip
def test_a_question_outside_the_grammar_is_refused_naming_it(question):
    with pytest.raises(OutsideGrammarError, match=f"^question {re.escape(repr(question))} is outside the ShapeWorld "
                                                  "question grammar") as error:
        parse_question(question)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, UnsupportedClassError)  # the verifier's "use the judge" error


# ---------------------------------------------------------------- answering: both answers of every kind

RED_CIRCLE, BLUE_SQUARE = o("circle", "red", 6, 14), o("square", "blue", 22, 14)
CASES = [
    # presence: at least one
    ("Is there a red circle in the image?", scene(RED_CIRCLE), "yes"),
    ("Is there a red circle in the image?", scene(o("circle", "blue", 6, 14), o("square", "red", 22, 14)), "no"),
    ("Is there a large object in the image?", scene(o("cross", "cyan", 10, 10, "large")), "yes"),
    ("Is there a large object in the image?", scene(RED_CIRCLE, BLUE_SQUARE), "no"),
    # absence
    ("Is there no triangle in the image?", scene(RED_CIRCLE), "yes"),
    ("Is there no triangle in the image?", scene(RED_CIRCLE, o("triangle", "green", 22, 22)), "no"),
    ("Are there no blue squares in the image?", scene(o("square", "red", 6, 6)), "yes"),
    ("Are there no blue squares in the image?", scene(BLUE_SQUARE, o("square", "blue", 22, 26)), "no"),
    # count: exactly
    ("Are there three squares in the image?", scene(*(o("square", "red", x, 6) for x in (6, 14, 22))), "yes"),
    ("Are there three squares in the image?", scene(*(o("square", "red", x, 6) for x in (2, 10, 18, 26))), "no"),
    ("Are there three squares in the image?", scene(*(o("square", "red", x, 6) for x in (6, 22))), "no"),
    ("Is there exactly one cross in the image?", scene(o("cross", "red", 6, 6), RED_CIRCLE), "yes"),
    ("Is there exactly one cross in the image?", scene(), "no"),
    ("Are there two red objects in the image?", scene(RED_CIRCLE, o("square", "red", 22, 6), BLUE_SQUARE), "yes"),
    ("Are there two red objects in the image?", scene(RED_CIRCLE, BLUE_SQUARE), "no"),
    # attributes: every object the noun names has it (and there is one)
    ("Is the circle red?", scene(RED_CIRCLE, BLUE_SQUARE), "yes"),
    ("Is the circle red?", scene(o("circle", "blue", 6, 14)), "no"),
    ("Is the circle red?", scene(RED_CIRCLE, o("circle", "blue", 22, 14)), "no"),
    ("Is the circle red?", scene(BLUE_SQUARE), "no"),
    ("Is the square large?", scene(o("square", "green", 10, 10, "large")), "yes"),
    ("Is the square large?", scene(o("square", "green", 10, 10)), "no"),
    ("Is the red object a circle?", scene(RED_CIRCLE, BLUE_SQUARE), "yes"),
    ("Is the red object a circle?", scene(o("square", "red", 6, 14)), "no"),
    # region: in that half, at least 1 pixel per 32 past the midline
    ("Is the circle in the left part of the image?", scene(o("circle", "red", 15, 14)), "yes"),
    ("Is the circle in the left part of the image?", scene(o("circle", "red", 16, 14)), "no"),
    ("Is the square on the bottom side of the image?", scene(o("square", "red", 6, 26)), "yes"),
    ("Is the square on the bottom side of the image?", scene(o("square", "red", 6, 6)), "no"),
    # relation: every pair, centre >= 1 pixel that way and within 60 degrees of the axis
    ("Is the circle to the left of the square?", scene(RED_CIRCLE, BLUE_SQUARE), "yes"),
    ("Is the circle to the left of the square?", scene(o("circle", "red", 22, 14), o("square", "blue", 6, 14)), "no"),
    ("Is the circle to the left of the square?", scene(o("circle", "red", 15, 14), o("square", "blue", 16, 14)), "yes"),
    ("Is the circle to the left of the square?", scene(o("circle", "red", 15.5, 14), o("square", "blue", 16, 14)),
     "no"),
    ("Is the circle to the left of the square?", scene(o("circle", "red", 6, 2), o("square", "blue", 10, 26)), "no"),
    ("Is the circle to the left of the square?", scene(RED_CIRCLE, BLUE_SQUARE, o("circle", "red", 26, 2)), "no"),
    ("Is the triangle above the cross?", scene(o("triangle", "red", 14, 6), o("cross", "red", 14, 22)), "yes"),
    ("Is the triangle above the cross?", scene(o("triangle", "red", 14, 22), o("cross", "red", 14, 6)), "no"),
    ("Is the circle below the square?", scene(RED_CIRCLE), "no"),
    # comparison: every pair, by ShapeWorld size
    ("Is the circle larger than the square?", scene(o("circle", "red", 10, 10, "large"), BLUE_SQUARE), "yes"),
    ("Is the circle larger than the square?", scene(RED_CIRCLE, BLUE_SQUARE), "no"),
    ("Is the circle smaller than the square?", scene(RED_CIRCLE, o("square", "blue", 22, 22, "large")), "yes"),
    ("Is the circle smaller than the square?", scene(o("circle", "red", 10, 10, "large"), BLUE_SQUARE), "no"),
]  # fmt: skip


@pytest.mark.parametrize("question,world,expected", CASES)
def test_each_question_is_answered_exactly(question, world, expected):
    assert answer(parse_question(question), world) == expected


def kind(question: str) -> str:
    parsed = parse_question(question)
    return parsed.attribute if isinstance(parsed, Attribute) else type(parsed).__name__


def test_the_cases_give_both_answers_of_every_kind():
    answers = defaultdict(set)
    for question, _, expected in CASES:
        answers[kind(question)].add(expected)
    kinds = {"Presence", "Absence", "Count", "color", "size", "shape", "Region", "Relation", "Comparison"}
    assert answers == {k: {"yes", "no"} for k in kinds}


def test_a_record_scores_the_share_of_questions_answered_as_expected():
    questions = ["Is there a red circle in the image?", "Is the circle blue?", "Is there no square in the image?"]
    assert score_questions(questions, ["yes", "no", "yes"], scene(RED_CIRCLE)) == 1.0
    assert score_questions(questions, ["yes", "no", "yes"], scene(RED_CIRCLE, BLUE_SQUARE)) == pytest.approx(2 / 3)
    assert score_questions(questions, ["yes", "no", "yes"], scene()) == pytest.approx(2 / 3)  # no circle: "no"
    with pytest.raises(OutsideGrammarError, match="'Is the lamp red\\?'"):
        score_questions([*questions, "Is the lamp red?"], ["yes", "no", "yes", "no"], scene(RED_CIRCLE))


# ---------------------------------------------------------------- the example file, and files that need a judge

EXAMPLE_SCENES = {
    "A red circle.": scene(o("circle", "red", 14, 14)),
    "A blue square and a yellow triangle.": scene(o("square", "blue", 6, 18), o("triangle", "yellow", 22, 18)),
    "A green cross.": scene(o("cross", "green", 18, 18)),
    "A large purple circle.": scene(o("circle", "purple", 14, 14, "large")),
    "Three red squares.": scene(o("square", "red", 6, 6), o("square", "red", 18, 6), o("square", "red", 26, 22)),
    "One cyan triangle and two crosses.": scene(o("triangle", "cyan", 10, 10), o("cross", "red", 22, 10),
                                                o("cross", "blue", 22, 26)),
    "A red circle to the left of a blue square.": scene(o("circle", "red", 6, 14), o("square", "blue", 22, 14)),
    "A yellow triangle above a green cross.": scene(o("triangle", "yellow", 14, 6), o("cross", "green", 14, 22)),
    "A cyan square below a red circle, on the right.": scene(o("circle", "red", 26, 6), o("square", "cyan", 26, 22)),
    "A purple square in the bottom left corner.": scene(o("square", "purple", 6, 26)),
    "A large green circle and a small red triangle.": scene(o("circle", "green", 10, 10, "large"),
                                                            o("triangle", "red", 26, 26)),
    "A red circle and a blue circle of the same size.": scene(o("circle", "red", 6, 14), o("circle", "blue", 22, 14)),
    "A blue circle and no squares.": scene(o("circle", "blue", 14, 14)),
    "Two crosses, neither of them red.": scene(o("cross", "blue", 6, 6), o("cross", "yellow", 22, 22)),
}  # fmt: skip
"""A scene each record's descriptions (short and long) describe, keyed by the short one."""


def test_the_example_file_is_scored_exactly_and_its_answers_hold_on_its_scenes():
    records = read_tiif_file(EXAMPLE)
    assert tiif_scorer(EXAMPLE, records, judge=None) == "exact"
    assert sorted(r.short_description for r in records) == sorted(EXAMPLE_SCENES)
    for record in records:
        for item in tiif_items([record]):
            world = EXAMPLE_SCENES[record.short_description]
            assert score_questions(item.questions, item.answers, world) == 1.0, item.prompt
    # every kind of question is in the file, each with both answers
    answers = defaultdict(set)
    for record in records:
        for question, expected in zip(record.questions, record.answers, strict=True):
            answers[kind(question)].add(expected)
    assert answers == {k: {"yes", "no"} for k in
                       ("Presence", "Absence", "Count", "color", "size", "shape", "Region", "Relation", "Comparison")}


def type_scores_of(items, scores, description: str) -> dict:
    mine = [i for i, item in enumerate(items) if item.description == description]
    return type_scores([scores[i] for i in mine], [items[i].type for i in mine])


def test_the_example_file_scores_its_renders_per_description_and_type():
    records = read_tiif_file(EXAMPLE)
    items = tiif_items(records)
    renders = {prompt: render(world) for prompt, world in EXAMPLE_SCENES.items()}
    images = np.stack([renders[r.short_description] for r in records for _ in ("short", "long")])
    scores = exact_scores(images, prompt_records(items))
    assert scores.tolist() == [1.0] * len(items)
    types = sorted({r.type for r in records})
    counts = {t: sum(r.type == t for r in records) for t in types}
    low_of_all = wilson_interval(1.0, len(records))[0]  # every item right: the interval is [low, 1]
    assert type_scores_of(items, scores, "short") == {
        "overall": {"score": 1.0, "low": low_of_all, "high": 1.0, "n": len(records)},
        "per_type": {t: {"score": 1.0, "low": wilson_interval(1.0, n)[0], "high": 1.0, "n": n}
                     for t, n in counts.items()}}  # fmt: skip

    # a blank image for the long description of "A blue circle and no squares.": only the two absences hold
    blank = images.copy()
    at = next(i for i, item in enumerate(items) if item.prompt.startswith("A small blue circle is the only object"))
    blank[at] = 0
    scores = exact_scores(blank, prompt_records(items))
    assert scores[at] == pytest.approx(2 / 3) and np.delete(scores, at).tolist() == [1.0] * (len(items) - 1)
    assert type_scores_of(items, scores, "short")["per_type"]["negation"]["score"] == 1.0
    negation = type_scores_of(items, scores, "long")["per_type"]["negation"]
    assert negation["score"] == pytest.approx((2 / 3 + 1) / 2) and negation["n"] == counts["negation"] == 2
    assert (negation["low"], negation["high"]) == pytest.approx(wilson_interval(negation["score"], 2))


COCO = {"type": "2d_spatial_relation", "short_description": "A lamp stands to the right of a sofa.",
        "long_description": "In a quiet living room a tall lamp stands to the right of an old sofa.",
        "yn_question_list": ["Is there a lamp in the image?", "Is there a sofa in the image?",
                             "Is the lamp on the right of the sofa?"],
        "yn_answer_list": ["yes", "yes", "yes"]}  # fmt: skip


def test_a_coco_record_reads_but_needs_the_judge(tmp_path):
    path = tmp_path / "tiif.jsonl"
    path.write_text(EXAMPLE.read_text() + "\n" + json.dumps(COCO) + "\n")
    records = read_tiif_file(path)
    line = len(records) + 1  # after the example's lines and one blank line
    with pytest.raises(InputError, match=(
            f"^{re.escape(str(path))}:{line}: question 'Is there a lamp in the image\\?' is outside the ShapeWorld "
            "question grammar \\(3 of \\d+ questions of the file are\\), so the file needs the judge reward, but "
            "evaluate.judge is not set; set evaluate.judge to \\{name: judge, params: \\{url: ..., model: ...\\}\\}$"
    )) as error:
        tiif_scorer(path, records, judge=None)
    assert "\n" not in str(error.value)
    assert tiif_scorer(path, records, judge=JUDGE) == "judge"
    strict = RewardConfig(name="judge", params={**JUDGE.params, "mode": "strict"})
    for wrong, named in ((strict, "'judge' in mode 'strict'"), (RewardConfig(name="verifier"), "'verifier' in mode")):
        with pytest.raises(InputError, match=f"needs the judge reward in partial mode .*, but evaluate.judge is "
                                             f"{named}.*; set evaluate.judge to"):
            tiif_scorer(path, records, judge=wrong)
    assert tiif_scorer(path, records[:-1], judge=JUDGE) == "exact"  # a judge is used only where needed


# ---------------------------------------------------------------- TIIF types ShapeWorld cannot draw


@pytest.mark.parametrize("type_name,asks", [
    ("3d_spatial_relation", "3D spatial relations"),
    ("color+3d", "3D spatial relations"),
    ("action+texture", "actions and textures"),
    ("text", "rendered text"),
    ("style", "styles"),
    ("real_world", "real-world scenes"),
])  # fmt: skip
def test_a_type_shapeworld_cannot_draw_is_refused_in_one_line_naming_it(type_name, asks):
    with pytest.raises(OutsideGrammarError, match=(
            f"^TIIF type {re.escape(repr(type_name))} asks for {asks}, which ShapeWorld cannot draw; only a judge "
            "can score it$")) as error:
        check_type(type_name)
    assert "\n" not in str(error.value) and isinstance(error.value, UnsupportedClassError)
    record = {"tag": type_name, "questions": ["Is there a red circle in the image?"], "answers": ["yes"]}
    with pytest.raises(OutsideGrammarError, match=re.escape(repr(type_name))):  # in the grammar, still refused
        exact_scores(render(scene(RED_CIRCLE))[None], [record])


@pytest.mark.parametrize("type_name", ["shape+color", "2d_spatial_relation", "numeracy", "numeracy+2d", "comparison",
                                       "negation+color", "differentiation", "counting", "region"])
def test_the_types_shapeworld_draws_and_names_of_other_files_are_exact(type_name):
    assert type_refusal(type_name) is None
    check_type(type_name)


def test_a_file_with_a_type_shapeworld_cannot_draw_needs_the_judge(tmp_path):
    path = tmp_path / "tiif.jsonl"
    three_d = {"type": "3d_spatial_relation", "short_description": "A red circle in front of a blue square.",
               "long_description": "A red circle stands in front of a blue square, hiding part of it.",
               "yn_question_list": ["Is there a red circle in the image?"], "yn_answer_list": ["yes"]}
    path.write_text(EXAMPLE.read_text() + json.dumps(three_d) + "\n")
    records = read_tiif_file(path)
    with pytest.raises(InputError, match=(
            f"^{re.escape(str(path))}:{len(records)}: TIIF type '3d_spatial_relation' asks for 3D spatial relations, "
            f"which ShapeWorld cannot draw \\(1 of {len(records)} records of the file are of such types\\), so the "
            "file needs the judge reward, but evaluate.judge is not set; set evaluate.judge to")) as error:
        tiif_scorer(path, records, judge=None)
    assert "\n" not in str(error.value)
    assert tiif_scorer(path, records, judge=JUDGE) == "judge"
