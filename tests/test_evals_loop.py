"""The R3 loop and the benchmark metrics, checked with fake models whose right answers are known."""

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from r3.data.table import Table
from r3.evals.benchmarks import accuracy_by_tag, generation_by_round, make_score_fn, understanding
from r3.evals.best_of_n import (Samples, best_of_n_correct, equal_compute, judge_picks, oracle_correct,
                                sample_best_of_n, sample_noise, sampled_accuracy)
from r3.evals.heldout import noise_for, to_uint8
from r3.evals.r3_loop import reflection_outcomes, run_r3, scaling_metrics
from r3.models.interface import SamplingConfig
from r3.world.edits import STOP_ANSWER
from r3.world.prompts import SUITES, sample_example
from r3.world.render import render
from r3.world.scene import Scene
from r3.world.verifier import UnsupportedClassError, detect, verify_batch

CANVAS = 32
SAMPLING = SamplingConfig(steps=2, temperature=0.0)
strict = make_score_fn(None)


def _pixels(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255


class SceneModel:
    """Draws each prompt's scene without its last `missing[prompt]` objects. Reflection: the stop answer when the
    image verifies (always, if `always_stop`), else "add <prompt>"; editing draws one more object of the scene."""

    def __init__(self, examples: list[tuple[dict, Scene]], missing: dict[str, int] | None = None,
                 always_stop: bool = False) -> None:
        self.scenes = {record["prompt"]: scene for record, scene in examples}
        self.records = {record["prompt"]: record for record, _ in examples}
        self.missing = missing or {}
        self.always_stop = always_stop
        self.edits = 0

    def _draw(self, prompt: str, count: int) -> np.ndarray:
        scene = self.scenes[prompt]
        return render(Scene(scene.objects[:count], scene.canvas))

    def reason(self, prompts, sampling, generator=None):
        return SimpleNamespace(texts=["layout"] * len(prompts))

    def generate(self, prompts, reasoning, sampling, noise=None, generator=None):
        images = [self._draw(p, len(self.scenes[p].objects) - self.missing.get(p, 0)) for p in prompts]
        return SimpleNamespace(images=_pixels(images))

    def reflect(self, images, prompts, sampling, generator=None):
        if self.always_stop:
            return SimpleNamespace(texts=[STOP_ANSWER] * len(prompts))
        verdicts = verify_batch(to_uint8(images), [self.records[p] for p in prompts])
        return SimpleNamespace(texts=[STOP_ANSWER if v.strict else f"add {p}" for v, p in zip(verdicts, prompts)])

    def edit(self, images, instructions, sampling, noise=None, generator=None):
        self.edits += len(instructions)
        drawn = [self._draw(instruction.removeprefix("add "), len(detect(image)) + 1)
                 for image, instruction in zip(to_uint8(images), instructions)]
        return SimpleNamespace(images=_pixels(drawn))


class BlankModel(SceneModel):
    """Draws nothing: always wrong."""

    def generate(self, prompts, reasoning, sampling, noise=None, generator=None):
        return SimpleNamespace(images=torch.zeros(len(prompts), 3, CANVAS, CANVAS))


class NoiseModel:
    """Images are a function of the sampling noise only; never stops."""

    def reason(self, prompts, sampling, generator=None):
        return SimpleNamespace(texts=[""] * len(prompts))

    def generate(self, prompts, reasoning, sampling, noise=None, generator=None):
        return SimpleNamespace(images=torch.sigmoid(noise))

    def reflect(self, images, prompts, sampling, generator=None):
        return SimpleNamespace(texts=["make it so"] * len(prompts))

    def edit(self, images, instructions, sampling, noise=None, generator=None):
        return SimpleNamespace(images=(images + torch.sigmoid(noise)) / 2)


class SamplingSceneModel(SceneModel):
    """Greedy reasoning is 'wrong'; sampled reasoning is 'right' or 'wrong' by a fair coin from the generator.
    Draws the scene for 'right', the scene less its last object for 'wrong'. Its judge rates an image 1 when it
    verifies and 0 otherwise, or the other way round when `contrary` (a judge that prefers the wrong image)."""

    def __init__(self, examples: list[tuple[dict, Scene]], contrary: bool = False) -> None:
        super().__init__(examples)
        self.contrary = contrary
        self.generated = 0

    def reason(self, prompts, sampling, generator=None):
        if sampling.temperature == 0:
            return SimpleNamespace(texts=["wrong"] * len(prompts))
        right = torch.rand(len(prompts), generator=generator) < 0.5
        return SimpleNamespace(texts=["right" if r else "wrong" for r in right])

    def generate(self, prompts, reasoning, sampling, noise=None, generator=None):
        self.generated += len(prompts)
        images = [self._draw(p, len(self.scenes[p].objects) - (z != "right")) for p, z in zip(prompts, reasoning)]
        return SimpleNamespace(images=_pixels(images))

    def judge(self, images, prompts):
        verdicts = verify_batch(to_uint8(images), [self.records[p] for p in prompts])
        aligned = torch.tensor([float(v.strict) for v in verdicts])
        return 1 - aligned if self.contrary else aligned


def _examples(suite: str, tag: str, n: int, seed: int = 0) -> list[tuple[dict, Scene]]:
    rng = np.random.default_rng(seed)
    examples, seen = [], set()
    while len(examples) < n:
        record, scene = sample_example(suite, tag, rng, CANVAS)
        if record["prompt"] not in seen:
            seen.add(record["prompt"])
            examples.append((record, scene))
    return examples


def _run(model, examples, max_rounds, batch_size=64, seed=0):
    records = [record for record, _ in examples]
    prompts = [r["prompt"] for r in records]
    return run_r3(model, records, prompts, SAMPLING, max_rounds, seed, strict, CANVAS, batch_size)


def test_perfect_model_scores_one_and_blank_model_zero_on_every_tag():
    for suite, tags in SUITES.items():
        examples = [e for i, tag in enumerate(tags) for e in _examples(suite, tag, 2, seed=i)]
        tags_per_row = [record["tag"] for record, _ in examples]
        perfect = generation_by_round(_run(SceneModel(examples), examples, 0), tags_per_row)
        blank = generation_by_round(_run(BlankModel(examples), examples, 0), tags_per_row)
        assert perfect == [{"overall": 1.0, "per_tag": {t: 1.0 for t in sorted(tags)}}]
        assert blank == [{"overall": 0.0, "per_tag": {t: 0.0 for t in sorted(tags)}}]


def test_overall_is_the_mean_of_tag_accuracies_not_of_rows():
    result = accuracy_by_tag(np.array([1, 0, 0, 1]), ["a", "a", "a", "b"])
    assert result["per_tag"] == {"a": pytest.approx(1 / 3), "b": 1.0}
    assert result["overall"] == pytest.approx(2 / 3)


def test_stopping_at_once_keeps_every_round_identical():
    examples = _examples("geneval_pp", "multi_object_count_attr", 4)
    model = SceneModel(examples, missing={e[0]["prompt"]: i % 2 for i, e in enumerate(examples)}, always_stop=True)
    trace = _run(model, examples, 3)
    assert model.edits == 0 and len(trace.rounds) == 4
    for later in trace.rounds[1:]:
        np.testing.assert_array_equal(later.images, trace.rounds[0].images)
        np.testing.assert_array_equal(later.scores, trace.rounds[0].scores)
        assert later.finished.all()
    assert [r["accuracy"] for r in scaling_metrics(trace)] == [0.5] * 4
    assert [(r["improved"], r["worse"], r["unchanged"]) for r in scaling_metrics(trace)] == [(0, 0, 4)] * 4


def test_fixing_one_error_per_round_improves_a_known_number_of_rows():
    examples = _examples("geneval_pp", "multi_object_count_attr", 8)  # >= 4 objects each
    model = SceneModel(examples, missing={e[0]["prompt"]: i % 4 for i, e in enumerate(examples)})
    trace = _run(model, examples, 3, batch_size=3)
    rows = scaling_metrics(trace)
    assert [r["accuracy"] for r in rows] == [0.25, 0.5, 0.75, 1.0]
    assert [r["finished"] for r in rows] == [0.0, 0.25, 0.5, 0.75]
    assert [(r["improved"], r["worse"], r["unchanged"]) for r in rows] == [(0, 0, 8), (2, 0, 6), (2, 0, 6), (2, 0, 6)]
    assert model.edits == 6 + 4 + 2
    assert trace.rounds[1].texts[0] == STOP_ANSWER and trace.rounds[2].texts[0] == ""  # row 0 stopped in round 1
    per_round = generation_by_round(trace, ["multi_object_count_attr"] * 8)
    assert [r["overall"] for r in per_round] == [0.25, 0.5, 0.75, 1.0]


def test_noise_is_fixed_per_row_and_round_whatever_the_batching():
    examples = _examples("geneval", "counting", 5)
    first, second = _run(NoiseModel(), examples, 2, batch_size=2), _run(NoiseModel(), examples, 2, batch_size=5)
    for a, b in zip(first.rounds, second.rounds, strict=True):
        np.testing.assert_array_equal(a.images, b.images)
    assert not np.array_equal(first.rounds[0].images[0], first.rounds[0].images[1])  # rows get their own noise
    other_seed = _run(NoiseModel(), examples, 0, seed=1)
    assert not np.array_equal(other_seed.rounds[0].images, first.rounds[0].images)


def test_run_r3_rejects_sde_sampling():
    examples = _examples("geneval", "counting", 1)
    with pytest.raises(ValueError, match="sde_steps"):
        run_r3(NoiseModel(), [examples[0][0]], ["x"], SamplingConfig(steps=2, sde_steps=(0,)), 1, 0, strict, CANVAS)


def test_score_fn_sends_foreign_classes_to_the_judge():
    (record, scene), = _examples("geneval", "single_object", 1)
    foreign = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}
    images = np.stack([render(scene), render(scene)])
    calls = []

    def judge(images, records, **ctx):
        calls.append([r["prompt"] for r in records])
        return np.full(len(records), 0.7)

    assert make_score_fn(judge)(images, [record, foreign]).tolist() == [1.0, 0.7]
    assert calls == [["a photo of a dog"]]
    with pytest.raises(UnsupportedClassError, match="judge"):
        strict(images, [record, foreign])


