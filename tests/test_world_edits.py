"""Edits (corrupt / apply), layout texts and understanding questions."""

import re
from collections import Counter

import numpy as np
import pytest

from r3.world import codec
from r3.world.edits import (ERROR_KINDS, STOP_ANSWER, apply_edit, corrupt, describe, reflection_parses, resolve,
                             violate)
from r3.world.layout import drawable, layout_satisfies, layout_text, parse_layout
from r3.world.prompts import SUITES, exact_count_excludes, sample_example
from r3.world.questions import ITA_NO, ITA_YES, VQA_CATEGORIES, ita_question, sample_vqa
from r3.world.scene import COLORS, PLURALS, SIZES, Scene, SceneObject, cell_center
from r3.world.verifier import check, relation_along, relation_holds
from r3.world.vocabulary import vocabulary

ALL_TAGS = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]
VOCABULARY = set(vocabulary())


def obj(shape, color, col, row, size="small"):
    return SceneObject(shape, color, size, *cell_center(col, row, 32))


def examples(seed, per_tag):
    rng = np.random.default_rng(seed)
    return [sample_example(s, t, rng) for s, t in ALL_TAGS for _ in range(per_tag)]


def exact_record(prompt, *include):
    return {"tag": "t", "include": list(include), "exclude": exact_count_excludes(list(include)), "prompt": prompt}


def canonical(scene):
    return sorted(scene.objects, key=lambda o: (o.x, o.y, o.shape))


# ---------------------------------------------------------------- edits


def test_corrupt_breaks_the_prompt_and_its_instruction_fixes_it():
    rng = np.random.default_rng(1)
    produced = Counter()
    for record, scene in examples(seed=0, per_tag=25):
        for kind in ERROR_KINDS:
            result = corrupt(scene, record, kind, rng)
            if result is None:
                continue
            produced[kind] += 1
            wrong, instruction = result
            assert check(wrong.objects, record).strict == 0, (kind, instruction)
            fixed = apply_edit(wrong, instruction)
            assert check(fixed.objects, record).strict == 1, (kind, instruction)
            assert canonical(fixed) == canonical(scene)  # the fix restores the scene exactly
            assert set(instruction.split()) <= VOCABULARY
            changed = len(set(wrong.objects) ^ set(scene.objects))
            assert changed == (1 if kind in ("missing", "extra") else 2)  # exactly one object differs
    assert produced["missing"] == 25 * len(ALL_TAGS)
    assert all(produced[kind] > 0 for kind in ERROR_KINDS)


def test_instructions_name_one_object_concretely():
    record = exact_record(
        "two red circles and a blue square",
        {"class": "circle", "count": 2, "color": "red"},
        {"class": "square", "count": 1, "color": "blue"},
    )
    objects = (obj("circle", "red", 1, 1), obj("circle", "red", 4, 1), obj("square", "blue", 2, 5))
    scene = Scene(objects=objects, canvas=32)
    rng = np.random.default_rng(0)
    forms = {
        "missing": r"add a small (red circle|blue square) at \d \d",
        "extra": r"remove the ((small|large) )?(red circle|blue square)( at \d \d)?",
        "recolor": r"make the (\w+ )?(circle|square) (red|blue)",
    }
    for kind, form in forms.items():
        for _ in range(10):
            wrong, instruction = corrupt(scene, record, kind, rng)
            assert re.fullmatch(form, instruction), instruction
    assert corrupt(scene, record, "move", rng) is None  # no position asserted
    assert corrupt(scene, record, "resize", rng) is None  # no size asserted
    with pytest.raises(ValueError, match="error kind 'rotate'"):
        corrupt(scene, record, "rotate", rng)


def test_move_and_resize_on_a_relation_prompt():
    record = exact_record(
        "a large circle to the left of a small square",
        {"class": "square", "count": 1, "size": "small"},
        {"class": "circle", "count": 1, "size": "large", "position": ["left of", 0]},
    )
    scene = Scene(objects=(obj("circle", "red", 1, 3, "large"), obj("square", "blue", 5, 3)), canvas=32)
    rng = np.random.default_rng(3)
    wrong, instruction = corrupt(scene, record, "move", rng)
    assert instruction in ("move the circle to 1 3", "move the square to 5 3")
    circle, square = sorted(wrong.objects, key=lambda o: o.shape)
    assert relation_along(circle.x - square.x, circle.y - square.y, "left of") <= -4  # a cell or more on the wrong side
    wrong, instruction = corrupt(scene, record, "resize", rng)
    assert instruction in ("make the circle large", "make the square small")


