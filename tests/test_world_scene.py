"""ShapeWorld scenes, prompts and rendering: grammar, valid scenes for every tag, determinism."""

import re
from itertools import combinations

import numpy as np
import pytest

from r3.world.prompts import (
    COUNT_WORDS,
    MAX_OBJECTS,
    SUITES,
    count_word,
    join_phrases,
    noun_phrase,
    sample_example,
)
from r3.world.render import render, shape_mask
from r3.world.scene import (
    BACKGROUND,
    COLORS,
    GRID,
    SHAPES,
    Scene,
    SceneObject,
    apart,
    cell_center,
    inside_canvas,
    object_extent,
)
from r3.world.verifier import check, relation_holds
from r3.world.vocabulary import vocabulary

ALL_TAGS = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]


def test_palette_colours_are_far_apart_and_far_from_background():
    rgb = {name: np.array(value, dtype=float) for name, value in {**COLORS, "background": BACKGROUND}.items()}
    for a, b in combinations(rgb, 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) >= 180, (a, b)
    assert len(COLORS) >= 6 and len(SHAPES) >= 4


def test_noun_phrases_use_count_words_and_plurals():
    assert noun_phrase(1, "circle", "red") == "a red circle"
    assert noun_phrase(3, "circle", "red") == "three red circles"
    assert noun_phrase(2, "cross") == "two crosses"
    assert noun_phrase(1, "square", "blue", "large") == "a large blue square"
    assert noun_phrase(4, "triangle", size="small") == "four small triangles"
    assert join_phrases(["a circle", "a square", "two crosses"]) == "a circle, a square and two crosses"
    assert join_phrases(["a circle", "a square", "two crosses"], oxford=True) == "a circle, a square, and two crosses"
    assert count_word(0) == "zero" and count_word(4) == "four"
    with pytest.raises(ValueError, match="count 11"):
        count_word(11)


GENEVAL_PP_COUNTED = {"counting", "color_count_attr", "spatial_count_attr"}
"""GenEval++ tags whose entries are written with a count word and the plural, one included ("one squares")."""
GENEVAL_PP_NUMBERED = {"multi_object_count_attr"}
"""GenEval++ tags whose entries are written with a count word, singular at one ("one square, two circles")."""
GENEVAL_PP_BARE = {"color_spatial_attr"}
"""GenEval++ tags whose entries have no article ("blue circle on the left")."""


def test_prompt_texts_follow_the_templates():
    rng = np.random.default_rng(3)
    for suite, tag in ALL_TAGS:
        for _ in range(30):
            record, _ = sample_example(suite, tag, rng)
            prompt = record["prompt"]
            assert not re.search(r"\d", prompt), prompt  # counts are words
            assert prompt.startswith("A photo of ") == (suite == "geneval_pp"), prompt
            pp = suite == "geneval_pp"
            counted, numbered = pp and tag in GENEVAL_PP_COUNTED, pp and tag in GENEVAL_PP_NUMBERED
            for entry in record["include"]:
                plural = {"cross": "crosses"}.get(entry["class"], entry["class"] + "s")
                noun = entry["class"] if entry["count"] == 1 and not counted else plural
                words = [w for w in (entry.get("size"), entry.get("color")) if w] + [noun]
                article = "a" if entry["count"] == 1 and not (counted or numbered) else COUNT_WORDS[entry["count"]]
                region = [f"on the {entry['region']}"] if "region" in entry else []
                phrase = " ".join([*([] if pp and tag in GENEVAL_PP_BARE else [article]), *words, *region])
                assert f" {phrase}" in f" {prompt}", (prompt, entry)
            if pp and len(record["include"]) > 2:  # GenEval++ lists three or more with Oxford commas
                assert prompt.count(",") == len(record["include"]) - 1 and ", and " in prompt, prompt
            if any("position" in e for e in record["include"]):
                relation = record["include"][1]["position"][0]
                phrase = {"left of": "to the left of", "right of": "to the right of"}.get(relation, relation)
                subject = prompt.split(f" {phrase} ")[0]
                assert record["include"][1]["class"] in subject  # the positioned entry is mentioned first


