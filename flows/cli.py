"""The command line shared by every stage: `python -m flows.<stage> [--params PATH] [-S key=value ...]`.

Bad params exit with code 2 and one line on stderr, before anything is written.
"""

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from r3.config import Config
from r3.params import ParamsError, apply_overrides, read_params, section


def parse_configs(stage: str, sections: dict[str, type[Config]], argv: Sequence[str] | None) -> dict[str, Config]:
    from flows.graph import SECTIONS

    parser = argparse.ArgumentParser(prog=f"python -m flows.{stage}", description=f"Run the {stage} stage.")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one param, as `dvc exp run -S` does; repeatable")
    args = parser.parse_args(argv)
    params = apply_overrides(read_params(args.params), args.overrides)
    unknown = sorted(set(params) - set(SECTIONS))
    if unknown:
        raise ParamsError(f"{args.params}: unknown section '{unknown[0]}' (known: {', '.join(SECTIONS)})")
    return {name: section(params, name, model, args.params) for name, model in sections.items()}


def run_stage_cli(stage: str, sections: dict[str, type[Config]], flow: Callable[..., Any],
                  argv: Sequence[str] | None = None) -> int:
    try:
        configs = parse_configs(stage, sections, argv)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    flow(**configs)
    return 0
