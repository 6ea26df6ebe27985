"""Read `params.yaml`, apply `-S key=value` overrides, validate sections into frozen configs.

Errors are `ParamsError` with a one-line message naming the file and the dotted key.
"""

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import ValidationError

from r3.config import Config
from r3.errors import InputError

C = TypeVar("C", bound=Config)


class ParamsError(InputError):
    """A params file, an override or a section is invalid; the message is one line."""


def read_params(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path}: params file not found")
    try:
        params = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise ParamsError(f"{path}{where}: not valid YAML") from exc
    if not isinstance(params, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    return params


def apply_overrides(params: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides (the `dvc exp run -S` syntax); values parse as YAML."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in params.items()}
    for override in overrides:
        dotted, sep, raw = override.partition("=")
        if not sep or "." not in dotted:
            raise ParamsError(f"-S {override}: expected section.key=value")
        section, key = dotted.split(".", 1)
        if not isinstance(merged.get(section), dict):
            raise ParamsError(f"-S {override}: unknown params section '{section}'")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ParamsError(f"-S {override}: value is not valid YAML") from exc
        node = merged[section]
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
            if not isinstance(node, dict):
                raise ParamsError(f"-S {override}: '{parent}' is not a mapping")
        node[leaf] = value
    return merged


def section(params: dict[str, Any], name: str, model: type[C], source: str = "params.yaml") -> C:
    """Validate `params[name]` into `model`; the first problem becomes a one-line error."""
    raw = params.get(name, {})
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ParamsError(f"{source}: section '{name}' must be a mapping")
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        key = ".".join([name, *(str(p) for p in first["loc"])])
        got = f" (got {first['input']!r})" if first["type"] != "extra_forbidden" else ""
        message = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" [+{exc.error_count() - 1} more]" if exc.error_count() > 1 else ""
        raise ParamsError(f"{source}: {key}: {message}{got}{more}") from None
