"""Read and write prompt files in the public GenEval / GenEval++ jsonl format (one record a line).

The structure the verifier relies on is validated: `tag` and `prompt` strings, a non-empty `include` list of
{class, count >= 1, color?, size?, position?: [relation, index of another include], region?: left / right /
above / below}, and an optional `exclude` list of {class, count, color?, size?}. GenEval++'s relative sizes
(`size: larger / smaller`) come in pairs: an include entry with one needs another with the other. A key the
verifier does not know is refused, never ignored. Classes, colours, absolute sizes and relations outside
ShapeWorld are read fine (the verifier refuses them; the judge reward can score them).
"""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from r3.errors import InputError
from r3.world.scene import REGIONS, RELATIVE_SIZES
from r3.world.verifier import ENTRY_KEYS, RECORD_KEYS


class PromptFileError(InputError):
    """A malformed line of a prompt file; the message is "{path}:{lineno}: <what is wrong>"."""


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _unknown_key(keys: Any, known: tuple[str, ...], where: str) -> str | None:
    unknown = [k for k in keys if k not in known]
    if unknown:
        return f"{where}unknown key '{unknown[0]}' (the verifier knows {', '.join(known)}); remove or rename it"
    return None


def _entry_problem(entry: Any, where: str, n_include: int, index: int | None) -> str | None:
    if not isinstance(entry, dict):
        return f"{where} is not an object"
    if problem := _unknown_key(entry, ENTRY_KEYS, f"{where} has an "):
        return problem
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
    region = entry.get("region")
    if region is not None:
        if index is None:
            return f"{where} has a 'region' (only include entries may)"
        if region not in REGIONS:
            return f"{where} 'region' {region!r} is not one of {', '.join(REGIONS)}"
    if index is None and entry.get("size") in RELATIVE_SIZES:
        return f"{where} has the relative 'size' {entry['size']!r} (only include entries may)"
    return None


def _relative_size_problem(include: list[dict[str, Any]]) -> str | None:
    """An include entry with a relative size whose counterpart (larger <-> smaller) no other entry carries."""
    sizes = [e.get("size") for e in include]
    for i, size in enumerate(sizes):
        if size in RELATIVE_SIZES:
            other = RELATIVE_SIZES[1 - RELATIVE_SIZES.index(size)]
            if other not in sizes:
                return f"include[{i}] 'size' {size!r} needs another include entry with 'size' {other!r}"
    return None


def record_problem(record: Any) -> str | None:
    """What is wrong with a record, or None if it is well formed."""
    if not isinstance(record, dict):
        return "record is not a JSON object"
    if problem := _unknown_key(record, RECORD_KEYS, "record has an "):
        return problem
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
    return _relative_size_problem(include)


def json_lines(path: str | Path, error: type[InputError], missing: str, invalid_fix: str = ""
               ) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) of each non-blank line of a jsonl file. A missing file raises `error` with the
    `missing` text, a file that is not UTF-8 or a line that is not JSON raises it naming the byte or the line
    (`invalid_fix` appended to the latter)."""
    if not Path(path).is_file():
        raise error(f"{path}: {missing}")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not UTF-8 text (byte {problem.start}); save it as UTF-8 jsonl") from None
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line)
        except json.JSONDecodeError as problem:
            raise error(f"{path}:{lineno}: invalid JSON ({problem.msg} at column {problem.colno}){invalid_fix}"
                        ) from None


def read_prompt_file(path: str | Path) -> list[dict[str, Any]]:
    """Records of a jsonl prompt file; blank lines are skipped, a malformed line raises PromptFileError."""
    records = []
    for lineno, record in json_lines(path, PromptFileError, "prompt file not found (fix the path, e.g. "
                                     "evaluate.prompts)"):
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
