"""Synthesis never dies on a rare draw: stuck random placement falls back to an exhaustive search, and a prompt
that cannot be placed at all is redrawn and counted in the data card."""

import numpy as np
import pytest

from r3.config import BaseConfig
from r3.data.card import data_card, synth_metrics
from r3.data.synth import SPLITS, TABLES, SynthConfig, build_table, heldout_pool
from r3.world import prompts
from r3.world.prompts import PlacementError, exact_count_excludes, scene_for
from r3.world.verifier import check

STUCK = {"tag": "spatial_count_attr", "prompt": "a circle to the left of three blue crosses",
         "include": [{"class": "cross", "count": 3, "color": "blue"},
                     {"class": "circle", "count": 1, "position": ["left of", 0]}]}
STUCK["exclude"] = exact_count_excludes(STUCK["include"])
TINY = SynthConfig(train_per_tag=2, heldout_per_tag=1, train_pairs=4, heldout_pairs_per_tag=2, candidates_per_tag=20)


def test_exhaustive_search_places_what_random_tries_could_not(monkeypatch):
    monkeypatch.setattr(prompts, "place_objects", lambda *args: None)  # every random try stuck
    for seed in range(5):
        scene = scene_for(STUCK, np.random.default_rng(seed))
        assert check(scene.objects, STUCK, canvas=32).strict == 1
        assert [o.shape for o in scene.objects] == ["circle", "cross", "cross", "cross"]  # order of mention


def test_a_record_that_cannot_be_placed_raises_placement_error():
    crowd = {"tag": "counting", "prompt": "forty large circles", "include": [{"class": "circle", "count": 40,
                                                                             "size": "large"}]}
    with pytest.raises(PlacementError, match="could not place the objects of 'forty large circles' on a 32x32"):
        scene_for(crowd, np.random.default_rng(0))


def test_unplaceable_prompts_are_redrawn_and_counted_in_the_data_card(tmp_path, monkeypatch):
    base = BaseConfig(num_threads=1)
    pool = heldout_pool(base, TINY)
    honest = prompts.sample_example
    calls = {"n": 0}

    def sometimes_stuck(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] in (2, 5, 6):
            raise PlacementError("could not place")
        return honest(*args, **kwargs)

    monkeypatch.setattr("r3.data.synth.sample_example", sometimes_stuck)
    counts, redrawn = build_table("prompts", "train", base, TINY, pool, tmp_path / "prompts.parquet")
    assert redrawn == 3 and sum(counts.values()) == TINY.train_per_tag * 13
    assert build_table("prompts", "heldout", base, TINY, pool, tmp_path / "held.parquet")[1] == 0
    metrics = synth_metrics({split: {table: {} for table in TABLES} for split in SPLITS})
    no_tiif = {"train": [], "heldout": []}
    card = data_card(metrics, {"heldout pool": 0, "train/prompts": redrawn}, 32, 0, [], no_tiif)
    assert "could not be placed on the canvas: 3 (train/prompts 3).\n" in card
    assert "redrawn" not in data_card(metrics, {"heldout pool": 0, "train/prompts": 0}, 32, 0, [], no_tiif)