class AnswerModel:
    """Answers VQA from a question -> answer table and judges ITA from a prompt -> yes/no table, optionally wrong."""

    def __init__(self, answers: dict[str, str], aligned: dict[str, bool], wrong: set[str] = frozenset()) -> None:
        self.answers, self.aligned, self.wrong = answers, aligned, wrong

    def answer(self, images, questions, max_new_tokens=16):
        return SimpleNamespace(texts=["wrong" if q in self.wrong else self.answers[q] for q in questions])

    def judge(self, images, prompts):
        return torch.tensor([float(self.aligned[p] != (p in self.wrong)) for p in prompts])


def test_ita_and_vqa_accuracy_per_category():
    n = 6
    frame = pl.DataFrame({
        "suite": ["geneval"] * n, "tag": ["counting", "counting", "colors", "colors", "colors", "colors"],
        "prompt": [f"p{i}" for i in range(n)], "question": [f"q{i}" for i in range(n)],
        "answer": ["yes", "no", "yes", "no", "two", "red"],
        "category": ["count", "count", "color", "color", "size", "size"],
    })
    table = Table(frame, {"image": torch.zeros(n, 3, CANVAS, CANVAS, dtype=torch.uint8)})
    answers = dict(zip(frame["question"], frame["answer"]))
    aligned = {p: a == "yes" for p, a in zip(frame["prompt"], frame["answer"])}
    perfect = understanding(AnswerModel(answers, aligned), table, table, batch_size=4)
    assert perfect["vqa"] == {"overall": 1.0, "per_category": {"color": 1.0, "count": 1.0, "size": 1.0}, "n": n}
    assert perfect["ita"]["overall"] == 1.0 and perfect["ita"]["n"] == n
    everything = set(answers) | set(aligned)
    wrong = understanding(AnswerModel(answers, aligned, everything), table, table)
    assert wrong["vqa"]["overall"] == 0.0 and wrong["ita"]["overall"] == 0.0
    mixed = understanding(AnswerModel(answers, aligned, {"q0", "q2", "q3", "p0"}), table, table)
    assert mixed["vqa"]["per_category"] == {"color": 0.0, "count": 0.5, "size": 1.0}
    assert mixed["vqa"]["overall"] == pytest.approx(3 / 6)
    assert mixed["ita"]["per_tag"] == {"geneval/colors": 1.0, "geneval/counting": 0.5}


