"""Every input a stage reads fails the same way: exit code 2, one line on stderr naming the culprit (and the fix),
no output written. Stages are called in-process on tiny inputs in a temporary project directory."""

import hashlib
import http.server
import json
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
import torch

from flows import evaluate, rl, sft, synth
from r3 import paths
from r3.config import BaseConfig
from r3.errors import InputError
from r3.data.synth import SPLITS, TABLES, SynthConfig, build_table, heldout_pool
from r3.data.tiif_suite import write_suite
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.world.tiif_io import read_tiif_file
from r3.world.vocabulary import vocabulary

BASE = BaseConfig(num_threads=1)
MODEL = TinyConfig(patch=8, lm_dim=32, lm_layers=1, lm_heads=2, lm_mlp=64, head_width=32, head_layers=1, head_heads=2)
PARAMS = """\
base: {num_threads: 1}
synth: {}
sft: {}
rl: {}
evaluate: {per_tag: 1, max_rounds: 0, sampling: {steps: 2, temperature: 0.0, max_new_tokens: 4}}
"""
DOG = {"tag": "single_object", "include": [{"class": "dog", "count": 1}], "prompt": "a photo of a dog"}
PP_KEY = {"tag": "spatial_count_attr", "include": [{"class": "circle", "count": 3, "region": "left"},
          {"class": "square", "count": 1, "shade": "dark"}], "prompt": "A photo of three circles on the left"}
PP_REGION = {"tag": "spatial_count_attr", "include": [{"class": "circle", "count": 1, "region": "center"}],
             "prompt": "A photo of one circles on the center"}
STAGES = {"synth": synth.main, "sft": sft.main, "rl": rl.main, "evaluate": evaluate.main}
TIIF = {"type": "color", "short_description": "A red circle.", "long_description": "One small red circle.",
        "yn_question_list": ["Is there a circle in the image?", "Is the circle red?", "Is the circle blue?"],
        "yn_answer_list": ["yes", "yes", "no"]}  # fmt: skip
# TIIF-Bench's own kind of record (COCO classes, as the R3 reference repo's test_TIIF.jsonl): only a judge scores it
COCO_TIIF = [
    {"type": "2d_spatial_relation", "short_description": "A lamp to the right of a sofa.",
     "long_description": "In a quiet living room a tall lamp stands to the right of an old sofa.",
     "yn_question_list": ["Is there a lamp in the image?", "Is there a sofa in the image?",
                          "Is the lamp on the right of the sofa?"], "yn_answer_list": ["yes", "yes", "yes"]},
    {"type": "color", "short_description": "A red bus beside a yellow fire hydrant.",
     "long_description": "A bright red double-decker bus waits at the kerb beside a yellow fire hydrant.",
     "yn_question_list": ["Is there a bus in the image?", "Is the bus red?", "Is the fire hydrant yellow?"],
     "yn_answer_list": ["yes", "yes", "yes"]},
    {"type": "counting", "short_description": "Three dogs and no frisbee.",
     "long_description": "Three dogs sit on a lawn; nobody has brought them a frisbee.",
     "yn_question_list": ["Are there three dogs in the image?", "Is there a frisbee in the image?"],
     "yn_answer_list": ["yes", "no"]},
]  # fmt: skip


