"""SFT stage flow: train the tiny unified model on the synth tables; log curves, grids, checkpoint."""

from collections.abc import Sequence

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig
from r3.train.sft import SftConfig
from tasks.cache import run_cached, stage_key
from tasks.sft import train_task
from tasks.tracking import stage_run
from tasks.training import publish_training

SECTIONS = {"base": BaseConfig, "sft": SftConfig}


@flow(name="sft")
def sft_flow(base: BaseConfig, sft: SftConfig) -> dict:
    key = stage_key("sft-train", [base, sft], [paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT])
    with stage_run("sft", base.experiment, {"base": base, "sft": sft}) as run:
        result = run_cached(train_task, key, base=base, cfg=sft, synth_dir=str(paths.SYNTH), run_id=run.info.run_id)
        publish_training(result, run.info.run_id, paths.SFT_CHECKPOINT, paths.SFT_SAMPLES, paths.SFT_METRICS)
    return {"outputs": [str(paths.SFT_CHECKPOINT), str(paths.SFT_SAMPLES), str(paths.SFT_METRICS)],
            "metrics": result["headline"]}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("sft", SECTIONS, sft_flow, argv)


if __name__ == "__main__":
    raise SystemExit(main())
