"""The evaluate stage end to end on tiny untrained models and tiny synth tables: files, determinism, errors."""

import csv
import http.server
import json
import re
import threading
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from flows.evaluate import compared
from r3 import paths
from r3.config import BaseConfig
from r3.data.synth import SynthConfig, build_table, heldout_pool
from r3.data.tiif_suite import TYPES, write_suite
from r3.evals.evaluate import EvaluateConfig, file_suite, first_per_tag, run_evaluate
from r3.evals.report import wilson_interval
from r3.models.interface import SamplingConfig
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.rewards.base import RewardConfig
from r3.world.geneval_io import write_prompt_file
from r3.world.vocabulary import vocabulary
from test_bad_inputs import COCO_TIIF, jsonl

BASE = BaseConfig(num_threads=1)
MODEL = TinyConfig(patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=1, head_heads=2)
CFG = EvaluateConfig(per_tag=1, max_rounds=2, grid_rows=3,
                     sampling=SamplingConfig(steps=2, cfg_scale=1.5, temperature=0.0, max_new_tokens=12))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> tuple[Path, dict[str, Path | None]]:
    """Tiny held-out synth tables and TIIF suite and an (untrained, differently seeded) 'sft' checkpoint."""
    root = tmp_path_factory.mktemp("evaluate")
    synth = SynthConfig(heldout_per_tag=2, heldout_pairs_per_tag=2, candidates_per_tag=60)
    pool = heldout_pool(BASE, synth)
    for table in ("prompts", "vqa", "ita"):
        build_table(table, "heldout", BASE, synth, pool, root / "synth" / "heldout" / f"{table}.parquet")
    write_suite(BASE, {"train": 1, "heldout": 2}, root / "synth" / "tiif")
    torch.manual_seed(1)
    TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).save_pretrained(root / "sft")
    return root / "synth", {"base": None, "sft": root / "sft"}


@pytest.fixture(scope="module")
def runs(inputs, tmp_path_factory):
    synth_dir, checkpoints = inputs
    out = tmp_path_factory.mktemp("runs")
    return [run_evaluate(BASE, CFG, checkpoints, synth_dir, out / name, MODEL) for name in ("first", "second")]


def test_writes_metrics_report_plots_and_figures(runs):
    result = runs[0]
    out = result.report.parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    assert set(metrics["checkpoints"]) == {"base", "sft"} and metrics["reference"] == "sft"
    sft = metrics["checkpoints"]["sft"]
    assert len(sft["generation"]["geneval_pp"]) == 3 and len(sft["generation"]["geneval"]) == 1  # rounds 0..2 / round 0
    assert [r["round"] for r in sft["scaling"]] == [0, 1, 2]
    assert sum(sft["scaling"][1][k] for k in ("improved", "worse", "unchanged")) == 7  # one prompt per GenEval++ tag
    assert metrics["prompts"]["geneval_pp"] == 7 and sft["ita"]["n"] >= 1 and sft["vqa"]["n"] >= 1
    assert "(n = 7)" in result.report.read_text().split("## Headline with 95% intervals", 1)[1].split("##", 1)[0]
    assert 0 <= metrics["headline"]["sft/geneval_pp_r2"] <= 1 and "base/vqa" in metrics["headline"]

    with (out / "plots" / "scaling.csv").open() as f:
        scaling = list(csv.DictReader(f))
    assert list(scaling[0]) == ["round", "base", "sft"] and len(scaling) == 3
    assert [float(r["sft"]) for r in scaling] == [r["accuracy"] for r in sft["scaling"]]
    with (out / "plots" / "tags.csv").open() as f:
        tags = list(csv.DictReader(f))
    assert list(tags[0]) == ["tag", "base", "sft"] and len(tags) == 7 + 6 + 2 * len(TYPES)  # + TIIF short, long

    assert {p.name for p in result.figures} == {"scaling.png", "compute.png", "r3_loop_base.png", "r3_loop_sft.png"}
    grid = Image.open(out / "figures" / "r3_loop_sft.png")
    assert grid.width > 3 * 32 and grid.height > 3 * 32  # 3 rows x 3 rounds of upscaled images
    report = result.report.read_text()
    for heading in ("## Headline", "Table 1.1: GenEval++", "Table 1.2: GenEval", "Table 2.1", "Table 3: VQA",
                    "Inference-time scaling", "sft + R3 (≤2 rounds)", "![scaling](figures/scaling.png)",
                    "R3 against best-of-N at equal compute", "![compute](figures/compute.png)"):
        assert heading in report
    assert set(result.seconds) == {"base", "sft"}


