import numpy as np
import pytest

from r3.world import codec
from r3.world.prompts import examples_over_tags
from r3.world.render import render
from r3.world.scene import GRID, Scene, SceneObject, apart, cell_center, cell_of, inside_canvas
from r3.world.verifier import detect_batch


def test_decode_encode_render_is_byte_identical_on_10000_scenes_of_every_tag() -> None:
    images = np.stack([render(scene) for _, scene in examples_over_tags(10_000, seed=3)])  # (N, 32, 32, 3)
    latents = codec.encode(images)
    assert latents.shape == (10_000, codec.CHANNELS, GRID, GRID) and latents.dtype == np.float32
    assert np.array_equal(codec.decode(latents, 32), images)


def test_roundtrip_is_exact_on_a_64_canvas() -> None:
    images = np.stack([render(scene) for _, scene in examples_over_tags(300, seed=4, canvas=64)])
    assert np.array_equal(codec.decode(codec.encode(images), 64), images)


@pytest.mark.parametrize("scale", [0.3, 1.0, 3.0])
def test_any_latent_decodes_to_a_valid_scene_the_verifier_reads_exactly(scale: float) -> None:
    noise = scale * np.random.default_rng(0).standard_normal((400, codec.CHANNELS, GRID, GRID)).astype(np.float32)
    images = codec.decode(noise, 32)
    scenes = [codec.latent_scene(latent, 32) for latent in noise]
    assert sum(len(s.objects) for s in scenes) > 400  # noise does decode to objects, not to empty canvases
    for scene, found in zip(scenes, detect_batch(images), strict=True):
        objects = scene.objects
        assert all(inside_canvas(o, 32) for o in objects)
        assert all(apart(a, b, 32) for i, a in enumerate(objects) for b in objects[i + 1 :])
        read = sorted((d.shape, d.color, d.size, cell_of(d.x, d.y, 32)) for d in found)
        assert read == sorted((o.shape, o.color, o.size, cell_of(o.x, o.y, 32)) for o in objects)


def test_decoding_keeps_the_strongest_of_two_neighbours() -> None:
    near = [SceneObject("circle", "red", "large", *cell_center(3, 3, 32)),
            SceneObject("square", "blue", "large", *cell_center(4, 3, 32))]
    latent = codec.objects_latent(near, 32)
    latent[codec.PRESENCE, 3, 4] = 0.9  # the square's peak is weaker than the circle's (1.0)
    assert codec.latent_scene(latent, 32).objects == (near[0],)
    latent[codec.PRESENCE, 3, 4] = 1.5
    assert codec.latent_scene(latent, 32).objects == (near[1],)


def test_attributes_decode_by_argmax_nearest_colour_and_sign() -> None:
    latent = codec.objects_latent([], 32)
    latent[:, 2, 5] = 0
    latent[codec.PRESENCE, 2, 5] = 0.2
    latent[codec.SHAPE_CHANNELS, 2, 5] = [0.1, 0.0, 0.3, -0.5]  # triangle
    latent[codec.COLOR_CHANNELS, 2, 5] = [0.9, 0.8, -0.7]  # nearest palette colour: yellow (255, 255, 0)
    latent[codec.SIZE, 2, 5] = -0.1
    obj = codec.latent_scene(latent, 32).objects[0]
    assert (obj.shape, obj.color, obj.size, cell_of(obj.x, obj.y, 32)) == ("triangle", "yellow", "small", (5, 2))


def test_empty_scene_and_bad_shapes() -> None:
    blank = render(Scene(objects=(), canvas=32))
    assert np.array_equal(codec.decode(codec.encode(blank[None]), 32)[0], blank)
    with pytest.raises(ValueError, match="latent: expected shape"):
        codec.latent_scene(np.zeros((3, GRID, GRID), dtype=np.float32), 32)
