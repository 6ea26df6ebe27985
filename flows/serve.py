"""Serve the whole pipeline as the Prefect deployment `pipeline/r3flow-pipeline`:
`python -m flows.serve [--params PATH] [-S section.key=value ...]`.

It runs on the `schedule` section of the params file (a cron expression, an interval, or neither: then
only when triggered from the Prefect UI or `prefect deployment run pipeline/r3flow-pipeline`) until
stopped with Ctrl-C. Each run reads the params file when it starts, with the overrides given here
unless the trigger sets others. With PREFECT_API_URL pointing at `prefect server start`, the UI shows
the deployment, its runs and their logs.
"""

import sys
from collections.abc import Sequence
from datetime import timedelta

from prefect import serve
from prefect.deployments.runner import RunnerDeployment
from pydantic import ValidationError

from flows.cli import check_launch, fail, parse_stage_args
from flows.pipeline import all_sections, pipeline_flow
from r3.config import ScheduleConfig
from r3.params import ParamsError

DEPLOYMENT = "r3flow-pipeline"


def pipeline_deployment(schedule: ScheduleConfig, params: str = "params.yaml",
                        overrides: Sequence[str] = ()) -> RunnerDeployment:
    """The deployment of `pipeline_flow` on `schedule`; ParamsError if the cron expression is invalid."""
    interval = None if schedule.interval_minutes is None else timedelta(minutes=schedule.interval_minutes)
    try:
        return pipeline_flow.to_deployment(name=DEPLOYMENT, cron=schedule.cron, interval=interval,
                                           parameters={"params": params, "overrides": list(overrides)},
                                           description="synth -> sft -> rl -> evaluate, cached stage by stage.")
    except ValidationError:
        raise ParamsError(f"{params}: schedule.cron: not a cron expression (got {schedule.cron!r})") from None


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, configs = parse_stage_args("serve", {"schedule": ScheduleConfig, **all_sections()}, argv,
                                         "Serve the pipeline as a Prefect deployment on the params' schedule.")
        check_launch("serve", has_follower=False)
        deployment = pipeline_deployment(configs["schedule"], args.params, args.overrides)
    except ParamsError as exc:
        return fail(exc)
    print(f"serving pipeline/{DEPLOYMENT}; stop with Ctrl-C", file=sys.stderr)
    serve(deployment)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