def test_the_synth_tiif_suite_is_scored_per_type_with_intervals_after_round_0(runs, inputs):
    metrics = runs[0].metrics
    assert list(metrics["suites"]) == ["geneval_pp", "geneval", "tiif_short", "tiif_long"]
    assert metrics["suites"]["tiif_short"] == metrics["suites"]["tiif_long"] == list(TYPES)
    assert metrics["prompts"]["tiif_short"] == len(TYPES)  # evaluate.per_tag = 1 of the 2 held-out records per type
    assert metrics["scaling_suite"] == "geneval_pp"
    for name, result in metrics["checkpoints"].items():
        assert len(result["generation"]["tiif_short"]) == len(result["generation"]["tiif_long"]) == 1  # round 0
        for suite, by_type in result["tiif"].items():
            assert {t: s["n"] for t, s in by_type["per_type"].items()} == {t: 1 for t in TYPES}
            assert by_type["overall"]["score"] == metrics["headline"][f"{name}/{suite}"]
            for s in (*by_type["per_type"].values(), by_type["overall"]):
                assert (s["low"], s["high"]) == pytest.approx(wilson_interval(s["score"], s["n"]))
    assert {"sft/tiif_short", "sft/tiif_long", "base/tiif_long"} <= set(metrics["headline"])
    assert "sft/tiif_short_r2" not in metrics["headline"]
    report = runs[0].report.read_text()
    tiif_section = report.split("## TIIF-format suites", 1)[1].split("\n## ", 1)[0]
    assert f"Overall (n = {len(TYPES)})" in tiif_section and "| sft | TIIF long |" in tiif_section
    assert "Generation scores: exact ShapeWorld verifier (strict)." in report
    assert "TIIF scores: the share of a prompt's yes/no questions answered as expected on its image, exactly" in report
    assert f"and TIIF suite ({inputs[0] / 'tiif' / 'heldout.jsonl'})" in report


def test_equal_compute_runs_on_the_trained_checkpoint_with_counted_images(runs):
    out = runs[0].report.parent
    metrics = json.loads((out / "metrics.json").read_text())
    assert "compute" not in metrics["checkpoints"]["base"]  # the untrained model's judge is at chance
    sft = metrics["checkpoints"]["sft"]
    rows = sft["compute"]
    assert [r["images"] for r in rows] == [1, 2, 3]  # N = 1 .. max_rounds + 1
    assert [r["r3"] for r in rows] == [g["overall"] for g in sft["generation"]["geneval_pp"]]
    assert rows[0]["r3_images"] == 1.0 and all(1.0 <= r["r3_images"] <= r["images"] for r in rows)
    finished = [s["finished"] for s in sft["scaling"]]  # a row edits in round k unless it has stopped by then
    assert rows[2]["r3_images"] == pytest.approx(1 + (1 - finished[1]) + (1 - finished[2]))
    assert all(r["oracle"] >= r["best_of_n"] for r in rows)
    assert [r["oracle"] for r in rows] == sorted(r["oracle"] for r in rows)  # more samples never lower the ceiling
    headline = metrics["headline"]
    assert headline["sft/geneval_pp_best_of_3"] == rows[2]["best_of_n"]
    assert headline["sft/geneval_pp_oracle_3"] == rows[2]["oracle"] and "base/geneval_pp_best_of_3" not in headline
    assert headline["sft/geneval_pp_r2_images"] == rows[2]["r3_images"]
    assert headline["sft/geneval_pp_sampled"] == rows[2]["sampled"] and 0.0 <= rows[2]["sampled"] <= rows[2]["oracle"]
    with (out / "plots" / "compute.csv").open() as f:
        compute = list(csv.DictReader(f))
    assert list(compute[0]) == ["images", "sft_r3", "sft_r3_images", "sft_best_of_n", "sft_oracle", "sft_sampled"]
    assert [float(r["sft_oracle"]) for r in compute] == [r["oracle"] for r in rows]


