"""The synth stage: determinism, disjoint splits, counts, the TIIF suite beside the tables (which it leaves as they
were drawn before it), and Prefect cache hits on rerun."""

import hashlib
import json

import polars as pl
import pytest

from flows.synth import synth_flow
from r3 import paths
from r3.config import BaseConfig
from r3.data.io import decode_png
from r3.data.synth import SPLITS, TABLES, SynthConfig, build_table, heldout_pool, suite_tags
from r3.data.tiif_suite import TYPES
from r3.world.edits import STOP_ANSWER
from r3.world.tiif_io import read_tiif_file

TINY = SynthConfig(train_per_tag=6, heldout_per_tag=4, train_pairs=26, heldout_pairs_per_tag=2, candidates_per_tag=200,
                   tiif_train_per_type=3, tiif_heldout_per_type=2)

TABLES_DIGEST = "2b1333a47b9fdf14d612cc9fc26d43829db148470c01174cfd555dafad7160ef"
"""tables_digest of the flow's tables at TINY, as the stage drew them before the TIIF suite (at c7947d4): the suite
draws from its own random streams, so adding it changed no table (the trained checkpoints depend on them). Change
this only with a deliberate change to how the tables are drawn."""


def tables_digest(synth_dir) -> str:
    """sha256 over every table of both splits: column names, text values, and images as decoded pixels (independent
    of the Parquet and PNG encoders' versions)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        for table in TABLES:
            frame = pl.read_parquet(synth_dir / split / f"{table}.parquet")
            for name in frame.columns:
                digest.update(name.encode())
                for value in frame[name]:
                    digest.update(decode_png(value).tobytes() if isinstance(value, bytes) else str(value).encode())
    return digest.hexdigest()


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


def test_the_tables_are_drawn_as_before_the_tiif_suite(synth_outputs):
    root, _ = synth_outputs
    assert tables_digest(root / paths.SYNTH) == TABLES_DIGEST


def test_flow_writes_the_tiif_suite_with_its_counts_in_metrics_and_card(synth_outputs):
    root, result = synth_outputs
    for split, n in TINY.tiif_per_type().items():
        records = read_tiif_file(root / paths.SYNTH_TIIF / f"{split}.jsonl")
        assert [r.type for r in records] == [t for t in TYPES for _ in range(n)]
        assert result["metrics"]["tiif"][split] == {"records": n * len(TYPES), "per_type": {t: n for t in TYPES}}
    card = (root / paths.SYNTH_CARD).read_text()
    section = card.split("## TIIF suite", 1)[1]
    for t in TYPES:
        assert f"| {t} | " in section and f" | {TINY.tiif_train_per_type} | {TINY.tiif_heldout_per_type} | " in section
    assert "`3d` / `3d_spatial_relation` (3D spatial relations)" in section and "`style` (styles)" in section


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
    monkeypatch.setattr("tasks.synth.write_suite", no_work)
    assert synth_flow(BaseConfig(), TINY)["metrics"] == first["metrics"]


def test_deleted_cache_files_are_rebuilt(synth_outputs, monkeypatch):
    """A cache entry whose files were removed is recomputed rather than pointing at nothing."""
    import shutil

    from tasks.cache import artifact_dir, stage_key

    root, first = synth_outputs
    monkeypatch.chdir(root)
    shutil.rmtree(artifact_dir(stage_key("synth-heldout-pool", [BaseConfig(), TINY])))
    assert synth_flow(BaseConfig(), TINY)["metrics"] == first["metrics"]
