"""GenEval-format prompt files written the way GenEval writes them (capitals, "a photo of", commas, "one" / "1"),
and GenEval++-format ones (`region`, relative `size`), evaluate end to end; their metadata, not their wording,
decides the score."""

from pathlib import Path

import numpy as np
import torch

from r3.config import BaseConfig
from r3.data.synth import SynthConfig, build_table, heldout_pool
from r3.evals.benchmarks import unsupported
from r3.evals.evaluate import EvaluateConfig, file_suite, run_evaluate
from r3.models.interface import SamplingConfig
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer, encode_words
from r3.world.geneval_io import read_prompt_file
from r3.world.prompts import GENEVAL_PP_TAGS, GENEVAL_TAGS, join_phrases, scene_for, spaced_words
from r3.world.render import render
from r3.world.scene import Scene, SceneObject
from r3.world.verifier import Verdict, verify_batch
from r3.world.vocabulary import vocabulary

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "geneval_free_phrasing.jsonl"
GENEVAL_PP_EXAMPLE = EXAMPLE.parent / "geneval_pp_schema.jsonl"
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
    ids = encode_words(tokenizer, ["A picture of three Triangles, and 1 circle."])[0]
    assert ids == [vocab["a"], unk, vocab["of"], vocab["three"], vocab["triangles"], vocab[","], vocab["and"], vocab["1"],
                   vocab["circle"], unk]


def test_synth_prompts_have_no_space_before_commas_and_keep_their_token_ids():
    text = join_phrases(["a cross", "two triangles", "three circles"])
    assert text == "a cross, two triangles and three circles"
    assert spaced_words(text) == "a cross , two triangles and three circles"
    tokenizer = build_tokenizer(vocabulary())
    assert encode_words(tokenizer, [text]) == encode_words(tokenizer, [spaced_words(text)])


def evaluate_file(prompts: Path, root: Path) -> dict:
    """run_evaluate on a prompt file with a tiny untrained checkpoint (1 reflect-refine round); its metrics."""
    synth = SynthConfig(heldout_per_tag=1, heldout_pairs_per_tag=2, candidates_per_tag=30)
    pool = heldout_pool(BASE, synth)
    for table in ("vqa", "ita"):
        build_table(table, "heldout", BASE, synth, pool, root / "synth" / "heldout" / f"{table}.parquet")
    torch.manual_seed(1)
    TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).save_pretrained(root / "sft")
    cfg = EvaluateConfig(prompts=prompts, per_tag=None, max_rounds=1, grid_rows=2,
                         sampling=SamplingConfig(steps=2, cfg_scale=1.5, temperature=0.0, max_new_tokens=8))
    return run_evaluate(BASE, cfg, {"sft": root / "sft"}, root / "synth", root / "out", MODEL).metrics


def test_free_phrasing_file_evaluates_end_to_end(tmp_path):
    generation = evaluate_file(EXAMPLE, tmp_path)["checkpoints"]["sft"]["generation"]["geneval"]
    assert len(generation) == 2 and set(generation[0]["per_tag"]) == set(GENEVAL_TAGS)
    assert all(0.0 <= row["overall"] <= 1.0 for row in generation)


def mirrored(obj: SceneObject, region: str, canvas: int) -> SceneObject:
    """The object reflected across the midline its region is about (into the other half)."""
    if region in ("left", "right"):
        return SceneObject(obj.shape, obj.color, obj.size, canvas - obj.x, obj.y)
    return SceneObject(obj.shape, obj.color, obj.size, obj.x, canvas - obj.y)


def test_geneval_pp_schema_records_are_scored_exactly_on_region_and_relative_size():
    records = read_prompt_file(GENEVAL_PP_EXAMPLE)
    assert unsupported(records) == [] and {r["tag"] for r in records} == set(GENEVAL_PP_TAGS)
    assert file_suite(records) == "geneval_pp"
    rng = np.random.default_rng(0)
    scenes = [scene_for(record, rng) for record in records]
    verdicts = verify_batch(np.stack([render(s) for s in scenes]), records)
    assert verdicts == [Verdict(1, 1.0)] * len(records)
    # wrong region: every object of the spatial records mirrored into the other half
    spatial = [(r, s) for r, s in zip(records, scenes) if "region" in r["include"][0]]
    wrong_region = [
        Scene(tuple(mirrored(o, r["include"][0]["region"], s.canvas) for o in s.objects), s.canvas) for r, s in spatial
    ]
    verdicts = verify_batch(np.stack([render(s) for s in wrong_region]), [r for r, _ in spatial])
    assert verdicts == [Verdict(0, 0.0)] * len(spatial)
    # wrong size: the larger object drawn small, as small as the smaller one
    sized = [(r, s) for r, s in zip(records, scenes) if r["tag"] == "size_spatial_attr"]
    wrong_size = [Scene(tuple(SceneObject(o.shape, o.color, "small", o.x, o.y) for o in s.objects), s.canvas)
                  for _, s in sized]
    assert [o.size for _, s in sized for o in s.objects].count("large") == len(sized)
    verdicts = verify_batch(np.stack([render(s) for s in wrong_size]), [r for r, _ in sized])
    assert verdicts == [Verdict(0, 0.0)] * len(sized)


def test_geneval_pp_schema_file_evaluates_end_to_end(tmp_path):
    generation = evaluate_file(GENEVAL_PP_EXAMPLE, tmp_path)["checkpoints"]["sft"]["generation"]["geneval_pp"]
    assert len(generation) == 2 and set(generation[0]["per_tag"]) == set(GENEVAL_PP_TAGS)
    assert all(0.0 <= row["overall"] <= 1.0 for row in generation)