def jsonl(*records: dict) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A project directory with tiny synth tables and TIIF suite, an SFT and an RL checkpoint and a params file."""
    root = tmp_path_factory.mktemp("project")
    cfg = SynthConfig(train_per_tag=1, heldout_per_tag=1, train_pairs=4, heldout_pairs_per_tag=2, candidates_per_tag=20)
    pool = heldout_pool(BASE, cfg)
    for split in SPLITS:
        for table in TABLES:
            build_table(table, split, BASE, cfg, pool, root / paths.SYNTH / split / f"{table}.parquet")
    write_suite(BASE, {"train": 1, "heldout": 1}, root / paths.SYNTH_TIIF)
    torch.manual_seed(0)
    model = TinyUnifiedModel(MODEL, build_tokenizer(vocabulary()))
    model.save_pretrained(root / paths.SFT_CHECKPOINT)
    model.save_pretrained(root / paths.RL_CHECKPOINT)
    (root / "params.yaml").write_text(PARAMS)
    return root


@pytest.fixture()
def project(template, tmp_path, monkeypatch) -> Path:
    root = tmp_path / "project"
    shutil.copytree(template, root)
    monkeypatch.chdir(root)
    return root


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def rewrite_table(path: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> None:
    change(pl.read_parquet(path)).write_parquet(path)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def rewrite_config(directory: Path, **update) -> None:
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, **update}))


TRAIN, HELD, TIIF_DIR = paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT, paths.SYNTH_TIIF
SFT, RL = paths.SFT_CHECKPOINT, paths.RL_CHECKPOINT
NO_CHANGE = lambda root: None  # noqa: E731
CASES = [
    # params and the --params file
    ("synth", ["--params", "missing.yaml"], NO_CHANGE, r"missing\.yaml: params file not found"),
    ("synth", [], lambda r: (r / "params.yaml").write_text("base: [unclosed"), r"params\.yaml:1: not valid YAML"),
    ("synth", [], lambda r: (r / "params.yaml").write_text("- a list"), r"params\.yaml: top level must be a mapping"),
    ("synth", [], lambda r: (r / "params.yaml").write_text("nope: {}"), r"params\.yaml: unknown section 'nope'"),
    ("synth", ["-S", "synth.heldout_fraction=1.5"], NO_CHANGE, r"synth\.heldout_fraction: Input should be less than 1"),
    ("sft", ["-S", "sft.no_such_key=1"], NO_CHANGE, r"sft\.no_such_key: unknown key"),
    ("synth", ["-S", "base.seed=abc"], NO_CHANGE, r"base\.seed: Input should be a valid integer"),
    ("synth", ["-S", "seed=1"], NO_CHANGE, r"-S seed=1: expected section\.key=value"),
    # synth tables
    ("sft", [], lambda r: (r / TRAIN / "editing.parquet").unlink(), r"train/editing\.parquet: table not found; run `dvc repro synth`"),
    ("sft", [], lambda r: truncate(r / TRAIN / "vqa.parquet"), r"train/vqa\.parquet: not a readable Parquet table .*dvc repro synth"),
    ("sft", [], lambda r: corrupt(r / TRAIN / "enrichment.parquet"), r"train/enrichment\.parquet: (not a readable Parquet table|column 'image' row \d+: image does not decode)"),
    ("sft", [], lambda r: (r / HELD / "ita.parquet").write_text("suite,tag\n"), r"heldout/ita\.parquet: not a readable Parquet"),
    ("sft", [], lambda r: rewrite_table(r / TRAIN / "ita.parquet", lambda f: f.drop("prompt")),
     r"train/ita\.parquet: column 'prompt' is missing"),
    ("sft", [], lambda r: rewrite_table(r / TRAIN / "reflection.parquet", lambda f: f.with_columns(pl.lit(1).alias("target"))),
     r"train/reflection\.parquet: column 'target' is Int32, expected String"),
    ("sft", [], lambda r: rewrite_table(r / TRAIN / "vqa.parquet", lambda f: f.with_columns(pl.lit(b"junk").alias("image"))),
     r"train/vqa\.parquet: column 'image' holds an image that is not a PNG"),
    ("rl", [], lambda r: (r / HELD / "reflection.parquet").unlink(), r"heldout/reflection\.parquet: table not found"),
    ("evaluate", [], lambda r: truncate(r / HELD / "prompts.parquet"), r"heldout/prompts\.parquet: not a readable Parquet"),
    # the synth TIIF suite: read by evaluate, and by rl with rl.prompts: tiif
    ("evaluate", [], lambda r: (r / TIIF_DIR / "heldout.jsonl").unlink(),
     r"data/synth/tiif/heldout\.jsonl: TIIF suite not found; run `dvc repro synth`"),
    ("evaluate", [], lambda r: (r / TIIF_DIR / "heldout.jsonl").write_text(
        jsonl({**TIIF, "yn_answer_list": ["maybe"] * 3})), r"tiif/heldout\.jsonl:1: yn_answer_list\[0\] 'maybe' is not"),
    ("rl", ["-S", "rl.prompts=tiif", "-S", "rl.reward.name=tiif"], lambda r: shutil.rmtree(r / TIIF_DIR),
     r"data/synth/tiif/train\.jsonl: TIIF suite not found; run `dvc repro synth`"),
    # the tiif reward without TIIF prompts, and TIIF prompts with a GenEval reward
    ("rl", ["-S", "rl.reward.name=tiif"], NO_CHANGE, r"rl\.reward 'tiif' scores TIIF prompt records, but rl\.prompts is "
     r"'synth': set rl\.prompts=tiif"),
    ("rl", ["-S", "rl.prompts=tiif"], NO_CHANGE, r"rl\.prompts is 'tiif', but rl\.reward 'verifier' scores GenEval "
     r"records: set rl\.reward\.name=tiif"),
    # checkpoints
    ("rl", [], lambda r: shutil.rmtree(r / SFT), r"data/sft/checkpoint: checkpoint not found; .*dvc checkout"),
    ("rl", [], lambda r: (r / SFT / "config.json").unlink(), r"sft/checkpoint/config\.json: checkpoint config not found"),
    ("rl", [], lambda r: (r / SFT / "config.json").write_text("{not json"), r"sft/checkpoint/config\.json: not a model config"),
    ("rl", [], lambda r: (r / SFT / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64})),
     r"sft/checkpoint/config\.json: not a model config of this project \(tiny\.model_type: Extra inputs"),
    ("rl", [], lambda r: rewrite_config(r / SFT, lm_mlp=96), r"data/sft/checkpoint: checkpoint does not load \(weights .* do not fit"),
    ("rl", [], lambda r: torch.save({"w": torch.zeros(2)}, r / SFT / "model.safetensors"),
     r"data/sft/checkpoint: checkpoint does not load"),
    ("rl", [], lambda r: (r / SFT / "tokenizer.json").unlink(), r"data/sft/checkpoint: checkpoint lacks tokenizer\.json"),
    ("rl", [], lambda r: (r / SFT / "model.safetensors").unlink(), r"data/sft/checkpoint: checkpoint lacks model\.safetensors"),
    ("evaluate", [], lambda r: rewrite_config(r / RL, lm_dim=48), r"data/rl/checkpoint: checkpoint does not load \(checkpoint .* different TinyConfig"),
    ("evaluate", [], lambda r: (r / RL / "config.json").write_text(json.dumps({"backend": "tpu"})),
     r"rl/checkpoint/config\.json: not a model config of this project"),
    # GenEval prompt files
    ("evaluate", ["-S", "evaluate.prompts=missing.jsonl"], NO_CHANGE, r"missing\.jsonl: prompt file not found"),
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_text('{"tag": "x"\n'),
     r"p\.jsonl:1: invalid JSON"),
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_text('\n{"tag": "x", "prompt": "a"}\n'),
     r"p\.jsonl:2: 'include' must be a non-empty list"),
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_bytes(b'{"tag": "\xff"}\n'),
     r"p\.jsonl: not UTF-8 text"),
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_text(json.dumps(DOG) + "\n"),
     r"p\.jsonl: 1 of 1 prompts are outside ShapeWorld .* evaluate\.judge is not set"),
    # GenEval++ records: a key or value the verifier does not know is refused, naming the line and the key
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_text(json.dumps(PP_KEY) + "\n"),
     r"p\.jsonl:1: include\[1\] has an unknown key 'shade' \(the verifier knows class, count, color, size, position, "
     r"region\); remove or rename it"),
    ("evaluate", ["-S", "evaluate.prompts=p.jsonl"], lambda r: (r / "p.jsonl").write_text(json.dumps(PP_REGION) + "\n"),
     r"p\.jsonl:1: include\[0\] 'region' 'center' is not one of left, right, above, below"),
    # TIIF-Bench files: every line is read first, a malformed one named with its fix
    ("evaluate", ["-S", "evaluate.prompts=t.jsonl"],
     lambda r: (r / "t.jsonl").write_text(jsonl(TIIF, {**TIIF, "yn_answer_list": ["yes"]}, TIIF)),
     r"t\.jsonl:2: 'yn_question_list' has 3 questions but 'yn_answer_list' 1 answers; give one answer per question"),
    ("evaluate", ["-S", "evaluate.prompts=t.jsonl"], lambda r: (r / "t.jsonl").write_text(jsonl(TIIF, TIIF) + "{"),
     r"t\.jsonl:3: invalid JSON .*; write one JSON object per line"),
    ("evaluate", ["-S", "evaluate.prompts=t.jsonl"], lambda r: (r / "t.jsonl").write_text(jsonl({**TIIF, "id": 1})),
     r"t\.jsonl:1: unknown key 'id' \(a TIIF record has exactly type, .*\); remove or rename it"),
    ("evaluate", ["-S", "evaluate.prompts=t.jsonl", "-S", "evaluate.judge={name: judge, params: {url: http://x/v1, "
                  "model: m, mode: strict}}"], lambda r: (r / "t.jsonl").write_text(jsonl(*COCO_TIIF)),
     r"t\.jsonl:1: .* needs the judge reward in partial mode .* evaluate\.judge is 'judge' in mode 'strict'"),
]


@pytest.mark.parametrize("stage, argv, damage, message", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_bad_input_gives_one_line_exit_2_and_writes_nothing(project, capsys, stage, argv, damage, message):
    damage(project)
    before = snapshot(project)
    assert STAGES[stage](argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert re.search(message, err), err
    assert snapshot(project) == before


def test_a_coco_tiif_file_reads_but_stops_evaluate_naming_the_judge_setting(project, capsys):
    path = project / "tiif_coco.jsonl"
    path.write_text(jsonl(*COCO_TIIF))
    records = read_tiif_file(path)  # every line parses
    assert [(r.type, r.line, len(r.questions)) for r in records] == [("2d_spatial_relation", 1, 3), ("color", 2, 3),
                                                                     ("counting", 3, 2)]
    before = snapshot(project)
    assert evaluate.main(["-S", f"evaluate.prompts={path.name}"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: {path.name}:1: question 'Is there a lamp in the image?' is outside the ShapeWorld "
                          "question grammar (8 of 8 questions of the file are)"), err
    assert "evaluate.judge is not set; set evaluate.judge to {name: judge, params: {url: ..., model: ...}}" in err
    assert snapshot(project) == before


class _Judge(http.server.BaseHTTPRequestHandler):
    """Answers by the first path component: /401, /503, /notjson, /slow."""

    def do_POST(self) -> None:  # noqa: N802
        kind = self.path.split("/")[1]
        if kind == "slow":
            time.sleep(1.0)
        status = {"401": 401, "503": 503}.get(kind, 200)
        body = b"this is not json" if kind in ("notjson", "slow") else b"{}"
        try:
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up waiting (the timeout case)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def judge_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


JUDGE_CASES = [
    ("refused", r"unavailable after 2 attempt\(s\)"),
    ("401", r"rejected the request: HTTP 401"),
    ("503", r"unavailable after 2 attempt\(s\): HTTP 503"),
    ("notjson", r"answered something that is not JSON"),
    ("slow", r"unavailable after 2 attempt\(s\): .*timed out"),
]


@pytest.mark.parametrize("kind, message", JUDGE_CASES, ids=[c[0] for c in JUDGE_CASES])
def test_judge_endpoint_failure_gives_one_line_exit_2_and_writes_nothing(project, capsys, judge_url, kind, message):
    """Runs the evaluate flow (Prefect task included) until the judge is asked; the error is printed once."""
    url = f"http://127.0.0.1:{closed_port()}/v1" if kind == "refused" else f"{judge_url}/{kind}/v1"
    (project / "p.jsonl").write_text(json.dumps(DOG) + "\n")
    judge = {"name": "judge", "params": {"url": url, "model": "m", "max_retries": 1, "backoff_s": 0.01,
                                         "timeout_s": 0.3}}
    before = snapshot(project)
    argv = ["-S", "evaluate.prompts=p.jsonl", "-S", f"evaluate.judge={json.dumps(judge)}"]
    assert evaluate.main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: judge http://127.0.0.1:"), err
    assert re.search(message, lines[0]) and "check the judge's url" in lines[0], err
    assert snapshot(project) == before


def test_debug_flag_and_env_show_the_traceback(project, monkeypatch):
    (project / TRAIN / "vqa.parquet").unlink()
    with pytest.raises(InputError, match="train/vqa.parquet: table not found"):
        sft.main(["--debug"])
    monkeypatch.setenv("R3FLOW_DEBUG", "1")
    with pytest.raises(InputError, match="train/vqa.parquet: table not found"):
        sft.main([])