def test_move_and_resize_on_a_region_and_relative_size_prompt():
    record = exact_record(
        "A photo of a larger circle on the left and a smaller square on the right",
        {"class": "circle", "count": 1, "size": "larger", "region": "left"},
        {"class": "square", "count": 1, "size": "smaller", "region": "right"},
    )
    scene = Scene(objects=(obj("circle", "red", 1, 3, "large"), obj("square", "blue", 5, 3)), canvas=32)
    rng = np.random.default_rng(3)
    for _ in range(10):
        wrong, instruction = corrupt(scene, record, "move", rng)
        assert instruction in ("move the circle to 1 3", "move the square to 5 3")
        moved = next(o for o in wrong.objects if o not in scene.objects)
        assert (moved.x > 16) == (moved.shape == "circle")  # into the other half
        wrong, instruction = corrupt(scene, record, "resize", rng)
        assert instruction in ("make the circle large", "make the square small")
        wrong, instruction = corrupt(scene, record, "extra", rng)
        extra = next(o for o in wrong.objects if o not in scene.objects)  # drawn where only the count is wrong
        assert (extra.size, extra.x < 16) in (("large", True), ("small", False))


def test_apply_edit_rejects_vague_or_malformed_instructions():
    scene = Scene(objects=(obj("circle", "red", 1, 1), obj("circle", "red", 4, 1)), canvas=32)
    with pytest.raises(ValueError, match="names 2 objects"):
        apply_edit(scene, "remove the red circle")
    assert len(apply_edit(scene, "remove the red circle at 4 1").objects) == 1
    with pytest.raises(ValueError, match="names 0 objects"):
        apply_edit(scene, "make the blue circle red")
    with pytest.raises(ValueError, match="cannot parse"):
        apply_edit(scene, "paint everything")
    with pytest.raises(ValueError, match="cell"):
        apply_edit(scene, "add a small red circle at 9 9")
    moved = apply_edit(scene, "move the red circle at 1 1 to 1 6")
    assert moved.objects[0] == obj("circle", "red", 1, 6)


def test_describe_uses_the_shortest_unique_name():
    scene = Scene(
        objects=(obj("circle", "red", 1, 1), obj("circle", "red", 4, 1, "large"), obj("circle", "blue", 1, 5),
                 obj("square", "red", 5, 5), obj("triangle", "green", 3, 3), obj("triangle", "green", 6, 1)),
        canvas=32,
    )  # fmt: skip
    names = [describe(o, scene) for o in scene.objects]
    assert names == ["small red circle", "large red circle", "blue circle", "square",
                     "small green triangle at 3 3", "small green triangle at 6 1"]  # fmt: skip
    assert all(resolve(name, scene) == i for i, name in enumerate(names))


def test_violate_is_deterministic_and_breaks_the_prompt():
    for record, scene in examples(seed=5, per_tag=3):
        first = violate(scene, record, np.random.default_rng(42))
        assert first == violate(scene, record, np.random.default_rng(42))
        assert check(first.objects, record).strict == 0


def test_stop_answer_is_in_the_vocabulary():
    assert set(STOP_ANSWER.split()) <= VOCABULARY


def test_reflection_parses_every_instruction_form_and_the_stop_answer():
    rng = np.random.default_rng(4)
    made = [result[1] for record, scene in examples(seed=4, per_tag=5) for kind in ERROR_KINDS
            if (result := corrupt(scene, record, kind, rng)) is not None]
    assert {text.split()[0] for text in made} == {"add", "remove", "make", "move"}
    assert all(reflection_parses(text) for text in made)
    named = ["remove the circle", "remove the small green triangle at 3 3", "make the blue square red",
             "make the red circle large", "move the large red circle at 1 1 to 2 7", "add a small red circle at 0 7"]
    assert all(reflection_parses(text) for text in named)
    assert reflection_parses(STOP_ANSWER) and reflection_parses(f" {STOP_ANSWER}\n")


@pytest.mark.parametrize("text", [
    "", "no further edit", "no further edit needed now", "add a red circle at 2 5", "add a small red circle at 2",
    "add a small red circle at 2 5 6", "remove the red", "remove the circle circle", "the remove circle",
    "make the circle round", "make the red red circle blue", "make the circle", "move the circle to 2",
    "remove the circle at 10 3", "move the circle to 10 3", "move the circle to 3 8", "add a small red circle at -1 2",
    "add a red small circle at 2 5", "remove the red small square", "move the red large circle to 1 2",
])  # fmt: skip
def test_reflection_parses_rejects_corrupted_instructions(text):
    assert not reflection_parses(text)


def test_names_take_either_attribute_order_but_reflections_only_describes():
    scene = Scene(objects=(obj("square", "red", 1, 1),), canvas=32)
    assert resolve("red small square", scene) == resolve("small red square", scene) == 0
    assert reflection_parses("remove the small red square") and not reflection_parses("remove the red small square")


# ---------------------------------------------------------------- layout


def test_layout_round_trips_for_every_tag():
    for record, scene in examples(seed=2, per_tag=40):
        text = layout_text(scene)
        assert set(text.split()) <= VOCABULARY
        assert parse_layout(text, 32) == scene
        assert layout_satisfies(text, record, 32)
    rng = np.random.default_rng(3)
    for tag in SUITES["geneval_pp"]:  # at 64 too
        record, scene = sample_example("geneval_pp", tag, rng, canvas=64)
        assert parse_layout(layout_text(scene), 64) == scene
        assert layout_satisfies(layout_text(scene), record, 64)


