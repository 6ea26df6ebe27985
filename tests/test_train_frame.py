"""The frame both training stages share: the history file and its recorder."""

import json
from pathlib import Path

from r3.train.frame import history_file, other_process_result


def test_history_starts_with_a_resumed_runs_lines_and_records_each_metric_once(tmp_path: Path) -> None:
    logged: list[tuple[dict, int]] = []
    lines = ['{"step": 0, "loss": 1.0}\n']  # a resumed run's history
    with history_file(tmp_path, True, lambda metrics, step: logged.append((metrics, step)), lines) as record:
        record({"loss": 0.5}, 1)
        assert json.loads((tmp_path / "history.jsonl").read_text().splitlines()[-1]) == {"step": 1, "loss": 0.5}
    assert (tmp_path / "history.jsonl").read_text().splitlines() == [line.rstrip("\n") for line in lines]
    assert [json.loads(line)["step"] for line in lines] == [0, 1]
    assert logged == [({"loss": 0.5}, 1)]


def test_a_non_main_process_writes_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    with history_file(tmp_path, False, lambda metrics, step: None, lines) as record:
        record({"loss": 0.5}, 0)
    assert list(tmp_path.iterdir()) == []
    result = other_process_result(tmp_path)
    assert result.metrics == {"headline": {}} and not result.checkpoint.exists() and result.samples == []
