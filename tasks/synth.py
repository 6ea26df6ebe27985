"""Cached Prefect tasks of the synth stage."""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.data.card import tag_grids, write_summary
from r3.data.synth import SynthConfig, build_table, heldout_pool, pool_from_jsonl, pool_to_jsonl
from tasks.cache import CACHED, artifact_dir


@task(name="synth-heldout-pool", **CACHED)
def heldout_pool_task(key: str, base: BaseConfig, cfg: SynthConfig) -> dict:
    path = artifact_dir(key) / "heldout_pool.jsonl"
    pool_to_jsonl(heldout_pool(base, cfg), path)
    return {"paths": [str(path)]}


@task(name="synth-table", task_run_name="synth-{table}-{split}", **CACHED)
def table_task(key: str, table: str, split: str, base: BaseConfig, cfg: SynthConfig, pool_path: str) -> dict:
    path = artifact_dir(key) / f"{table}.parquet"
    counts = build_table(table, split, base, cfg, pool_from_jsonl(Path(pool_path)), path)
    return {"paths": [str(path)], "counts": counts}


@task(name="synth-summary", **CACHED)
def summary_task(key: str, base: BaseConfig, counts: dict, enrichment_path: str) -> dict:
    out = artifact_dir(key)
    metrics_path, card_path = out / "metrics.json", out / "DATA_CARD.md"
    metrics = write_summary(counts, base.canvas, base.seed, metrics_path, card_path)
    grids = tag_grids(Path(enrichment_path), out / "samples")
    return {"paths": [str(metrics_path), str(card_path), str(out / "samples")], "metrics": metrics,
            "grids": [str(p) for p in grids]}
