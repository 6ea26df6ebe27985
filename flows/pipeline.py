"""The whole pipeline as one Prefect flow: every stage of `flows.graph.STAGES`, in order."""

import importlib
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.cli import run_stage_cli
from flows.graph import STAGES
from r3.config import Config


def stage_modules() -> list[Any]:
    return [importlib.import_module(f"flows.{stage.name}") for stage in STAGES]


def all_sections() -> dict[str, type[Config]]:
    sections: dict[str, type[Config]] = {}
    for module in stage_modules():
        sections.update(module.SECTIONS)
    return sections


@flow(name="pipeline")
def pipeline_flow(**configs: Config) -> dict[str, Any]:
    results = {}
    for stage, module in zip(STAGES, stage_modules(), strict=True):
        stage_flow = getattr(module, f"{stage.name}_flow")
        results[stage.name] = stage_flow(**{name: configs[name] for name in stage.params})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("pipeline", all_sections(), pipeline_flow, argv)


if __name__ == "__main__":
    raise SystemExit(main())
