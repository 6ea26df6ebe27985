"""RL stage flow: Tree-RL from the SFT checkpoint; log curves, grids, checkpoint. Resumes when killed.

`python -m flows.rl`, or on several GPUs `accelerate launch --config_file configs/accelerate/ddp.yaml -m flows.rl`
(configs/accelerate/: single, ddp, fsdp for sharded weights; on CPUs prefix ACCELERATE_USE_CPU=true).
"""

from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig
from r3.data.synth import check_tables
from r3.data.tiif_suite import prompt_table
from r3.models.registry import check_checkpoint
from r3.rl.config import RlConfig
from tasks.cache import run_cached, stage_key
from tasks.rl import train_task
from tasks.tracking import stage_run
from tasks.training import publish_training, training_task

SECTIONS = {"base": BaseConfig, "rl": RlConfig}


def synth_inputs(rl: RlConfig) -> list[Path]:
    """The synth outputs the run reads: the tables, and the TIIF suite when it trains on its prompts."""
    return [paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT, *([paths.SYNTH_TIIF] if rl.prompts == "tiif" else [])]


def train_key(base: BaseConfig, rl: RlConfig) -> str:
    return stage_key("rl-train", [base, rl], [paths.SFT_CHECKPOINT, *synth_inputs(rl)])


@flow(name="rl")
def rl_flow(base: BaseConfig, rl: RlConfig) -> dict:
    key = train_key(base, rl)
    with stage_run("rl", base.experiment, {"base": base, "rl": rl}, base.system_metrics,
                   inputs=synth_inputs(rl)) as run:
        result = run_cached(training_task(train_task, base), key, base=base, cfg=rl,
                            init_checkpoint=str(paths.SFT_CHECKPOINT), synth_dir=str(paths.SYNTH),
                            run_id=run.info.run_id)
        publish_training(result, run.info.run_id, paths.RL_CHECKPOINT, paths.RL_SAMPLES, paths.RL_METRICS)
    return {"outputs": [str(paths.RL_CHECKPOINT), str(paths.RL_SAMPLES), str(paths.RL_METRICS)],
            "metrics": result["headline"]}


def rl_follower(base: BaseConfig, rl: RlConfig) -> None:
    """A non-main process of a multi-process launch: train alongside the main process; write and log nothing."""
    train_task.fn(key=train_key(base, rl), base=base, cfg=rl, init_checkpoint=str(paths.SFT_CHECKPOINT),
                  synth_dir=str(paths.SYNTH), run_id=None)


def check_inputs(base: BaseConfig, rl: RlConfig) -> None:
    check_checkpoint(paths.SFT_CHECKPOINT)
    check_tables(paths.SYNTH)
    if rl.prompts == "tiif":
        prompt_table(paths.SYNTH, "train")


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("rl", SECTIONS, rl_flow, argv, follower=rl_follower, check=check_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
