"""The command line shared by every stage: `python -m flows.<stage> [--params PATH] [-S key=value ...]`.

Bad params exit with code 2 and one line on stderr, before anything is written.

Under `accelerate launch` with several processes only the main process runs the Prefect flow (outputs,
cache, MLflow); the others run the stage's `follower`, which joins the main process's training and
writes nothing. Stages without a follower refuse such a launch.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from r3.config import Config
from r3.params import ParamsError, apply_overrides, read_params, section
from r3.train.distributed import is_main_process, world_size


def stage_parser(stage: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m flows.{stage}",
                                     description=description or f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param, as `dvc exp run -S` does; repeatable")
    return parser


def read_configs(params_path: str, overrides: Sequence[str], sections: dict[str, type[Config]]) -> dict[str, Config]:
    """Validate the named sections of the params file after the overrides; ParamsError on the first problem."""
    from flows.graph import SECTIONS

    params = apply_overrides(read_params(params_path), list(overrides))
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{params_path}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    return {name: section(params, name, model, params_path) for name, model in sections.items()}


def parse_stage_args(stage: str, sections: dict[str, type[Config]], argv: Sequence[str] | None,
                     description: str | None = None) -> tuple[argparse.Namespace, dict[str, Config]]:
    args = stage_parser(stage, description).parse_args(argv)
    return args, read_configs(args.params, args.overrides, sections)


def check_launch(stage: str, has_follower: bool) -> None:
    """A multi-process launch is for the stages that train (they have a follower)."""
    if world_size() > 1 and not has_follower:
        raise ParamsError(f"flows.{stage} runs in one process, but this launch has {world_size()}: "
                          "launch only flows.sft and flows.rl with several processes")


def fail(exc: ParamsError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


def run_stage_cli(stage: str, sections: dict[str, type[Config]], flow: Callable[..., Any],
                  argv: Sequence[str] | None = None, follower: Callable[..., None] | None = None) -> int:
    try:
        _, configs = parse_stage_args(stage, sections, argv)
        check_launch(stage, follower is not None)
    except ParamsError as exc:
        return fail(exc)
    if follower is not None and not is_main_process():
        follower(**configs)
    else:
        flow(**configs)
    return 0
