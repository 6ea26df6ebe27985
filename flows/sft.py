"""SFT stage flow: train the tiny unified model on the synth tables; log curves, grids, checkpoint.

`python -m flows.sft`, or on several GPUs `accelerate launch --config_file configs/accelerate/ddp.yaml -m flows.sft`
(configs/accelerate/: single, ddp, fsdp for sharded weights; on CPUs prefix ACCELERATE_USE_CPU=true).
"""

from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig
from r3.data.synth import check_tables
from r3.errors import InputError
from r3.models.registry import read_model_config
from r3.train.sft import SftConfig
from tasks.cache import run_cached, stage_key
from tasks.sft import train_task
from tasks.tracking import stage_run
from tasks.training import publish_training, training_task

SECTIONS = {"base": BaseConfig, "sft": SftConfig}


def init_dir(sft: SftConfig) -> str | None:
    """The directory SFT starts from: the shipped base model, or none (`init: scratch`)."""
    return str(paths.BASE_MODEL) if sft.starts_from_base else None


def inputs(sft: SftConfig) -> list[Path]:
    """What the stage reads: the synth tables, and the base model it starts from."""
    return [paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT] + ([paths.BASE_MODEL] if sft.starts_from_base else [])


def train_key(base: BaseConfig, sft: SftConfig) -> str:
    return stage_key("sft-train", [base, sft], inputs(sft))


@flow(name="sft")
def sft_flow(base: BaseConfig, sft: SftConfig) -> dict:
    key = train_key(base, sft)
    with stage_run("sft", base.experiment, {"base": base, "sft": sft}, base.system_metrics,
                   inputs=inputs(sft)) as run:
        result = run_cached(training_task(train_task, base), key, base=base, cfg=sft, synth_dir=str(paths.SYNTH),
                            init_dir=init_dir(sft), run_id=run.info.run_id)
        publish_training(result, run.info.run_id, paths.SFT_CHECKPOINT, paths.SFT_SAMPLES, paths.SFT_METRICS)
    return {"outputs": [str(paths.SFT_CHECKPOINT), str(paths.SFT_SAMPLES), str(paths.SFT_METRICS)],
            "metrics": result["headline"]}


def sft_follower(base: BaseConfig, sft: SftConfig) -> None:
    """A non-main process of a multi-process launch: train alongside the main process; write and log nothing."""
    train_task.fn(key=train_key(base, sft), base=base, cfg=sft, synth_dir=str(paths.SYNTH), init_dir=init_dir(sft),
                  run_id=None)


def check_inputs(base: BaseConfig, sft: SftConfig) -> None:
    check_tables(paths.SYNTH)
    if sft.starts_from_base and not paths.BASE_MODEL.is_dir():
        raise InputError(f"{paths.BASE_MODEL}: the base model SFT starts from is missing; restore it with "
                         "`git checkout -- models/base`, train it with `python -m flows.pretrain`, or set sft.init=scratch")
    if sft.starts_from_base:
        read_model_config(paths.BASE_MODEL)


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("sft", SECTIONS, sft_flow, argv, follower=sft_follower, check=check_inputs)


if __name__ == "__main__":
    raise SystemExit(main())
