"""The whole pipeline as one Prefect flow: every stage of `flows.graph.STAGES`, in order.

The flow takes the params file and `-S` overrides rather than validated configs, so that a run
started by a schedule or from the Prefect UI reads params.yaml as it is then, as `dvc repro` would.
"""

import importlib
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.cli import check_launch, fail, parse_stage_args, read_configs
from flows.graph import STAGES
from r3.config import Config
from r3.params import ParamsError


def stage_modules() -> list[Any]:
    return [importlib.import_module(f"flows.{stage.name}") for stage in STAGES]


def all_sections() -> dict[str, type[Config]]:
    sections: dict[str, type[Config]] = {}
    for module in stage_modules():
        sections.update(module.SECTIONS)
    return sections


@flow(name="pipeline")
def pipeline_flow(params: str = "params.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
    """Run every stage in order, with the params read when the run starts.

    Args:
        params: params file, relative to the working directory of the process that runs the flow.
        overrides: `section.key=value` overrides, as `-S` on the command line.
    """
    configs = read_configs(params, overrides or [], all_sections())
    results = {}
    for stage, module in zip(STAGES, stage_modules(), strict=True):
        stage_flow = getattr(module, f"{stage.name}_flow")
        results[stage.name] = stage_flow(**{name: configs[name] for name in stage.params})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, _ = parse_stage_args("pipeline", all_sections(), argv, "Run every stage in order.")
        check_launch("pipeline", has_follower=False)
    except ParamsError as exc:
        return fail(exc)
    pipeline_flow(params=args.params, overrides=args.overrides)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
