"""Ablation comparison table and its readers, on hand-built MLflow and `dvc exp show --json` inputs."""

import csv
import io

import pytest

from r3.evals.compare import compare_table, flatten, rows_from_dvc, rows_from_mlflow

ROWS = [
    {"name": "full", "params": {"rl.refine_steps": 1, "base.seed": 0},
     "metrics": {"rl/geneval_pp": 0.5, "rl/ita": 0.75}},
    {"name": "reason-only", "params": {"rl.refine_steps": 0, "base.seed": 0}, "metrics": {"rl/geneval_pp": 0.25}},
]


def test_compare_table_shows_the_knobs_that_differ_and_every_metric():
    markdown, text = compare_table(ROWS)
    lines = markdown.splitlines()
    assert lines[0] == "| run | rl.refine_steps | rl/geneval_pp | rl/ita |"
    assert lines[2] == "| full | 1 | 0.5 | 0.75 |"
    assert lines[3] == "| reason-only | 0 | 0.25 |  |"
    assert list(csv.reader(io.StringIO(text))) == [
        ["run", "rl.refine_steps", "rl/geneval_pp", "rl/ita"],
        ["full", "1", "0.5", "0.75"],
        ["reason-only", "0", "0.25", ""],
    ]


def test_compare_table_metric_selection_precision_and_single_run():
    rows = [{"name": "a|b", "params": {"x": 1}, "metrics": {"m": 1 / 3, "n": 2.0}}]
    markdown, text = compare_table(rows, metrics=["m"])
    assert markdown.splitlines()[0] == "| run | x | m |"  # one run: every param shown
    assert markdown.splitlines()[2] == "| a\\|b | 1 | 0.3333 |"
    assert text.splitlines()[1] == f"a|b,1,{1 / 3}"  # full precision in the CSV
    with pytest.raises(ValueError, match="no runs"):
        compare_table([])


def test_rows_from_mlflow_reads_run_dicts_and_search_records():
    as_dict = {"info": {"run_id": "abc", "run_name": "sft-lr"}, "data": {"params": {"sft.lr": "0.002"},
                                                                         "metrics": {"final/vqa": 0.9}, "tags": {}}}
    record = {"run_id": "def", "tags.mlflow.runName": None, "params.sft.lr": "0.001", "metrics.final/vqa": 0.8,
              "metrics.other": None, "status": "FINISHED"}
    assert rows_from_mlflow([as_dict, record]) == [
        {"name": "sft-lr", "params": {"sft.lr": "0.002"}, "metrics": {"final/vqa": 0.9}},
        {"name": "def", "params": {"sft.lr": "0.001"}, "metrics": {"final/vqa": 0.8}},
    ]


def _state(rev, name, seed, accuracy, experiments=None):
    data = {
        "rev": rev, "timestamp": None, "meta": {}, "deps": {}, "outs": {},
        "params": {"params.yaml": {"data": {"base": {"seed": seed}, "rl": {"steps": 10}}},
                   "extra.yaml": {"data": {"k": 1}}},
        "metrics": {"data/evaluate/metrics.json": {"data": {"headline": {"sft/geneval_pp": accuracy}}},
                    "data/sft/metrics.json": {"data": {"headline": {"vqa": 0.5}}}},
    }
    return {"rev": rev, "name": name, "data": data, "error": None, "experiments": experiments}


def test_rows_from_dvc_walks_baselines_and_experiments():
    shown = [
        _state("workspace", None, 0, 0.1),
        _state("0123456789abcdef", "main", 0, 0.2, experiments=[
            {"revs": [_state("fedcba9876543210", "exp-seed1", 1, 0.3)], "executor": None, "name": "exp-seed1"},
            {"revs": [{"rev": "1111111", "name": "exp-failed", "data": None, "error": {"msg": "x"},
                       "experiments": None}],
             "executor": {"state": "failed"}, "name": "exp-failed"},
        ]),
    ]
    rows = rows_from_dvc(shown, metrics_file="data/evaluate/metrics.json")
    assert [r["name"] for r in rows] == ["workspace", "main", "exp-seed1"]
    assert rows[2]["params"] == {"base.seed": 1, "rl.steps": 10, "extra.yaml:k": 1}
    assert rows[2]["metrics"] == {"headline.sft/geneval_pp": 0.3}
    everything = rows_from_dvc(shown)[0]["metrics"]
    assert everything == {"data/evaluate/metrics.json:headline.sft/geneval_pp": 0.1,
                          "data/sft/metrics.json:headline.vqa": 0.5}
    markdown, _ = compare_table(rows)
    assert markdown.splitlines()[0] == "| run | base.seed | headline.sft/geneval_pp |"
    assert markdown.splitlines()[4] == "| exp-seed1 | 1 | 0.3 |"


def test_flatten_joins_nested_keys():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": 1, "a.c.d": [1, 2], "e": None}
