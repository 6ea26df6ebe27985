"""GenEval / GenEval++ prompt files: round trip, malformed lines, classes outside ShapeWorld."""

import json
import re

import numpy as np
import pytest

from r3.world.geneval_io import PromptFileError, read_prompt_file, write_prompt_file
from r3.world.prompts import SUITES, sample_example
from r3.world.verifier import UnsupportedClassError, verify

# lines in the public GenEval metadata format (evaluation_metadata.jsonl)
PUBLIC_LINES = [
    {"tag": "single_object", "include": [{"class": "bench", "count": 1}], "prompt": "a photo of a bench"},
    {"tag": "counting", "include": [{"class": "clock", "count": 2}], "exclude": [{"class": "clock", "count": 3}],
     "prompt": "a photo of two clocks"},
    {"tag": "position", "include": [{"class": "dog", "count": 1}, {"class": "bird", "count": 1,
     "position": ["right of", 0]}], "prompt": "a photo of a bird right of a dog"},
    {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"}, {"class": "cup", "count": 1,
     "color": "blue"}], "prompt": "a photo of a red car and a blue cup"},
]  # fmt: skip


def test_round_trip_of_sampled_records(tmp_path):
    rng = np.random.default_rng(0)
    records = [sample_example(s, t, rng)[0] for s, tags in SUITES.items() for t in tags]
    path = tmp_path / "nested" / "prompts.jsonl"
    write_prompt_file(path, records)
    assert read_prompt_file(path) == records
    assert len(path.read_text().splitlines()) == len(records)


def test_public_geneval_lines_read_fine_but_verify_refuses_them(tmp_path):
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in PUBLIC_LINES) + "\n\n")  # a trailing blank line
    records = read_prompt_file(path)
    assert records == PUBLIC_LINES
    with pytest.raises(UnsupportedClassError, match="'bench'.*'judge'"):
        verify(np.zeros((32, 32, 3), np.uint8), records[0])


# lines in the public GenEval++ metadata format (Echo-4o's Geneval++.jsonl)
GENEVAL_PP_LINES = [
    {"tag": "spatial_count_attr", "include": [{"class": "clock", "count": 3, "region": "left"},
     {"class": "cat", "count": 1, "region": "right"}],
     "prompt": "A photo of three clocks on the left and one cats on the right"},
    {"tag": "size_spatial_attr", "include": [{"class": "bench", "count": 1, "size": "larger", "region": "above"},
     {"class": "spoon", "count": 1, "size": "smaller", "region": "below"}],
     "prompt": "A photo of a larger bench on the above and a smaller spoon on the below"},
]  # fmt: skip


def test_public_geneval_pp_lines_read_fine(tmp_path):
    path = tmp_path / "Geneval++.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in GENEVAL_PP_LINES) + "\n")
    assert read_prompt_file(path) == GENEVAL_PP_LINES
    with pytest.raises(UnsupportedClassError, match="'clock'.*'judge'"):
        verify(np.zeros((32, 32, 3), np.uint8), GENEVAL_PP_LINES[0])


@pytest.mark.parametrize(
    "bad_line,problem",
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "record is not a JSON object"),
        (json.dumps({"tag": "t", "include": [{"class": "circle", "count": 1}]}), "missing string 'prompt'"),
        (json.dumps({"tag": "t", "include": [], "prompt": "p"}), "'include' must be a non-empty list"),
        (json.dumps({"tag": "t", "include": [{"class": "circle", "count": 0}], "prompt": "p"}),
         "include\\[0\\] has no integer 'count' >= 1"),
        (json.dumps({"tag": "t", "include": [{"count": 1}], "prompt": "p"}), "include\\[0\\] has no string 'class'"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "position": ["above", 0]}], "prompt": "p"}),
         "include\\[0\\] 'position' must be"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1}], "exclude": [{"class": "a"}], "prompt": "p"}),
         "exclude\\[0\\] has no integer 'count'"),
        # a key or value the verifier does not know is refused, never ignored
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "material": "wood"}], "prompt": "p"}),
         "include\\[0\\] has an unknown key 'material' \\(the verifier knows class, count, color, size, position, "
         "region\\); remove or rename it"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1}], "prompt": "p", "id": 7}),
         "record has an unknown key 'id'"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1}], "exlude": [], "prompt": "p"}),
         "record has an unknown key 'exlude'"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "region": "middle"}], "prompt": "p"}),
         "include\\[0\\] 'region' 'middle' is not one of left, right, above, below"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1}], "exclude": [{"class": "a", "count": 2,
                     "region": "left"}], "prompt": "p"}),
         "exclude\\[0\\] has a 'region' \\(only include entries may\\)"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "size": "larger"}], "prompt": "p"}),
         "include\\[0\\] 'size' 'larger' needs another include entry with 'size' 'smaller'"),
        (json.dumps({"tag": "t", "include": [{"class": "a", "count": 1, "size": "larger"}, {"class": "b", "count": 1,
                     "size": "smaller"}], "exclude": [{"class": "a", "count": 2, "size": "larger"}], "prompt": "p"}),
         "exclude\\[0\\] has the relative 'size' 'larger' \\(only include entries may\\)"),
    ],
)  # fmt: skip
def test_malformed_line_names_file_and_line(tmp_path, bad_line, problem):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(PUBLIC_LINES[0]) + "\n\n" + bad_line + "\n")
    with pytest.raises(PromptFileError, match=f"^{re.escape(str(path))}:3: {problem}") as error:
        read_prompt_file(path)
    assert "\n" not in str(error.value)
    assert isinstance(error.value, ValueError)


def test_writer_refuses_malformed_records(tmp_path):
    with pytest.raises(ValueError, match="record 1: missing string 'tag'"):
        write_prompt_file(tmp_path / "x.jsonl", [PUBLIC_LINES[0], {"include": [], "prompt": "p"}])
