"""Read prompt files in TIIF-Bench's jsonl format (one record a line).

A record has exactly the keys
    type               the benchmark's category, e.g. "2d_spatial_relation" (scores are reported per type)
    short_description  a prompt
    long_description   the same scene described at length: a second prompt with the same questions
    yn_question_list   yes/no questions about the image
    yn_answer_list     "yes" or "no", one per question: the answer an image following the prompt gets
so a record gives two prompt items, its short and its long description. A file is a TIIF file when its first
record has one of these keys (is_tiif_file; a GenEval record has none of them). Every line is checked as the GenEval
reader (r3.world.geneval_io) checks its lines: a malformed one raises TiifFileError "{path}:{lineno}: <what is
wrong>; <the fix>", an InputError that the stage CLIs print alone with exit code 2.
"""

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r3.errors import InputError
from r3.world.geneval_io import json_lines

RECORD_KEYS = ("type", "short_description", "long_description", "yn_question_list", "yn_answer_list")
"""The keys of a TIIF record, all required, no others."""

ANSWERS = ("yes", "no")

DESCRIPTIONS = ("short", "long")
"""The two prompts of a record: f"{description}_description"."""


class TiifFileError(InputError):
    """A malformed line of a TIIF file; the message is "{path}:{lineno}: <what is wrong>; <the fix>"."""


@dataclass(frozen=True)
class TiifRecord:
    """One line of a TIIF file."""

    type: str
    short_description: str
    long_description: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    """"yes" / "no", one per question."""
    line: int
    """Line number in its file (from 1), for messages about the record."""


@dataclass(frozen=True)
class TiifItem:
    """One prompt of a TIIF record: its short or its long description, asked the record's questions."""

    type: str
    description: str
    """"short" or "long" (DESCRIPTIONS)."""
    prompt: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]


def _text_problem(value: Any, where: str, fix: str) -> str | None:
    if not isinstance(value, str):
        return f"{where} is not a string; {fix}"
    if not value.strip():
        return f"{where} is empty; {fix}"
    return None


def _list_problem(value: Any, key: str) -> str | None:
    if not isinstance(value, list):
        return f"'{key}' is not a list; give a JSON list of strings"
    if not value:
        return f"'{key}' is empty; a record needs at least one question and its answer"
    return None


def record_problem(record: Any) -> str | None:
    """What is wrong with a TIIF record (one line ending with the fix), or None if it is well formed."""
    if not isinstance(record, dict):
        return "record is not a JSON object; write one object per line"
    known = ", ".join(RECORD_KEYS)
    if unknown := [k for k in record if k not in RECORD_KEYS]:
        return f"unknown key {unknown[0]!r} (a TIIF record has exactly {known}); remove or rename it"
    if missing := [k for k in RECORD_KEYS if k not in record]:
        return f"missing key {missing[0]!r} (a TIIF record has exactly {known}); add it"
    for key in ("type", "short_description", "long_description"):
        if problem := _text_problem(record[key], f"'{key}'", "write it as a non-empty string"):
            return problem
    questions, answers = record["yn_question_list"], record["yn_answer_list"]
    if problem := _list_problem(questions, "yn_question_list") or _list_problem(answers, "yn_answer_list"):
        return problem
    if len(questions) != len(answers):
        return (f"'yn_question_list' has {len(questions)} questions but 'yn_answer_list' {len(answers)} answers; "
                "give one answer per question")
    for i, question in enumerate(questions):
        if problem := _text_problem(question, f"yn_question_list[{i}]", "write the question or remove it and its "
                                    "answer"):
            return problem
    for i, answer in enumerate(answers):
        if answer not in ANSWERS:
            return f"yn_answer_list[{i}] {answer!r} is not 'yes' or 'no'; answer each question with yes or no"
    return None


def read_tiif_file(path: str | Path) -> list[TiifRecord]:
    """Records of a TIIF jsonl file; blank lines are skipped, a malformed line raises TiifFileError."""
    records = []
    for lineno, record in json_lines(path, TiifFileError, "TIIF file not found (fix the path)",
                                     "; write one JSON object per line"):
        if problem := record_problem(record):
            raise TiifFileError(f"{path}:{lineno}: {problem}")
        records.append(TiifRecord(type=record["type"], short_description=record["short_description"],
                                  long_description=record["long_description"],
                                  questions=tuple(record["yn_question_list"]),
                                  answers=tuple(record["yn_answer_list"]), line=lineno))
    return records


def write_tiif_file(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """One record a line, keys in RECORD_KEYS order; ValueError (naming the record) for a record that
    read_tiif_file would refuse, so that every file written here reads back."""
    lines = []
    for i, record in enumerate(records):
        if problem := record_problem(record):
            raise ValueError(f"write_tiif_file: record {i}: {problem}")
        lines.append(json.dumps({key: record[key] for key in RECORD_KEYS}))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def is_tiif_file(path: str | Path) -> bool:
    """The first non-blank line of the file is a JSON object with a TIIF key; False for a file that cannot be read
    so (the GenEval reader then names what is wrong with it)."""
    try:
        with open(path, encoding="utf-8") as lines:
            first = next((line for line in lines if line.strip()), "")
        record = json.loads(first)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(record, dict) and any(key in RECORD_KEYS for key in record)


def tiif_items(records: list[TiifRecord]) -> list[TiifItem]:
    """The prompt items of the records: each record's short then its long description, records in file order."""
    return [TiifItem(type=r.type, description=d, prompt=getattr(r, f"{d}_description"), questions=r.questions,
                     answers=r.answers) for r in records for d in DESCRIPTIONS]


def prompt_records(items: Sequence[TiifItem]) -> list[dict[str, Any]]:
    """The items as prompt records: {"prompt", "tag": the type, "questions", "answers"}, the records the R3 loop, the
    tiif reward (r3.world.tiif_exact.exact_scores) and the judge reward (which asks them their own questions) take."""
    return [{"prompt": i.prompt, "tag": i.type, "questions": list(i.questions), "answers": list(i.answers)}
            for i in items]
