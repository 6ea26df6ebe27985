"""MLflow lineage: a stage run logs its input tables as datasets whose digest is DVC's content hash and whose source
is the path; the experiment opens in MLflow's model-training view (tasks.tracking)."""

import mlflow
from dvc_data.hashfile.build import build
from dvc_data.hashfile.db import HashFileDB
from dvc_objects.fs.local import LocalFileSystem

from r3.config import BaseConfig
from tasks.tracking import EXPERIMENT_KIND, dvc_md5, stage_run


def dvc_hash(path, odb_dir) -> str:
    """The hash DVC itself computes for `path` (what `dvc add` / dvc.lock record)."""
    fs = LocalFileSystem()
    _, _, obj = build(HashFileDB(fs, str(odb_dir)), str(path), fs, "md5")
    return obj.hash_info.value


def test_training_run_logs_its_tables_with_dvc_hashes_in_a_model_training_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = tmp_path / "data" / "synth" / "train"
    (tables / "images").mkdir(parents=True)
    (tables / "prompts.parquet").write_bytes(b"PAR1 prompts")
    (tables / "images" / "a.parquet").write_bytes(b"PAR1 images")
    single = tmp_path / "data" / "extra.parquet"
    single.write_bytes(b"PAR1 extra")
    inputs = [tables.relative_to(tmp_path), single.relative_to(tmp_path)]

    base = BaseConfig(experiment="lineage", system_metrics=False)
    with stage_run("sft", base.experiment, {"base": base}, inputs=inputs) as run:
        pass

    client = mlflow.MlflowClient()
    assert client.get_experiment_by_name("lineage").tags[EXPERIMENT_KIND[0]] == "custom_model_development"
    logged = {i.dataset.name: i for i in client.get_run(run.info.run_id).inputs.dataset_inputs}
    assert set(logged) == {"data/synth/train", "data/extra.parquet"}
    train = logged["data/synth/train"]
    assert train.dataset.digest == dvc_md5(inputs[0]) == dvc_hash(tables, tmp_path / "odb")
    assert train.dataset.digest.endswith(".dir")
    assert train.dataset.source == '{"uri": "data/synth/train"}' and train.dataset.source_type == "local"
    assert {t.key: t.value for t in train.tags}["mlflow.data.context"] == "training"
    assert logged["data/extra.parquet"].dataset.digest == dvc_hash(single, tmp_path / "odb")
