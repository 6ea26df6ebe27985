"""The whole pipeline as one Prefect flow: every stage of `flows.graph.STAGES`, in order, except frozen ones
(as `dvc repro`: a frozen stage's committed outputs are used).

The flow takes the params file and `-S` overrides rather than validated configs, so that a run
started by a schedule or from the Prefect UI reads params.yaml as it is then, as `dvc repro` would.
"""

import importlib
from collections.abc import Sequence
from typing import Any

from prefect import flow

from flows.cli import check_launch, debugging, fail, prefect_errors_held, read_configs, stage_parser
from flows.graph import STAGES
from r3.config import Config
from r3.errors import InputError
from tasks.prefect_server import start_ephemeral_server


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
        if stage.frozen:
            continue
        stage_flow = getattr(module, f"{stage.name}_flow")
        results[stage.name] = stage_flow(**{name: configs[name] for name in stage.params})
    return results


def main(argv: Sequence[str] | None = None) -> int:
    args = stage_parser("pipeline", "Run every stage in order.").parse_args(argv)
    try:
        read_configs(args.params, args.overrides, all_sections())
        check_launch("pipeline", has_follower=False)
        with prefect_errors_held():
            start_ephemeral_server()  # it dies with this process, also when it is killed
            pipeline_flow(params=args.params, overrides=args.overrides)
    except InputError as exc:
        if debugging(args):
            raise
        return fail(exc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
