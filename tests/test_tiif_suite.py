"""The synth stage's TIIF suite: TIIF-Bench files the TIIF reader reads, split without shared descriptions, every
question in the ShapeWorld grammar and answered by the description itself (the same on every scene drawn for it),
both answers in every record, short descriptions in the model's vocabulary, the same files for the same seed."""

import json
import re
from collections import Counter

import numpy as np
import pytest

from r3.config import BaseConfig
from r3.data.synth import SynthConfig
from r3.data.tiif_suite import TYPES, prompt_table, read_suite, suite_file, tiif_suite, write_suite
from r3.errors import InputError
from r3.evals.tiif import tiif_scorer
from r3.world.prompts import scene_for
from r3.world.render import render
from r3.world.tiif_exact import answer, exact_scores, in_grammar, parse_question, type_refusal
from r3.world.tiif_io import prompt_records, read_tiif_file, tiif_items
from r3.world.vocabulary import vocabulary

WANT = {"train": 12, "heldout": 6}
BASE = BaseConfig()


@pytest.fixture(scope="module")
def suite():
    return tiif_suite(BASE, WANT)


def test_each_split_holds_its_records_per_type(suite):
    for split, n in WANT.items():
        assert Counter(e.type for e in suite[split]) == {t: n for t in TYPES}
    assert TYPES == ("shape+color", "2d_spatial_relation", "numeracy", "comparison", "negation", "differentiation")
    assert not any(type_refusal(t) for t in TYPES)  # every type is one ShapeWorld draws


def test_train_and_heldout_share_no_description_and_each_split_repeats_none(suite):
    for kind in ("short_description", "long_description"):
        texts = {split: [e.tiif_record()[kind] for e in examples] for split, examples in suite.items()}
        assert all(len(set(t)) == len(t) for t in texts.values()), kind
        assert not set(texts["train"]) & set(texts["heldout"]), kind


def test_every_question_is_in_the_grammar_and_every_record_has_both_answers(suite):
    for example in suite["train"] + suite["heldout"]:
        assert all(in_grammar(q) for q in example.questions)
        assert set(example.answers) == {"yes", "no"}, example.tiif_record()
        assert len(example.questions) == len(example.answers) == 4


def test_the_answers_hold_on_every_scene_drawn_for_the_description(suite):
    """The questions ask what the description decides: other scenes of the same objects answer them the same."""
    rng = np.random.default_rng(7)
    for example in suite["heldout"]:
        for _ in range(3):
            other = scene_for(example.record, rng)
            assert tuple(answer(parse_question(q), other) for q in example.questions) == example.answers, (
                example.tiif_record())


def test_the_answers_are_the_scores_of_the_rendered_scenes(tmp_path, suite):
    """An image of the record's scene scores 1 on both descriptions; a blank one less (each record asks for objects)."""
    write_suite(BASE, WANT, tmp_path)
    records = prompt_records(tiif_items(read_tiif_file(tmp_path / "heldout.jsonl")))
    images = np.stack([render(e.scene) for e in suite["heldout"] for _ in ("short", "long")])  # (2 H, 32, 32, 3)
    assert exact_scores(images, records).tolist() == [1.0] * len(records)
    assert exact_scores(np.zeros_like(images), records).max() < 1.0


def test_short_descriptions_are_in_the_vocabulary_and_long_ones_say_more(suite):
    words = set(vocabulary())
    for example in suite["train"] + suite["heldout"]:
        short = example.record["prompt"]
        assert set(re.findall(r"[a-z]+|,", short.lower())) <= words, short
        assert len(example.long.split()) > len(short.split()) + 5


def test_the_written_files_read_back_as_tiif_files_scored_exactly(tmp_path, suite):
    write_suite(BASE, WANT, tmp_path / "tiif")
    for split, examples in suite.items():
        path = suite_file(tmp_path, split)
        records = read_tiif_file(path)
        assert [r.short_description for r in records] == [e.record["prompt"] for e in examples]
        assert [json.loads(line) for line in path.read_text().splitlines()] == [e.tiif_record() for e in examples]
        assert tiif_scorer(path, records, judge=None) == "exact"
        assert read_suite(tmp_path, split) == records
    table = prompt_table(tmp_path, "train")  # what rl.prompts: tiif draws: every record's short and long description
    assert len(table) == 2 * len(suite["train"])
    first = suite["train"][0]
    assert table.records([0, 1]) == [
        {"prompt": p, "tag": first.type, "questions": list(first.questions), "answers": list(first.answers)}
        for p in (first.record["prompt"], first.long)]


def test_the_same_seed_writes_the_same_files_and_another_seed_others(tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        write_suite(BaseConfig(seed=seed), WANT, tmp_path / name)
    read = {name: (tmp_path / name / "heldout.jsonl").read_bytes() for name in "abc"}
    assert read["a"] == read["b"] != read["c"]


def test_the_stage_config_gives_the_counts_per_type():
    assert SynthConfig().tiif_per_type() == {"train": 50, "heldout": 25}
    assert SynthConfig(tiif_train_per_type=3, tiif_heldout_per_type=2).tiif_per_type() == {"train": 3, "heldout": 2}


def test_a_missing_suite_names_the_file_and_the_fix(tmp_path):
    with pytest.raises(InputError, match=r"tiif/heldout\.jsonl: TIIF suite not found; run `dvc repro synth`"):
        read_suite(tmp_path, "heldout")
