"""Read and write prompt files in the public GenEval / GenEval++ jsonl format (one record a line).

Records keep every key they have; only the structure the verifier relies on is validated:
`tag` and `prompt` strings, a non-empty `include` list of {class, count >= 1, color?, size?,
position?: [relation, index of another include]}, and an optional `exclude` list of {class, count}.
Classes, colours and relations outside ShapeWorld are read fine (the verifier refuses them).
"""

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from r3.errors import InputError


class PromptFileError(InputError):
    """A malformed line of a prompt file; the message is "{path}:{lineno}: <what is wrong>"."""


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _entry_problem(entry: Any, where: str, n_include: int, index: int | None) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is not an object"
    if not isinstance(entry.get("class"), str):
        return f"{where} has no string 'class'"
    if not _is_count(entry.get("count")):
        return f"{where} has no integer 'count' >= 1"
    for key in ("color", "size"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f"{where} '{key}' is not a string"
    position = entry.get("position")
    if position is not None:
        if index is None:
            return f"{where} has a 'position' (only include entries may)"
        ok = (
            isinstance(position, list)
            and len(position) == 2
            and isinstance(position[0], str)
            and isinstance(position[1], int)
            and 0 <= position[1] < n_include
            and position[1] != index
        )
        if not ok:
            return f"{where} 'position' must be [relation, index of another include entry]"
    return None


def record_problem(record: Any) -> str | None:
    """What is wrong with a record, or None if it is well formed."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    for key in ("tag", "prompt"):
        if not isinstance(record.get(key), str):
            return f"missing string '{key}'"
    include = record.get("include")
    if not isinstance(include, list) or not include:
        return "'include' must be a non-empty list"
    exclude = record.get("exclude", [])
    if not isinstance(exclude, list):
        return "'exclude' must be a list"
    for i, entry in enumerate(include):
        if problem := _entry_problem(entry, f"include[{i}]", len(include), i):
            return problem
    for i, entry in enumerate(exclude):
        if problem := _entry_problem(entry, f"exclude[{i}]", len(include), None):
            return problem
    return None


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """Records of a jsonl prompt file; blank lines are skipped, a malformed line raises PromptFileError."""
    if not Path(path).is_file():
        raise PromptFileError(f"{path}: prompt file not found (fix the path, e.g. evaluate.prompts)")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise PromptFileError(f"{path}: not UTF-8 text (byte {error.start}); save it as UTF-8 jsonl") from None
    records = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise PromptFileError(f"{path}:{lineno}: invalid JSON ({error.msg} at column {error.colno})") from None
        if problem := record_problem(record):
            raise PromptFileError(f"{path}:{lineno}: {problem}")
        records.append(record)
    return records


def write_prompt_file(path: str | Path, records: Iterable[dict[str, Any]]) -> None:
    """Write records as jsonl (creating parent folders); a malformed record raises ValueError."""
    lines = []
    for i, record in enumerate(records):
        if problem := record_problem(record):
            raise ValueError(f"{path}: record {i}: {problem}")
        lines.append(json.dumps(record) + "\n")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(lines), encoding="utf-8")
