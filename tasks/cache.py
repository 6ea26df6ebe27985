"""Cache keys for stage tasks: (task name, stage config, input file digests, code version).

Prefect's default policy keys on the run; ours keys on content, so rerunning a stage with the
same config, inputs and code hits the cache and does no work. "The code" of a stage is what DVC
reruns it on: the files its flow module imports (r3.devtools.imports.stage_code). A task writes its files
into `artifact_dir(key)` (inside Prefect's project-local storage), so a cached result always
points at files that still belong to it.
"""

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from r3.devtools.imports import stage_code
from tasks._env import PROJECT_ROOT


def _hash_files(root: Path, pattern: str = "**/*") -> str:
    digest = hashlib.sha256()
    files = [root] if root.is_file() else sorted(p for p in root.glob(pattern) if p.is_file())
    for path in files:
        digest.update(str(path.relative_to(root.parent)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def code_version(stage: str) -> str:
    """Digest of the stage's code (the files of its DVC code deps): a change there invalidates its cached results."""
    digest = hashlib.sha256()
    for name in stage_code(stage, PROJECT_ROOT):
        digest.update(name.encode())
        digest.update(hashlib.sha256((PROJECT_ROOT / name).read_bytes()).digest())
    return digest.hexdigest()


def input_digest(path: str | Path) -> str:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: stage input does not exist (run the upstream stage first)")
    return _hash_files(path)


def stage_key(task: str, configs: list[BaseModel] | dict[str, Any], inputs: list[str | Path] = ()) -> str:
    """Content key for one task call. `task` is the stage name or starts with it ("sft-train", "synth-summary"):
    the key covers that stage's code."""
    if isinstance(configs, dict):
        config_json = json.dumps(configs, sort_keys=True, default=str)
    else:
        config_json = json.dumps([c.model_dump(mode="json") for c in configs], sort_keys=True)
    payload = {
        "task": task,
        "config": config_json,
        "inputs": {str(p): input_digest(p) for p in inputs},
        "code": code_version(task.split("-", 1)[0]),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def artifact_dir(key: str) -> Path:
    """Where the task with this key writes its files: beside Prefect's own result storage."""
    return Path(os.environ["PREFECT_HOME"]) / "artifacts" / key


def key_from_parameters(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect `cache_key_fn`: every cached task takes the precomputed content key as `key`."""
    return parameters["key"]


CACHED = {"cache_key_fn": key_from_parameters, "persist_result": True, "result_serializer": "json"}
"""Options of every content-cached task; such a task returns a dict with its files under "paths"."""


def run_cached(task: Any, key: str, **kwargs: Any) -> dict:
    """Call a cached task; if its cached files were deleted since, run it again."""
    result = task(key=key, **kwargs)
    if not all(Path(p).exists() for p in result["paths"]):
        result = task.with_options(refresh_cache=True)(key=key, **kwargs)
    return result


def materialize(files: dict[Path, str | Path]) -> None:
    """Copy cached artifacts to their DVC-tracked destinations (`dest -> source`), replacing
    whatever was there so that a stage's outputs are always exactly this run's."""
    for dest, source in files.items():
        source = Path(source)
        tmp = dest.with_name(dest.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, tmp)
        else:
            shutil.copy2(source, tmp)
        if dest.is_dir():
            shutil.rmtree(dest)
        tmp.replace(dest)
