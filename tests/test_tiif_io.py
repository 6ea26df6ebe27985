"""TIIF-Bench files: well-formed records read, every malformed line refused with one line naming file and line; written
files read back, a malformed record is not written."""

import json
import re
from pathlib import Path

import pytest

from r3.errors import InputError
from r3.world.tiif_io import (
    TiifFileError,
    TiifItem,
    TiifRecord,
    is_tiif_file,
    prompt_records,
    read_tiif_file,
    tiif_items,
    write_tiif_file,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "tiif_shapeworld.jsonl"

# a line of the benchmark's own kind: COCO-like classes, which only a judge can score
COCO = {"type": "2d_spatial_relation", "short_description": "A lamp stands to the right of a sofa.",
        "long_description": "In a quiet living room a tall lamp stands to the right of an old sofa.",
        "yn_question_list": ["Is there a lamp in the image?", "Is there a sofa in the image?",
                             "Is the lamp on the right of the sofa?"],
        "yn_answer_list": ["yes", "yes", "yes"]}  # fmt: skip


def with_(**changes) -> dict:
    return {**COCO, **changes}


def test_records_read_with_their_line_numbers_and_give_a_short_and_a_long_item(tmp_path):
    path = tmp_path / "tiif.jsonl"
    path.write_text(json.dumps(COCO) + "\n\n" + json.dumps(with_(type="color")) + "\n")
    records = read_tiif_file(path)
    assert records == [
        TiifRecord("2d_spatial_relation", COCO["short_description"], COCO["long_description"],
                   tuple(COCO["yn_question_list"]), ("yes", "yes", "yes"), line=1),
        TiifRecord("color", COCO["short_description"], COCO["long_description"],
                   tuple(COCO["yn_question_list"]), ("yes", "yes", "yes"), line=3),
    ]  # fmt: skip
    items = tiif_items(records)
    assert [(i.type, i.description) for i in items] == [
        ("2d_spatial_relation", "short"), ("2d_spatial_relation", "long"), ("color", "short"), ("color", "long")]
    assert items[1] == TiifItem("2d_spatial_relation", "long", COCO["long_description"],
                                tuple(COCO["yn_question_list"]), ("yes", "yes", "yes"))


def test_the_shapeworld_example_reads():
    records = read_tiif_file(EXAMPLE)
    assert len(records) == len(EXAMPLE.read_text().splitlines()) >= 10
    assert {a for r in records for a in r.answers} == {"yes", "no"}


def test_a_file_is_recognised_as_tiif_by_its_first_record(tmp_path):
    assert is_tiif_file(EXAMPLE)
    path = tmp_path / "p.jsonl"
    path.write_text("\n" + json.dumps({"type": "color", "id": 1}) + "\n{not json\n")
    assert is_tiif_file(path)  # recognised by one key: the reader then names what is wrong
    geneval = {"tag": "single_object", "include": [{"class": "circle", "count": 1}], "prompt": "a photo of a circle"}
    for text in (json.dumps(geneval) + "\n" + json.dumps(COCO), "{not json", "", "[1, 2]"):
        path.write_text(text)
        assert not is_tiif_file(path), text  # left to the GenEval reader and its errors
    path.write_bytes(b"\xff\xfe")
    assert not is_tiif_file(path) and not is_tiif_file(tmp_path / "missing.jsonl")


QUESTIONS = COCO["yn_question_list"]
FIX_KEYS = "a TIIF record has exactly type, short_description, long_description, yn_question_list, yn_answer_list"
MALFORMED = [
    ("{not json", r"invalid JSON \(.*\); write one JSON object per line"),
    ("[1, 2]", "record is not a JSON object; write one object per line"),
    (json.dumps(with_(id=7)), f"unknown key 'id' \\({FIX_KEYS}\\); remove or rename it"),
    (json.dumps({k: v for k, v in COCO.items() if k != "yn_answer_list"}),
     f"missing key 'yn_answer_list' \\({FIX_KEYS}\\); add it"),
    (json.dumps(with_(yn_answer_list=["yes", "no"])),
     "'yn_question_list' has 3 questions but 'yn_answer_list' 2 answers; give one answer per question"),
    (json.dumps(with_(yn_question_list=[QUESTIONS[0], "  ", QUESTIONS[2]])),
     "yn_question_list\\[1\\] is empty; write the question or remove it and its answer"),
    (json.dumps(with_(yn_question_list=[QUESTIONS[0], 3, QUESTIONS[2]])),
     "yn_question_list\\[1\\] is not a string; write the question or remove it and its answer"),
    (json.dumps(with_(yn_question_list=[], yn_answer_list=[])),
     "'yn_question_list' is empty; a record needs at least one question and its answer"),
    (json.dumps(with_(yn_answer_list="yes")), "'yn_answer_list' is not a list; give a JSON list of strings"),
    (json.dumps(with_(yn_answer_list=["yes", "Maybe", "no"])),
     "yn_answer_list\\[1\\] 'Maybe' is not 'yes' or 'no'; answer each question with yes or no"),
    (json.dumps(with_(short_description="")), "'short_description' is empty; write it as a non-empty string"),
    (json.dumps(with_(long_description=None)), "'long_description' is not a string; write it as a non-empty string"),
    (json.dumps(with_(type=2)), "'type' is not a string; write it as a non-empty string"),
]  # fmt: skip


@pytest.mark.parametrize("bad_line,problem", MALFORMED)
def test_a_malformed_line_is_refused_with_one_line_naming_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(COCO) + "\n\n" + bad_line + "\n" + json.dumps(COCO) + "\n")
    with pytest.raises(TiifFileError, match=f"^{re.escape(str(path))}:3: {problem}$") as error:
        read_tiif_file(path)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, InputError)  # the stage CLIs print it alone and exit 2 (flows/cli.py)


def test_a_missing_or_undecodable_file_is_refused(tmp_path):
    with pytest.raises(TiifFileError, match="missing.jsonl: TIIF file not found"):
        read_tiif_file(tmp_path / "missing.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(b'{"type": "\xff"}\n')
    with pytest.raises(TiifFileError, match="latin1.jsonl: not UTF-8 text"):
        read_tiif_file(path)


def test_a_written_file_reads_back_and_a_malformed_record_is_not_written(tmp_path):
    path = tmp_path / "out" / "tiif.jsonl"
    write_tiif_file(path, [with_(type="color"), COCO])
    records = read_tiif_file(path)
    assert [r.type for r in records] == ["color", "2d_spatial_relation"] and records[1].questions == tuple(
        COCO["yn_question_list"])
    assert prompt_records(tiif_items(records[1:]))[1] == {
        "prompt": COCO["long_description"], "tag": "2d_spatial_relation", "questions": COCO["yn_question_list"],
        "answers": COCO["yn_answer_list"]}
    with pytest.raises(ValueError, match=r"^write_tiif_file: record 1: yn_answer_list\[0\] 'maybe' is not 'yes'"):
        write_tiif_file(tmp_path / "bad.jsonl", [COCO, with_(yn_answer_list=["maybe", "yes", "yes"])])
    assert not (tmp_path / "bad.jsonl").exists()