@pytest.mark.parametrize("suite,tag", ALL_TAGS)
def test_every_tag_samples_valid_scenes_that_satisfy_the_prompt(suite, tag):
    rng = np.random.default_rng(7)
    cell_centres = {(c + 0.5) * 32 / GRID for c in range(GRID)}
    for _ in range(60):
        record, scene = sample_example(suite, tag, rng)
        assert record["tag"] == tag and set(record) == {"tag", "include", "exclude", "prompt"}
        assert 1 <= len(scene.objects) <= MAX_OBJECTS
        assert all(1 <= e["count"] <= (7 if suite == "geneval_pp" else 4) for e in record["include"])
        # exact counts: an exclude with count + 1 for every include
        assert [(e["class"], e["count"] + 1, e.get("color")) for e in record["include"]] == [
            (e["class"], e["count"], e.get("color")) for e in record["exclude"]
        ]
        assert sum(e["count"] for e in record["include"]) == len(scene.objects)
        for obj in scene.objects:
            assert inside_canvas(obj, 32) and obj.x in cell_centres and obj.y in cell_centres
        for a, b in combinations(scene.objects, 2):
            assert apart(a, b, 32)
        assert check(scene.objects, record).strict == 1
        for entry in record["include"]:
            if "position" in entry:  # relations hold with a clear margin: at least two cells
                relation, j = entry["position"]
                subjects = [o for o in scene.objects if o.shape == entry["class"]]
                references = [o for o in scene.objects if o.shape == record["include"][j]["class"]]
                for a in subjects:
                    for b in references:
                        assert relation_holds(a, b, relation, margin=2 * 32 / GRID - 1e-6)


def test_sampling_is_deterministic():
    def draw(seed):
        rng = np.random.default_rng(seed)
        return [sample_example(s, t, rng) for s, t in ALL_TAGS for _ in range(5)]

    first, again, other = draw(11), draw(11), draw(12)
    assert first == again
    assert first != other
    assert all(np.array_equal(render(a[1]), render(b[1])) for a, b in zip(first, again))


def test_sample_example_rejects_unknown_suite_and_tag():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="suite 'coco'"):
        sample_example("coco", "counting", rng)
    with pytest.raises(ValueError, match="tag 'position'"):
        sample_example("geneval_pp", "position", rng)


def test_render_draws_each_object_in_its_colour_and_box():
    scene = Scene(
        objects=(
            SceneObject("square", "red", "small", *cell_center(1, 1, 32)),
            SceneObject("circle", "blue", "large", *cell_center(5, 5, 32)),
        ),
        canvas=32,
    )
    image = render(scene)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    red = np.all(image == COLORS["red"], axis=-1)
    assert red.sum() == 36 and red[3:9, 3:9].all()  # 6x6 square centred on (6, 6)
    blue = np.all(image == COLORS["blue"], axis=-1)
    assert blue.sum() == shape_mask("circle", 10).sum() and blue[17:27, 17:27].sum() == blue.sum()
    assert np.all(image[~(red | blue)] == BACKGROUND)


def test_render_scales_to_larger_canvases_and_rejects_bad_ones():
    assert [object_extent(s, 32) for s in ("small", "large")] == [6, 10]
    assert [object_extent(s, 64) for s in ("small", "large")] == [12, 20]
    rng = np.random.default_rng(1)
    _, scene = sample_example("geneval_pp", "multi_object_count_attr", rng, canvas=64)
    image = render(scene)
    assert image.shape == (64, 64, 3)
    assert np.count_nonzero(image.any(-1)) == sum(
        shape_mask(o.shape, object_extent(o.size, 64)).sum() for o in scene.objects
    )
    with pytest.raises(ValueError, match="canvas 30"):
        render(Scene(objects=(), canvas=30))


def test_shape_masks_are_symmetric_and_distinct():
    for extent in (6, 10, 12, 20):
        masks = {s: shape_mask(s, extent) for s in SHAPES}
        for shape, mask in masks.items():
            assert np.array_equal(mask, mask[:, ::-1]), shape
            assert mask[:, 0].any() and mask[-1].any()  # fills its box
        assert len({m.tobytes() for m in masks.values()}) == len(SHAPES)


def test_vocabulary_is_lower_case_words():
    words = vocabulary()
    assert len(words) == len(set(words))
    assert all(w == w.lower() and w.split() == [w] for w in words)
    rng = np.random.default_rng(5)
    for suite, tag in ALL_TAGS:
        record, _ = sample_example(suite, tag, rng)
        assert set(re.findall(r"\w+|[^\w\s]+", record["prompt"].lower())) <= set(words)  # punctuation split off
