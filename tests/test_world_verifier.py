"""The exact verifier: hand-checked semantics, then the accuracy targets on 10,000 seeded scenes."""

import numpy as np
import pytest
from scipy import ndimage

from r3.world.edits import violate
from r3.world.prompts import SUITES, sample_example
from r3.world.render import render
from r3.world.scene import Scene, SceneObject, cell_center, fits
from r3.world.verifier import (
    Detection,
    UnsupportedClassError,
    Verdict,
    check,
    check_supported,
    detect,
    in_region,
    verify,
    verify_batch,
)

N_SCENES = 10_000
CHUNK = 2_000


def obj(shape, color, col, row, size="small"):
    return SceneObject(shape, color, size, *cell_center(col, row, 32))


def record(include, exclude=(), prompt="p"):
    return {"tag": "t", "include": list(include), "exclude": list(exclude), "prompt": prompt}


# ---------------------------------------------------------------- check semantics


def test_exact_counts_and_partial_closeness():
    three_red = record([{"class": "circle", "count": 3, "color": "red"}],
                       [{"class": "circle", "count": 4, "color": "red"}])  # fmt: skip
    circles = [obj("circle", "red", c, 1) for c in (1, 3, 5)]
    assert check(circles, three_red) == Verdict(1, 1.0)
    assert check(circles[:2], three_red) == Verdict(0, pytest.approx(2 / 3))
    assert check([*circles, obj("circle", "red", 1, 5)], three_red) == Verdict(0, pytest.approx(3 / 4))
    # a blue circle matches neither include nor exclude
    assert check([*circles, obj("circle", "blue", 1, 5)], three_red) == Verdict(1, 1.0)
    # without the exclude an include means "at least"
    at_least = record(three_red["include"])
    assert check([*circles, obj("circle", "red", 1, 5)], at_least) == Verdict(1, 1.0)


def test_unpaired_exclude_penalises():
    no_squares = record([{"class": "circle", "count": 1}], [{"class": "square", "count": 1}])
    assert check([obj("circle", "red", 1, 1)], no_squares) == Verdict(1, 1.0)
    found = check([obj("circle", "red", 1, 1), obj("square", "red", 5, 5)], no_squares)
    assert found == Verdict(0, pytest.approx(1 / 2))


def test_position_must_hold_for_every_pair():
    above = record([{"class": "square", "count": 1}, {"class": "circle", "count": 2, "position": ["above", 0]}])
    square = obj("square", "blue", 3, 5)
    both_above = [square, obj("circle", "red", 1, 2), obj("circle", "red", 5, 2)]
    assert check(both_above, above) == Verdict(1, 1.0)
    one_below = [square, obj("circle", "red", 1, 2), obj("circle", "red", 6, 6)]
    assert check(one_below, above) == Verdict(0, pytest.approx((1 + 0.5) / 2))
    # same row is not above; far to the side (beyond 60 degrees) is not above either
    assert check([square, obj("circle", "red", 1, 5), obj("circle", "red", 5, 2)], above).strict == 0
    far_to_the_side = [obj("square", "blue", 0, 3), obj("circle", "red", 6, 2), obj("circle", "red", 7, 1)]
    assert check(far_to_the_side, above).strict == 0
    # no reference object: the position cannot hold
    assert check(both_above[1:], above) == Verdict(0, 0.0)


def test_colour_and_size_must_match():
    large_red = record([{"class": "triangle", "count": 1, "color": "red", "size": "large"}])
    assert check([obj("triangle", "red", 2, 2, "large")], large_red).strict == 1
    assert check([obj("triangle", "red", 2, 2, "small")], large_red) == Verdict(0, 0.0)
    assert check([obj("triangle", "blue", 2, 2, "large")], large_red) == Verdict(0, 0.0)


def at(shape, x, y, size="small"):
    return SceneObject(shape, "red", size, x, y)


HALVES = {"left": lambda c, r: c < 4, "right": lambda c, r: c >= 4, "above": lambda c, r: r < 4,
          "below": lambda c, r: r >= 4}