HOT = SamplingConfig(steps=2, temperature=1.0)


def _samples(model, examples, n, batch_size=64, seed=0):
    records = [record for record, _ in examples]
    return sample_best_of_n(model, records, [r["prompt"] for r in records], HOT, n, seed, strict, CANVAS, batch_size)


def test_images_are_counted_from_the_rounds_not_assumed():
    examples = _examples("geneval_pp", "multi_object_count_attr", 8)
    stopping = SceneModel(examples, missing={e[0]["prompt"]: i % 2 for i, e in enumerate(examples)}, always_stop=True)
    trace = _run(stopping, examples, 3)
    assert [trace.images_generated(k).tolist() for k in range(4)] == [[1] * 8] * 4  # stops at round 0: one image
    missing = [i % 4 for i in range(8)]
    fixing = SceneModel(examples, missing={e[0]["prompt"]: m for e, m in zip(examples, missing)})
    trace = _run(fixing, examples, 3, batch_size=3)
    for k in range(4):  # one edit per missing object, then the stop answer: no image
        assert trace.images_generated(k).tolist() == [1 + min(m, k) for m in missing]
    assert trace.images_generated(3).sum() == 8 + fixing.edits
    assert [r.generated.sum() for r in trace.rounds] == [8, 6, 4, 2]