def test_layout_text_and_parse_errors():
    scene = Scene(objects=(obj("circle", "red", 1, 3, "large"), obj("square", "blue", 5, 3)), canvas=32)
    assert layout_text(scene) == "large red circle at 1 3 ; small blue square at 5 3"
    for bad in ("", "large red circle at 9 1", "huge red circle at 1 1", "large red circle 1 1",
                "large red circle at 1 1 ;", "large red circle at one 1"):  # fmt: skip
        assert parse_layout(bad, 32) is None, bad
    record = exact_record(
        "a circle to the left of a square",
        {"class": "square", "count": 1},
        {"class": "circle", "count": 1, "position": ["left of", 0]},
    )
    assert layout_satisfies("large red circle at 1 3 ; small blue square at 5 3", record, 32)
    assert not layout_satisfies("large red circle at 5 3 ; small blue square at 1 3", record, 32)
    assert not layout_satisfies("large red circle at 1 3", record, 32)
    assert not layout_satisfies("a red circle", record, 32)


def test_layouts_that_break_the_spacing_rule_do_not_satisfy_and_lose_objects_when_drawn():
    two_circles = exact_record("two circles", {"class": "circle", "count": 2})
    apart = "small cyan circle at 2 3 ; small blue circle at 5 3"
    touching = "small cyan circle at 4 3 ; small blue circle at 5 2"  # diagonal neighbours: boxes overlap
    for text in (apart, touching):
        assert check(parse_layout(text, 32).objects, two_circles).strict == 1  # both count two circles
    assert layout_satisfies(apart, two_circles, 32) and drawable(parse_layout(apart, 32))
    assert not layout_satisfies(touching, two_circles, 32) and not drawable(parse_layout(touching, 32))
    assert not drawable(parse_layout("large red circle at 0 3", 32))  # half of it off the canvas
    drawn = codec.latent_scene(codec.objects_latent(parse_layout(touching, 32).objects, 32), 32)
    assert len(drawn.objects) == 1


# ---------------------------------------------------------------- questions


def unique_object(scene, words):
    """The one object whose attributes include all `words` (shape last)."""
    *attributes, shape = words
    found = [o for o in scene.objects if o.shape == shape and all(a in (o.color, o.size) for a in attributes)]
    assert len(found) == 1, (words, scene)
    return found[0]


def expected_answer(scene, question):
    words = question.split()
    assert words[-1] == "?"
    if words[:2] == ["how", "many"]:
        noun = words[2:-3]
        shape = {v: k for k, v in PLURALS.items()}[noun[-1]]
        color = noun[0] if len(noun) == 2 else None
        n = sum(o.shape == shape and color in (None, o.color) for o in scene.objects)
        return ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][n]
    if words[:3] == ["what", "color", "is"]:
        return unique_object(scene, words[4:-1]).color
    if words[:3] == ["what", "size", "is"]:
        return unique_object(scene, words[4:-1]).size
    assert words[:2] == ["is", "the"]
    text = " ".join(words[2:-1])
    relation = next(r for r in ("left of", "right of", "above", "below") if f" {r} the " in text)
    name_a, name_b = text.split(f" {relation} the ")
    a, b = unique_object(scene, name_a.split()), unique_object(scene, name_b.split())
    if relation_holds(a, b, relation, 1.0):
        return ITA_YES
    assert relation_along(a.x - b.x, a.y - b.y, relation) <= 0  # "no" only when plainly not
    return ITA_NO


def test_vqa_answers_are_exact():
    rng = np.random.default_rng(8)
    seen = Counter()
    for _, scene in examples(seed=4, per_tag=30):
        for _ in range(3):
            category, question, answer = sample_vqa(scene, rng)
            seen[(category, answer if category == "position" else "")] += 1
            assert category in VQA_CATEGORIES
            assert answer == expected_answer(scene, question), question
            assert len(answer.split()) == 1 and set(question.split()) | {answer} <= VOCABULARY
            if category == "color":
                assert answer in COLORS and answer not in question.split()
            if category == "size":
                assert answer in SIZES and answer not in question.split()
    assert {c for c, _ in seen} == set(VQA_CATEGORIES)
    assert seen[("position", ITA_YES)] > 0 and seen[("position", ITA_NO)] > 0
    assert seen[("count", "")] > 0


def test_vqa_is_deterministic():
    scenes = [s for _, s in examples(seed=6, per_tag=2)]
    draw = lambda seed: [sample_vqa(s, np.random.default_rng(seed)) for s in scenes]  # noqa: E731
    assert draw(1) == draw(1)


def test_ita_question():
    prompt = "a red circle to the left of a blue square"
    assert ita_question(prompt) == f"does the image show {prompt} ?"
    assert set(ita_question(prompt).split()) | {ITA_YES, ITA_NO} <= VOCABULARY