"""The grid cells (col, row) of each region: the 4 columns / rows of that half."""


@pytest.mark.parametrize("region", ["left", "right", "above", "below"])
def test_region_holds_in_its_half_only(region):
    circle_there = record([{"class": "circle", "count": 1, "region": region}])
    verdicts = {(c, r): check([obj("circle", "red", c, r)], circle_there) for c in range(8) for r in range(8)}
    assert {cell for cell, v in verdicts.items() if v == Verdict(1, 1.0)} == {
        cell for cell in verdicts if HALVES[region](*cell)}
    assert all(v == Verdict(0, 0.0) for cell, v in verdicts.items() if not HALVES[region](*cell))


def test_region_boundaries_are_the_midline_plus_the_relation_margin():
    # canvas 32: margin 1 pixel, midline 16
    assert [bool(in_region(x, 8.0, "left", 32)) for x in (14.0, 15.0, 15.5, 16.0, 17.0)] == [1, 1, 0, 0, 0]
    assert [bool(in_region(x, 8.0, "right", 32)) for x in (15.0, 16.0, 16.5, 17.0, 18.0)] == [0, 0, 0, 1, 1]
    assert [bool(in_region(8.0, y, "above", 32)) for y in (15.0, 15.5, 16.0)] == [1, 0, 0]
    assert [bool(in_region(8.0, y, "below", 32)) for y in (16.0, 16.5, 17.0)] == [0, 0, 1]
    # canvas 64: margin 2 pixels, midline 32
    assert [bool(in_region(x, 8.0, "left", 64)) for x in (30.0, 30.5, 32.0)] == [1, 0, 0]
    assert [bool(in_region(x, 8.0, "right", 64)) for x in (32.0, 33.5, 34.0)] == [0, 0, 1]
    # the verdict uses the object's centre
    left = record([{"class": "circle", "count": 1, "region": "left"}])
    assert check([at("circle", 15.0, 8.0)], left).strict == 1
    assert check([at("circle", 16.0, 8.0)], left) == Verdict(0, 0.0)
    assert check([at("circle", 31.0, 8.0)], left, canvas=64).strict == 0
    assert check([at("circle", 30.0, 8.0)], left, canvas=64).strict == 1


def test_region_partial_credit_and_a_wrong_region_scene_scores_zero():
    include = [{"class": "circle", "count": 3, "region": "left"}, {"class": "square", "count": 1, "region": "right"}]
    three_left_one_right = record(include, [{"class": "circle", "count": 4}, {"class": "square", "count": 2}])
    right = [obj("circle", "red", 1, r) for r in (1, 3, 5)] + [obj("square", "blue", 6, 3)]
    assert check(right, three_left_one_right) == Verdict(1, 1.0)
    # the scene the issue found scored 1: circles on the right, the square on the left
    mirrored = [obj("circle", "red", 6, r) for r in (1, 3, 5)] + [obj("square", "blue", 1, 3)]
    assert check(mirrored, three_left_one_right) == Verdict(0, 0.0)
    # one circle of three on the wrong side: that entry's placement is 2 / 3
    one_astray = [obj("circle", "red", 1, 1), obj("circle", "red", 1, 3), obj("circle", "red", 6, 5),
                  obj("square", "blue", 6, 3)]
    assert check(one_astray, three_left_one_right) == Verdict(0, pytest.approx((2 / 3 + 1) / 2))
    # a region only counts matching objects: a missing square scores 0 for its entry
    assert check(right[:3], three_left_one_right) == Verdict(0, pytest.approx(1 / 2))


