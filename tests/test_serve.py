"""The pipeline deployment that `python -m flows.serve` serves: name, schedule from params, parameters;
bad schedules exit 2 with one line before anything is served."""

from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from flows import serve
from r3.config import ScheduleConfig

PROJECT_PARAMS = Path(__file__).resolve().parent.parent / "params.yaml"


def test_cron_deployment_of_the_pipeline_flow():
    deployment = serve.pipeline_deployment(ScheduleConfig(cron="0 3 * * *"), "tiny.yaml", ["rl.kl=false"])
    assert deployment.name == "r3flow-pipeline" and deployment.flow_name == "pipeline"
    assert deployment.entrypoint == "flows/pipeline.py:pipeline_flow"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "0 3 * * *" and schedule.active
    assert deployment.parameters == {"params": "tiny.yaml", "overrides": ["rl.kl=false"]}


def test_interval_and_unscheduled_deployments():
    [schedule] = serve.pipeline_deployment(ScheduleConfig(interval_minutes=90)).schedules
    assert schedule.schedule.interval == timedelta(minutes=90)
    assert serve.pipeline_deployment(ScheduleConfig()).schedules == []


def test_schedule_config_allows_one_kind_at_most():
    with pytest.raises(ValidationError, match="not both"):
        ScheduleConfig(cron="0 3 * * *", interval_minutes=60)


@pytest.mark.parametrize(("schedule", "message"), [
    ({"cron": "every night"}, "schedule.cron: not a cron expression (got 'every night')"),
    ({"cron": "0 3 * * *", "interval_minutes": 60}, "schedule: Value error, set cron or interval_minutes, not both"),
    ({"interval_minutes": 0}, "schedule.interval_minutes: Input should be greater than or equal to 1"),
    ({"crno": "0 3 * * *"}, "schedule.crno: unknown key"),
])
def test_bad_schedule_exits_2_with_one_line(tmp_path, monkeypatch, capsys, schedule, message):
    params = yaml.safe_load(PROJECT_PARAMS.read_text())
    params["schedule"] = schedule
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(serve, "serve", lambda *a: pytest.fail("served a bad schedule"))
    assert serve.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_main_serves_the_deployment_with_the_overrides(monkeypatch):
    monkeypatch.chdir(PROJECT_PARAMS.parent)
    served = []
    monkeypatch.setattr(serve, "serve", lambda *deployments: served.extend(deployments))
    assert serve.main(["-S", "schedule.interval_minutes=5", "-S", "evaluate.per_tag=2"]) == 0
    [deployment] = served
    assert deployment.schedules[0].schedule.interval == timedelta(minutes=5)
    assert deployment.parameters["overrides"] == ["schedule.interval_minutes=5", "evaluate.per_tag=2"]
