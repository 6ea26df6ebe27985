"""Pretrain stage flow: train the tiny base model's general skills from scratch and publish it to models/base
(its sample grids go to the MLflow run only: the frozen stage's outputs are the ones committed to git).

Frozen in dvc.yaml: `dvc repro` uses the committed base; `dvc repro -f pretrain` (or `python -m flows.pretrain`)
trains it again, for as long as `pretrain.steps` says (about an hour on 2 CPU cores at the defaults).
"""

from collections.abc import Sequence

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig
from r3.train.pretrain import PretrainConfig
from tasks.cache import run_cached, stage_key
from tasks.pretrain import train_task
from tasks.resources import long_task
from tasks.tracking import stage_run
from tasks.training import publish_training

SECTIONS = {"base": BaseConfig, "pretrain": PretrainConfig}


@flow(name="pretrain")
def pretrain_flow(base: BaseConfig, pretrain: PretrainConfig) -> dict:
    key = stage_key("pretrain-train", [base, pretrain], [paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT])
    with stage_run("pretrain", base.experiment, {"base": base, "pretrain": pretrain}, base.system_metrics,
                   inputs=[paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT]) as run:
        result = run_cached(long_task(train_task, base), key, base=base, cfg=pretrain, synth_dir=str(paths.SYNTH),
                            run_id=run.info.run_id)
        publish_training(result, run.info.run_id, paths.BASE_MODEL, None, paths.BASE_METRICS)
    return {"outputs": [str(paths.BASE_MODEL)], "metrics": result["headline"]}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("pretrain", SECTIONS, pretrain_flow, argv)


if __name__ == "__main__":
    raise SystemExit(main())
