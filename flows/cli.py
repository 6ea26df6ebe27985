"""The command line shared by every stage: `python -m flows.<stage> [--params PATH] [-S key=value ...]`.

A bad input (params, a prompt file, a synth table, a checkpoint, the judge endpoint: any `r3.errors.InputError`)
exits with code 2 and one line on stderr, before any output is written; `--debug` (or R3FLOW_DEBUG=1) shows its
traceback instead. Prefect's own error lines are held back while the stage runs, so an input error raised inside a
task is printed once; any other failure prints them as Prefect wrote them.

Under `accelerate launch` with several processes only the main process runs the Prefect flow (outputs,
cache, MLflow); the others run the stage's `follower`, which joins the main process's training and
writes nothing. Stages without a follower refuse such a launch.
"""

import argparse
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from r3.config import Config
from r3.errors import InputError
from r3.params import ParamsError, apply_overrides, read_params, section
from r3.train.distributed import is_main_process, world_size
from tasks.prefect_server import start_ephemeral_server


DEBUG_ENV = "R3FLOW_DEBUG"
"""Environment variable that, set to 1, makes an input error show its traceback (as --debug does)."""


def debugging(args: argparse.Namespace) -> bool:
    return args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def stage_parser(stage: str, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m flows.{stage}",
                                     description=description or f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param, as `dvc exp run -S` does; repeatable")
    parser.add_argument("--debug", action="store_true",
                        help=f"show the traceback of an input error (also: {DEBUG_ENV}=1)")
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


def fail(exc: InputError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2


class _HeldErrors(logging.Filter):
    """Keeps the error records of Prefect's loggers off one console handler, for `prefect_errors_held`."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name.startswith("prefect"):
            self.records.append(record)
            return False
        return True


@contextmanager
def prefect_errors_held() -> Iterator[None]:
    """Hold Prefect's error lines (a failed task and its flow each log the traceback) until the block ends: dropped
    when it raises an InputError (the CLI prints its one line), printed when it raises anything else."""
    held = {handler: _HeldErrors() for handler in logging.getLogger().handlers}
    for handler, hold in held.items():
        handler.addFilter(hold)
    try:
        yield
    except InputError:
        raise
    except BaseException:
        for handler, hold in held.items():
            handler.removeFilter(hold)
            for record in hold.records:
                handler.handle(record)
        raise
    finally:
        for handler, hold in held.items():
            handler.removeFilter(hold)


def run_stage_cli(stage: str, sections: dict[str, type[Config]], flow: Callable[..., Any],
                  argv: Sequence[str] | None = None, follower: Callable[..., None] | None = None,
                  check: Callable[..., None] | None = None) -> int:
    """Parse, validate the params and (with `check(**configs)`) the stage's input files, then run the flow, or
    the follower on a non-main process of a multi-process launch. An InputError anywhere: one line, code 2."""
    args = stage_parser(stage).parse_args(argv)
    try:
        configs = read_configs(args.params, args.overrides, sections)
        check_launch(stage, follower is not None)
        if check is not None:
            check(**configs)
        with prefect_errors_held():
            if follower is not None and not is_main_process():
                follower(**configs)
            else:
                start_ephemeral_server()  # it dies with this process, also when it is killed
                flow(**configs)
    except InputError as exc:
        if debugging(args):
            raise
        return fail(exc)
    return 0