def test_relative_size_between_the_entries_and_a_wrong_size_scene_scores_zero():
    larger_circle = record([{"class": "circle", "count": 1, "size": "larger"},
                            {"class": "square", "count": 1, "size": "smaller"}])  # fmt: skip
    circle, square = obj("circle", "red", 1, 1, "large"), obj("square", "blue", 5, 5, "small")
    assert check([circle, square], larger_circle) == Verdict(1, 1.0)
    # sizes swapped: each fact fails for its only pair
    swapped = [obj("circle", "red", 1, 1, "small"), obj("square", "blue", 5, 5, "large")]
    assert check(swapped, larger_circle) == Verdict(0, 0.0)
    # equal sizes are neither larger nor smaller
    for size in ("small", "large"):
        assert check([obj("circle", "red", 1, 1, size), obj("square", "blue", 5, 5, size)], larger_circle) == Verdict(
            0, 0.0)
    # the relative size does not decide matching: a small circle still counts as the circle, and with no square
    # there is no pair to compare
    assert check([circle], larger_circle) == Verdict(0, 0.0)
    # partial credit: share of (larger, smaller) pairs that hold
    two_circles = record([{"class": "circle", "count": 2, "size": "larger"},
                          {"class": "square", "count": 1, "size": "smaller"}])  # fmt: skip
    half = [circle, obj("circle", "red", 1, 5, "small"), square]
    assert check(half, two_circles) == Verdict(0, pytest.approx(0.5))
    # larger / smaller is ShapeWorld's size order from either side
    smaller_first = record([{"class": "square", "count": 1, "size": "smaller"},
                            {"class": "circle", "count": 1, "size": "larger"}])  # fmt: skip
    assert check([circle, square], smaller_first) == Verdict(1, 1.0)
    assert check(swapped, smaller_first).strict == 0


def test_region_and_relative_size_together():
    pp = record([{"class": "circle", "count": 1, "size": "larger", "region": "above"},
                 {"class": "square", "count": 1, "size": "smaller", "region": "below"}],
                [{"class": "circle", "count": 2}, {"class": "square", "count": 2}])  # fmt: skip
    assert check([obj("circle", "red", 2, 1, "large"), obj("square", "blue", 5, 6)], pp) == Verdict(1, 1.0)
    wrong_region = [obj("circle", "red", 2, 6, "large"), obj("square", "blue", 5, 1)]
    assert check(wrong_region, pp) == Verdict(0, 0.0)
    wrong_size = [obj("circle", "red", 2, 1, "small"), obj("square", "blue", 5, 6, "large")]
    assert check(wrong_size, pp) == Verdict(0, 0.0)
    check_supported(pp)  # larger / smaller are sizes the verifier knows


def test_check_supported_names_the_class_and_the_judge():
    with pytest.raises(UnsupportedClassError, match="'dog'.*a photo of a dog.*'judge'"):
        check_supported(record([{"class": "dog", "count": 1}], prompt="a photo of a dog"))
    with pytest.raises(UnsupportedClassError, match="color 'pink'"):
        check_supported(record([{"class": "circle", "count": 1, "color": "pink"}]))
    with pytest.raises(UnsupportedClassError, match="relation 'near'"):
        near = {"class": "square", "count": 1, "position": ["near", 0]}
        check_supported(record([{"class": "circle", "count": 1}, near]))
    with pytest.raises(UnsupportedClassError):
        verify(np.zeros((32, 32, 3), np.uint8), record([{"class": "dog", "count": 1}]))


# ---------------------------------------------------------------- detection


def test_detect_reads_objects_exactly():
    for small, large in (("small", "large"), ("large", "small")):  # every shape in both sizes
        scene = Scene(
            objects=(
                obj("circle", "red", 1, 1, small),
                obj("square", "cyan", 5, 1, large),
                obj("triangle", "purple", 1, 5, large),
                obj("cross", "yellow", 5, 5, small),
            ),
            canvas=32,
        )
        assert all(fits(o, [p for p in scene.objects if p is not o], 32) for o in scene.objects)
        detections = detect(render(scene))
        assert {(d.shape, d.color, d.size, d.x, d.y) for d in detections} == {
            (o.shape, o.color, o.size, o.x, o.y) for o in scene.objects
        }
        assert all(isinstance(d, Detection) and d.area >= 8 for d in detections)
    assert detect(render(Scene(objects=(), canvas=32))) == []


