"""Cached Prefect tasks of the synth stage."""

from pathlib import Path

from prefect import task

from r3.config import BaseConfig
from r3.data.card import record_fields, tag_grids, write_summary
from r3.data.synth import SPLITS, SynthConfig, build_table, heldout_pool, pool_from_jsonl, pool_redraws, pool_to_jsonl
from r3.data.tiif_suite import read_split, split_file, write_suite
from tasks.cache import CACHED, artifact_dir


@task(name="synth-heldout-pool", **CACHED)
def heldout_pool_task(key: str, base: BaseConfig, cfg: SynthConfig) -> dict:
    path = artifact_dir(key) / "heldout_pool.jsonl"
    pool = heldout_pool(base, cfg)
    pool_to_jsonl(pool, path)
    return {"paths": [str(path)], "redrawn": pool_redraws(pool)}


@task(name="synth-table", task_run_name="synth-{table}-{split}", **CACHED)
def table_task(key: str, table: str, split: str, base: BaseConfig, cfg: SynthConfig, pool_path: str) -> dict:
    path = artifact_dir(key) / f"{table}.parquet"
    counts, redrawn = build_table(table, split, base, cfg, pool_from_jsonl(Path(pool_path)), path)
    return {"paths": [str(path)], "counts": counts, "redrawn": redrawn}


@task(name="synth-tiif", **CACHED)
def tiif_task(key: str, base: BaseConfig, cfg: SynthConfig) -> dict:
    """The TIIF suite's files (r3.data.tiif_suite); their directory."""
    out = artifact_dir(key) / "tiif"
    write_suite(base, cfg.tiif_per_type(), out)
    return {"paths": [str(out)]}


@task(name="synth-summary", **CACHED)
def summary_task(key: str, base: BaseConfig, counts: dict, redrawn: dict[str, int], enrichment_path: str,
                 tiif_dir: str) -> dict:
    """`tiif_dir`: the TIIF suite's files (tiif_task)."""
    out = artifact_dir(key)
    metrics_path, card_path = out / "metrics.json", out / "DATA_CARD.md"
    tiif = {split: read_split(split_file(Path(tiif_dir), split)) for split in SPLITS}
    metrics = write_summary(counts, redrawn, base.canvas, base.seed, record_fields(Path(enrichment_path)), tiif,
                            metrics_path, card_path, base.num_threads)
    grids = tag_grids(Path(enrichment_path), out / "samples")
    return {"paths": [str(metrics_path), str(card_path), str(out / "samples")], "metrics": metrics,
            "grids": [str(p) for p in grids]}