def test_equal_compute_counts_r3_images_and_compares_with_best_of_n():
    examples = _examples("geneval_pp", "multi_object_count_attr", 8)
    tags = ["multi_object_count_attr"] * 8
    model = SamplingSceneModel(examples)
    trace = _run(model, examples, 3)  # greedy 'wrong' at round 0, fixed in round 1, stops in round 2
    rows = equal_compute(trace, _samples(model, examples, 4), tags)
    assert [r["images"] for r in rows] == [1, 2, 3, 4]
    assert [r["r3"] for r in rows] == [0.0, 1.0, 1.0, 1.0]
    assert [r["r3_images"] for r in rows] == [1.0, 2.0, 2.0, 2.0]  # the stop round generates nothing
    assert all(r["best_of_n"] == r["oracle"] for r in rows)  # a judge that agrees with the verifier picks as it does
    with pytest.raises(ValueError, match="samples"):
        equal_compute(trace, _samples(model, examples, 2), tags)


def test_best_of_n_picks_by_the_models_judge_not_the_verifier():
    examples = _examples("geneval_pp", "multi_object_count_attr", 16)
    honest = _samples(SamplingSceneModel(examples), examples, 4, batch_size=5)
    contrary = _samples(SamplingSceneModel(examples, contrary=True), examples, 4, batch_size=5)
    np.testing.assert_array_equal(honest.scores, contrary.scores)  # the same samples, judged the other way round
    for n in range(1, 5):
        oracle = oracle_correct(honest, n)
        np.testing.assert_array_equal(best_of_n_correct(honest, n), oracle)
        wrong_pick = best_of_n_correct(contrary, n)
        assert (oracle >= wrong_pick).all()
        np.testing.assert_array_equal(wrong_pick, (honest.scores[:, :n] >= 1).all(axis=1))  # right only if all are
    single, ceiling = best_of_n_correct(honest, 1).mean(), oracle_correct(honest, 4).mean()
    assert best_of_n_correct(contrary, 4).mean() < single < ceiling


def test_judge_picks_the_first_best_among_the_first_n_samples():
    judged = np.array([[0.2, 0.9, 0.9], [0.7, 0.1, 0.8]])
    assert judge_picks(judged, 1).tolist() == [0, 0]
    assert judge_picks(judged, 2).tolist() == [1, 0]
    assert judge_picks(judged, 3).tolist() == [1, 2]
    samples = Samples(judged, np.array([[1.0, 0.0, 1.0], [0.0, 1.0, 0.5]]))
    assert best_of_n_correct(samples, 1).tolist() == [True, False]
    assert best_of_n_correct(samples, 3).tolist() == [False, False]
    assert oracle_correct(samples, 1).tolist() == [True, False] and oracle_correct(samples, 3).tolist() == [True, True]


class JudgingNoiseModel(NoiseModel):
    """NoiseModel whose judge rates an image by its mean brightness."""

    def judge(self, images, prompts):
        return images.mean(dim=(1, 2, 3))