def test_detect_accepts_float_images_and_rejects_bad_shapes():
    scene = Scene(objects=(obj("circle", "blue", 2, 2), obj("square", "red", 5, 5, "large")), canvas=32)
    image = render(scene)
    assert detect(image.astype(np.float64) / 255) == detect(image)
    with pytest.raises(ValueError, match="expected shape"):
        detect(image[..., :2])
    with pytest.raises(ValueError, match="square images"):
        verify_batch(np.zeros((1, 32, 40, 3), np.uint8), [record([{"class": "circle", "count": 1}])])
    with pytest.raises(ValueError, match="2 images but 1 records"):
        verify_batch(np.zeros((2, 32, 32, 3), np.uint8), [record([{"class": "circle", "count": 1}])])


def test_detect_ignores_specks_below_the_minimum_area():
    image = np.zeros((32, 32, 3), np.uint8)
    image[10:12, 10:12] = (255, 0, 0)  # 4 pixels
    assert detect(image) == []


@pytest.mark.parametrize("canvas", [40, 48, 64, 96])
def test_verify_works_on_larger_canvases(canvas):
    rng = np.random.default_rng(4)
    tags = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]
    examples = [sample_example(suite, tag, rng, canvas) for suite, tag in tags for _ in range(3)]
    images = np.stack([render(s) for _, s in examples])
    assert [v.strict for v in verify_batch(images, [r for r, _ in examples])] == [1] * len(examples)


# ---------------------------------------------------------------- accuracy targets


@pytest.fixture(scope="module")
def seeded_examples():
    rng = np.random.default_rng(2024)
    tags = [(suite, tag) for suite, tags in SUITES.items() for tag in tags]
    examples = [sample_example(*tags[i % len(tags)], rng) for i in range(N_SCENES)]
    records = [r for r, _ in examples]
    images = np.stack([render(s) for _, s in examples])  # (N, 32, 32, 3) uint8
    return examples, records, images


def strict_rate(images_of_chunk, records):
    """Mean strict verdict, perturbing and verifying CHUNK images at a time."""
    strict = []
    for start in range(0, len(records), CHUNK):
        batch = images_of_chunk(start, start + CHUNK)
        strict += [v.strict for v in verify_batch(batch, records[start : start + CHUNK])]
    return float(np.mean(strict))


def test_clean_renders_agree_with_the_scene(seeded_examples):
    examples, records, images = seeded_examples
    truth = [check(s.objects, r).strict for r, s in examples]
    verdicts = verify_batch(images, records)
    agreement = np.mean([v.strict == t for v, t in zip(verdicts, truth)])
    assert agreement >= 0.999


def test_noisy_renders(seeded_examples):
    _, records, images = seeded_examples
    noise_rng = np.random.default_rng(1)

    def noisy(a, b):
        clean = images[a:b].astype(np.float32) / 255
        return np.clip(clean + noise_rng.normal(0, 0.08, clean.shape).astype(np.float32), 0, 1)

    assert strict_rate(noisy, records) >= 0.98


def test_blurred_renders(seeded_examples):
    _, records, images = seeded_examples

    def blurred(a, b):  # 3x3 box blur of each image
        return ndimage.uniform_filter(images[a:b].astype(np.float32) / 255, size=(1, 3, 3, 1), mode="nearest")

    assert strict_rate(blurred, records) >= 0.98


def test_violated_scenes_fail(seeded_examples):
    examples, records, _ = seeded_examples
    rng = np.random.default_rng(9)
    wrong = [violate(s, r, rng) for r, s in examples]
    assert all(check(w.objects, r).strict == 0 for w, r in zip(wrong, records))
    wrong_images = np.stack([render(w) for w in wrong])
    rejected = 1 - np.mean([v.strict for v in verify_batch(wrong_images, records)])
    assert rejected >= 0.995
