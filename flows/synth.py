"""Synth stage flow: held-out split, every table of both splits, the TIIF suite, summary; logged to MLflow."""

import shutil
from collections.abc import Sequence
from pathlib import Path

from prefect import flow

from flows.cli import run_stage_cli
from r3 import paths
from r3.config import BaseConfig
from r3.data.synth import SPLITS, TABLES, SynthConfig
from tasks.cache import materialize, run_cached, stage_key
from tasks.synth import heldout_pool_task, summary_task, table_task, tiif_task
from tasks.tracking import log_artifacts, log_json_metrics, stage_run

SECTIONS = {"base": BaseConfig, "synth": SynthConfig}


@flow(name="synth")
def synth_flow(base: BaseConfig, synth: SynthConfig) -> dict:
    configs = [base, synth]
    pool = run_cached(heldout_pool_task, stage_key("synth-heldout-pool", configs), base=base, cfg=synth)
    pool_path = pool["paths"][0]
    tables: dict[Path, str] = {}
    counts: dict[str, dict] = {split: {} for split in SPLITS}
    redrawn = {"heldout pool": pool["redrawn"]}
    for split in SPLITS:
        for table in TABLES:
            result = run_cached(table_task, stage_key(f"synth-{table}-{split}", configs, [pool_path]),
                                table=table, split=split, base=base, cfg=synth, pool_path=pool_path)
            tables[paths.SYNTH / split / f"{table}.parquet"] = result["paths"][0]
            counts[split][table] = result["counts"]
            if split == "train":
                redrawn[f"train/{table}"] = result["redrawn"]
    [tiif_dir] = run_cached(tiif_task, stage_key("synth-tiif", configs), base=base, cfg=synth)["paths"]
    enrichment = tables[paths.SYNTH_TRAIN / "enrichment.parquet"]
    summary = run_cached(summary_task, stage_key("synth-summary", configs, [*tables.values(), tiif_dir]),
                         base=base, counts=counts, redrawn=redrawn, enrichment_path=enrichment, tiif_dir=tiif_dir)
    metrics_path, card_path, samples_path = summary["paths"]
    for split_dir in (paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT):
        shutil.rmtree(split_dir, ignore_errors=True)  # no table of an older run may linger
    materialize({**tables, paths.SYNTH_TIIF: tiif_dir, paths.SYNTH_METRICS: metrics_path,
                 paths.SYNTH_CARD: card_path, paths.SYNTH_SAMPLES: samples_path})
    with stage_run("synth", base.experiment, {"base": base, "synth": synth}):
        log_json_metrics({split: {t: v["rows"] for t, v in summary["metrics"][split].items()} for split in SPLITS},
                         prefix="rows")
        log_json_metrics({f"tiif_{split}": v["records"] for split, v in summary["metrics"]["tiif"].items()},
                         prefix="rows")
        log_artifacts([paths.SYNTH_SAMPLES, paths.SYNTH_CARD, paths.SYNTH_METRICS])
    return {"outputs": [str(p) for p in (paths.SYNTH_TRAIN, paths.SYNTH_HELDOUT, paths.SYNTH_TIIF,
                                         paths.SYNTH_SAMPLES, paths.SYNTH_CARD, paths.SYNTH_METRICS)],
            "metrics": summary["metrics"]}


def main(argv: Sequence[str] | None = None) -> int:
    return run_stage_cli("synth", SECTIONS, synth_flow, argv)


if __name__ == "__main__":
    raise SystemExit(main())
