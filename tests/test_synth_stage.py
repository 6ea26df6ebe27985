"""The synth stage: determinism, disjoint splits, counts, and Prefect cache hits on rerun."""

import json

import polars as pl
import pytest

from flows.synth import synth_flow
from r3 import paths
from r3.config import BaseConfig
from r3.data.synth import SPLITS, TABLES, SynthConfig, build_table, heldout_pool, suite_tags
from r3.world.edits import STOP_ANSWER

TINY = SynthConfig(train_per_tag=6, heldout_per_tag=4, train_pairs=26, heldout_pairs_per_tag=2, candidates_per_tag=200)


@pytest.fixture(scope="module")
def synth_outputs(tmp_path_factory):
    """Run the flow once in a fresh directory; yield that directory."""
    root = tmp_path_factory.mktemp("synth")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(root)
        result = synth_flow(BaseConfig(), TINY)
        yield root, result


def test_same_seed_gives_byte_identical_parquet(tmp_path):
    base = BaseConfig(seed=3)
    pool = heldout_pool(base, TINY)
    for table in ("enrichment", "editing"):
        a, b = tmp_path / f"{table}_a.parquet", tmp_path / f"{table}_b.parquet"
        build_table(table, "train", base, TINY, pool, a)
        build_table(table, "train", base, TINY, heldout_pool(base, TINY), b)
        assert a.read_bytes() == b.read_bytes()
    other = tmp_path / "other.parquet"
    build_table("enrichment", "train", BaseConfig(seed=4), TINY, heldout_pool(BaseConfig(seed=4), TINY), other)
    assert other.read_bytes() != (tmp_path / "enrichment_a.parquet").read_bytes()


def test_flow_writes_every_table_with_the_configured_rows(synth_outputs):
    root, result = synth_outputs
    n_tags = len(suite_tags())
    expected = {
        "train": {"prompts": 6 * n_tags, "enrichment": 6 * n_tags, **{t: 26 for t in TABLES[2:]}},
        "heldout": {"prompts": 4 * n_tags, "enrichment": 4 * n_tags, **{t: 2 * n_tags for t in TABLES[2:]}},
    }
    metrics = json.loads((root / paths.SYNTH_METRICS).read_text())
    for split in SPLITS:
        for table in TABLES:
            frame = pl.read_parquet(root / paths.SYNTH / split / f"{table}.parquet")
            assert frame.height == expected[split][table] == metrics[split][table]["rows"]
    assert (root / paths.SYNTH_CARD).read_text().startswith("# ShapeWorld synthetic data")
    assert len(list((root / paths.SYNTH_SAMPLES).glob("*.png"))) == n_tags
    assert result["metrics"] == metrics


def test_train_and_heldout_share_no_prompt_text(synth_outputs):
    root, _ = synth_outputs
    for table in TABLES:
        train = set(pl.read_parquet(root / paths.SYNTH_TRAIN / f"{table}.parquet")["prompt"])
        held = set(pl.read_parquet(root / paths.SYNTH_HELDOUT / f"{table}.parquet")["prompt"])
        assert held and train and not train & held, table


def test_reflection_and_ita_are_balanced(synth_outputs):
    root, _ = synth_outputs
    for split in SPLITS:
        reflection = pl.read_parquet(root / paths.SYNTH / split / "reflection.parquet")
        stops = (reflection["target"] == STOP_ANSWER).sum()
        assert abs(2 * stops - reflection.height) <= 1
        ita = pl.read_parquet(root / paths.SYNTH / split / "ita.parquet")
        if split == "heldout":
            per_tag = ita.group_by("suite", "tag").agg((pl.col("answer") == "yes").sum().alias("yes"), pl.len())
            assert (per_tag["yes"] * 2 == per_tag["len"]).all()


def test_rerun_is_served_from_the_cache(synth_outputs, monkeypatch):
    root, first = synth_outputs
    monkeypatch.chdir(root)

    def no_work(*args, **kwargs):
        raise AssertionError("a cached table was rebuilt")

    monkeypatch.setattr("tasks.synth.build_table", no_work)
    monkeypatch.setattr("tasks.synth.heldout_pool", no_work)
    assert synth_flow(BaseConfig(), TINY)["metrics"] == first["metrics"]


def test_deleted_cache_files_are_rebuilt(synth_outputs, monkeypatch):
    """A cache entry whose files were removed is recomputed rather than pointing at nothing."""
    import shutil

    from tasks.cache import artifact_dir, stage_key

    root, first = synth_outputs
    monkeypatch.chdir(root)
    shutil.rmtree(artifact_dir(stage_key("synth-heldout-pool", [BaseConfig(), TINY])))
    assert synth_flow(BaseConfig(), TINY)["metrics"] == first["metrics"]
