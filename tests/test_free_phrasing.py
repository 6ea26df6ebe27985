"""GenEval-format prompt files written the way GenEval writes them (capitals, "a photo of", commas, "one" / "1")
evaluate end to end; their metadata, not their wording, decides the score."""

from pathlib import Path

import numpy as np
import torch

from r3.config import BaseConfig
from r3.data.synth import SynthConfig, build_table, heldout_pool
from r3.evals.benchmarks import unsupported
from r3.evals.evaluate import EvaluateConfig, run_evaluate
from r3.models.interface import SamplingConfig
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer, encode_words
from r3.world.geneval_io import read_prompt_file
from r3.world.prompts import GENEVAL_TAGS, join_phrases, scene_for, spaced_words, vocabulary
from r3.world.render import render
from r3.world.scene import Scene
from r3.world.verifier import verify_batch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "geneval_free_phrasing.jsonl"
BASE = BaseConfig(num_threads=1)
MODEL = TinyConfig(patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=1, head_heads=2)


def test_example_records_are_scored_exactly_from_their_metadata():
    records = read_prompt_file(EXAMPLE)
    assert unsupported(records) == [] and {r["tag"] for r in records} == set(GENEVAL_TAGS)
    rng = np.random.default_rng(0)
    scenes = [scene_for(record, rng) for record in records]
    right = np.stack([render(s) for s in scenes])
    wrong = np.stack([render(Scene(objects=s.objects[1:], canvas=s.canvas)) for s in scenes])  # one object missing
    assert [v.strict for v in verify_batch(right, records)] == [1] * len(records)
    assert [v.strict for v in verify_batch(wrong, records)] == [0] * len(records)


def test_free_phrasing_encodes_with_unk_for_unknown_words():
    tokenizer = build_tokenizer(vocabulary())
    vocab, unk = tokenizer.get_vocab(), tokenizer.unk_token_id
    ids = encode_words(tokenizer, ["A photo of three Triangles, and 1 circle."])[0]
    assert ids == [vocab["a"], unk, vocab["of"], vocab["three"], vocab["triangles"], vocab[","], vocab["and"], vocab["1"],
                   vocab["circle"], unk]


def test_synth_prompts_have_no_space_before_commas_and_keep_their_token_ids():
    text = join_phrases(["a cross", "two triangles", "three circles"])
    assert text == "a cross, two triangles and three circles"
    assert spaced_words(text) == "a cross , two triangles and three circles"
    tokenizer = build_tokenizer(vocabulary())
    assert encode_words(tokenizer, [text]) == encode_words(tokenizer, [spaced_words(text)])


def test_free_phrasing_file_evaluates_end_to_end(tmp_path):
    synth = SynthConfig(heldout_per_tag=1, heldout_pairs_per_tag=2, candidates_per_tag=30)
    pool = heldout_pool(BASE, synth)
    for table in ("vqa", "ita"):
        build_table(table, "heldout", BASE, synth, pool, tmp_path / "synth" / "heldout" / f"{table}.parquet")
    torch.manual_seed(1)
    TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).save_pretrained(tmp_path / "sft")
    cfg = EvaluateConfig(prompts=EXAMPLE, per_tag=None, max_rounds=1, grid_rows=2,
                         sampling=SamplingConfig(steps=2, cfg_scale=1.5, temperature=0.0, max_new_tokens=8))
    result = run_evaluate(BASE, cfg, {"sft": tmp_path / "sft"}, tmp_path / "synth", tmp_path / "out", MODEL)
    generation = result.metrics["checkpoints"]["sft"]["generation"]["geneval"]
    assert len(generation) == 2 and set(generation[0]["per_tag"]) == set(GENEVAL_TAGS)
    assert all(0.0 <= row["overall"] <= 1.0 for row in generation)