def test_best_of_n_is_deterministic_and_sample_j_does_not_depend_on_n_or_batching():
    examples = _examples("geneval_pp", "multi_object_count_attr", 5)
    first, again = _samples(JudgingNoiseModel(), examples, 3, batch_size=2), _samples(JudgingNoiseModel(), examples, 3)
    np.testing.assert_array_equal(first.judged, again.judged)
    np.testing.assert_array_equal(_samples(JudgingNoiseModel(), examples, 2).judged, first.judged[:, :2])
    assert len(np.unique(first.judged)) == first.judged.size  # every (row, sample) has its own noise
    assert not np.array_equal(_samples(JudgingNoiseModel(), examples, 3, seed=1).judged, first.judged)
    rows = np.arange(3)
    assert not torch.equal(sample_noise(rows, CANVAS, 0, 0), noise_for(rows, CANVAS, 0, 0))  # not the R3 loop's noise
    sampled = SamplingSceneModel(examples)
    scores = [_samples(model, examples, 4, batch_size=2).scores for model in (sampled, SamplingSceneModel(examples))]
    np.testing.assert_array_equal(*scores)
    assert sampled.generated == 5 * 4


def test_best_of_n_needs_sampled_reasoning():
    examples = _examples("geneval_pp", "multi_object_count_attr", 2)
    records = [record for record, _ in examples]
    with pytest.raises(ValueError, match="temperature"):
        sample_best_of_n(SamplingSceneModel(examples), records, [r["prompt"] for r in records], SAMPLING, 2, 0, strict,
                         CANVAS)


def test_reflection_outcomes_count_what_each_round_did_with_wrong_and_right_images():
    examples = _examples("geneval_pp", "multi_object_count_attr", 8)  # row i misses i % 4 objects; one fixed a round
    model = SceneModel(examples, missing={e[0]["prompt"]: i % 4 for i, e in enumerate(examples)})
    outcomes = reflection_outcomes(_run(model, examples, 3, batch_size=3), ["multi_object_count_attr"] * 8)
    assert outcomes["outcomes"] == {"missed": 0, "fixed": 6, "edit_failed": 6, "kept": 6, "kept_edited": 0,
                                    "broke": 0}
    assert (outcomes["stop_on_wrong"]["overall"], outcomes["stop_on_wrong"]["n"]) == (0.0, 6)
    assert outcomes["stop_on_right"] == {"overall": 1.0, "n": 2, "per_tag": {"multi_object_count_attr": 1.0}}
    stopper = SceneModel(examples[:4], missing={e[0]["prompt"]: i % 2 for i, e in enumerate(examples[:4])},
                         always_stop=True)
    stopped = reflection_outcomes(_run(stopper, examples[:4], 2), ["multi_object_count_attr"] * 4)
    assert stopped["outcomes"] == {"missed": 2, "fixed": 0, "edit_failed": 0, "kept": 2, "kept_edited": 0, "broke": 0}
    assert stopped["stop_on_wrong"]["overall"] == 1.0 and reflection_outcomes(_run(stopper, examples[:4], 0), []) == {}


def test_a_stop_rate_without_images_of_its_kind_is_none():
    examples = _examples("geneval_pp", "multi_object_count_attr", 2)
    model = SceneModel(examples, missing={e[0]["prompt"]: 1 for e in examples})  # every image wrong
    outcomes = reflection_outcomes(_run(model, examples, 1), ["multi_object_count_attr"] * 2)
    assert outcomes["stop_on_right"] == {"overall": None, "n": 0, "per_tag": {}}


def test_sampled_accuracy_is_the_mean_single_sample_accuracy_over_tags():
    scores = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0], [0.0, 0.5, 0.0]])  # (P, N)
    samples = Samples(np.zeros_like(scores), scores)
    tags = ["a", "a", "b", "b"]
    # sample 0: a 0.5, b 0.5; sample 1: a 0.0, b 0.5; sample 2: a 1.0, b 0.5 (0.5 is not aligned)
    assert sampled_accuracy(samples, 1, tags) == 0.5
    assert sampled_accuracy(samples, 3, tags) == pytest.approx((0.5 + 0.25 + 0.75) / 3)