def test_equal_compute_can_be_switched_off(inputs, tmp_path):
    synth_dir, checkpoints = inputs
    result = run_evaluate(BASE, CFG.model_copy(update={"equal_compute": False, "max_rounds": 0}), checkpoints,
                          synth_dir, tmp_path, MODEL)
    assert all("compute" not in r for r in result.metrics["checkpoints"].values())
    assert (tmp_path / "plots" / "compute.csv").read_text().strip() == "images"
    assert "compute.png" not in {p.name for p in result.figures} and "best-of-N" not in result.report.read_text()


def test_two_runs_give_identical_numbers(runs):
    first, second = runs
    assert first.metrics == second.metrics
    for name in ("metrics.json", "report.md", "plots/scaling.csv", "plots/tags.csv", "plots/compute.csv"):
        assert (first.report.parent / name).read_bytes() == (second.report.parent / name).read_bytes()


def test_prompt_file_outside_shapeworld_needs_the_judge_before_any_work(tmp_path):
    path = tmp_path / "geneval.jsonl"
    write_prompt_file(path, [
        {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"},
        {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"},
    ])
    cfg = EvaluateConfig(prompts=path)
    with pytest.raises(ValueError, match=r"1 of 2 prompts .* evaluate\.judge is not set .*'dog'"):
        run_evaluate(BASE, cfg, {"base": None}, tmp_path / "no-synth", tmp_path / "out", MODEL)
    assert not (tmp_path / "out").exists()


TIIF_EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tiif_shapeworld.jsonl"


def test_a_tiif_file_evaluates_its_short_and_long_descriptions_per_type_with_intervals(inputs, tmp_path):
    synth_dir, checkpoints = inputs
    cfg = CFG.model_copy(update={"prompts": TIIF_EXAMPLE, "per_tag": None, "max_rounds": 1})
    result = run_evaluate(BASE, cfg, {"sft": checkpoints["sft"]}, synth_dir, tmp_path, MODEL)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    records = [json.loads(line) for line in TIIF_EXAMPLE.read_text().splitlines()]
    counts = {t: sum(r["type"] == t for r in records) for t in dict.fromkeys(r["type"] for r in records)}
    assert metrics["suites"] == {"tiif_short": list(counts), "tiif_long": list(counts)}
    assert metrics["prompts"] == {"tiif_short": len(records), "tiif_long": len(records)}
    assert metrics["scaling_suite"] == "tiif_short"
    sft = metrics["checkpoints"]["sft"]
    assert len(sft["generation"]["tiif_short"]) == 2 and len(sft["generation"]["tiif_long"]) == 1  # rounds 0..1 / 0
    assert set(sft["tiif"]) == {"tiif_short", "tiif_long"}
    for suite, by_type in sft["tiif"].items():
        assert {t: s["n"] for t, s in by_type["per_type"].items()} == counts
        scores = {t: s["score"] for t, s in by_type["per_type"].items()}
        assert scores == sft["generation"][suite][0]["per_tag"]  # round 0, a mean share per type
        assert by_type["overall"]["score"] == pytest.approx(sum(scores.values()) / len(scores))
        assert by_type["overall"]["n"] == len(records)
        for s in (*by_type["per_type"].values(), by_type["overall"]):
            assert (s["low"], s["high"]) == pytest.approx(wilson_interval(s["score"], s["n"]))
    headline = metrics["headline"]
    assert {"sft/tiif_short", "sft/tiif_short_r1", "sft/tiif_long"} <= set(headline)
    assert headline["sft/tiif_long"] == sft["tiif"]["tiif_long"]["overall"]["score"]
    report = result.report.read_text()
    tiif_section = report.split("## TIIF-format suites", 1)[1].split("\n## ", 1)[0]
    assert f"Overall (n = {len(records)})" in tiif_section and "| sft | TIIF short |" in tiif_section
    assert "| sft | TIIF long |" in tiif_section and "color (n = 2)" in tiif_section
    assert "Table 1.1: TIIF short generation (mean TIIF score per type" in report and "TIIF scores: the share" in report


class YesJudge(http.server.BaseHTTPRequestHandler):
    """A judge endpoint that answers "yes" to every yes/no question it is asked."""

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        text = next(part["text"] for part in body["messages"][0]["content"] if part["type"] == "text")
        asked = len(re.findall(r"^\d+\. ", text.split("Questions:", 1)[1], flags=re.MULTILINE))
        answer = json.dumps({"answers": ["yes"] * asked})
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def yes_judge():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), YesJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield RewardConfig(name="judge", params={"url": f"http://127.0.0.1:{server.server_address[1]}/v1", "model": "m",
                                             "api_key_env": None})
    server.shutdown()


def test_a_tiif_file_outside_shapeworld_is_scored_by_the_judge_answering_its_questions(inputs, tmp_path, yes_judge):
    synth_dir, checkpoints = inputs
    path = tmp_path / "tiif_coco.jsonl"
    path.write_text(jsonl(*COCO_TIIF))
    cfg = CFG.model_copy(update={"prompts": path, "max_rounds": 0, "equal_compute": False, "judge": yes_judge})
    result = run_evaluate(BASE, cfg, {"sft": checkpoints["sft"]}, synth_dir, tmp_path / "out", MODEL)
    expected = {r["type"]: r["yn_answer_list"].count("yes") / len(r["yn_answer_list"]) for r in COCO_TIIF}
    tiif = result.metrics["checkpoints"]["sft"]["tiif"]
    scores = {suite: {t: s["score"] for t, s in by["per_type"].items()} for suite, by in tiif.items()}
    assert scores == {"tiif_short": expected, "tiif_long": expected}  # the judge said yes to every question
    assert "answered as expected on its image, by evaluate.judge" in result.report.read_text()


def test_prompt_file_suite_and_per_tag_limit():
    records = [{"tag": t, "prompt": f"{t} {i}"} for i in range(3) for t in ("counting", "color_attr")]
    assert file_suite(records) == "geneval_pp"
    assert file_suite(records + [{"tag": "two_object"}]) == "geneval"
    assert file_suite(records + [{"tag": "two_object"}, {"tag": "spatial_count_attr"}]) == "custom"
    kept = [r["prompt"] for r in first_per_tag(records, 2)]
    assert kept == ["counting 0", "color_attr 0", "counting 1", "color_attr 1"]


def test_config_rejects_sde_sampling_unknown_suites_and_keys():
    with pytest.raises(ValidationError, match="sde_steps"):
        EvaluateConfig(sampling=SamplingConfig(steps=4, sde_steps=(1,)))
    with pytest.raises(ValidationError, match="scaling_suite"):
        EvaluateConfig(scaling_suite="coco")
    with pytest.raises(ValidationError, match="extra"):
        EvaluateConfig(rounds=3)


def test_untrained_model_is_compared_only_on_request():
    assert compared(EvaluateConfig()) == {"sft": paths.SFT_CHECKPOINT, "rl": paths.RL_CHECKPOINT}
    assert compared(EvaluateConfig(untrained=True)) == {"base": None, "sft": paths.SFT_CHECKPOINT,
                                                        "rl": paths.RL_CHECKPOINT}
