"""Seed view: configs from overrides, grouping over seeds, mean ± sd, the exact seeds.json shape, the Markdown, the
training-reward trend, and `python -m flows.compare --seeds` on a `dvc exp show --json` laid out as DVC 3.67 writes it."""

import json
from pathlib import Path

import pytest

from flows.compare import main, mlflow_trends
from r3.config import BaseConfig
from r3.evals.compare import rows_from_dvc
from r3.evals.evaluate import headline
from r3.evals.seeds import (LABELS, METRICS, RewardTrend, config_label, experiments_first, param_text, parse_label,
                            reward_trend, seed_runs, seeds_markdown, trend_lines)
from r3.rewards import RewardConfig
from r3.rl.config import RlConfig
from tasks.tracking import flat_params, metric_logger, stage_run

METRICS_FILE = "data/evaluate/metrics.json"
PARAMS = {"base": {"seed": 0, "canvas": 32}, "rl": {"refine_steps": 1, "kl": True, "beta_text": 0.05,
                                                    "reward": {"name": "verifier", "params": {"mode": "partial"}}}}
DEFAULTS = {"base.seed": 0, "base.canvas": 32, "rl.refine_steps": 1, "rl.kl": True, "rl.beta_text": 0.05,
            "rl.reward.name": "verifier", "rl.reward.params.mode": "partial"}


def checkpoint(pp: float, pp_r3: float, ge: float, ita: float, vqa: float) -> dict:
    """One checkpoint of metrics.json: GenEval++ over 4 rounds (0..3), GenEval round 0, ITA, VQA, scaling rows."""
    rounds = [pp, (pp + pp_r3) / 2, pp_r3, pp_r3]
    return {
        "generation": {"geneval_pp": [{"overall": v, "per_tag": {}} for v in rounds],
                       "geneval": [{"overall": ge, "per_tag": {}}]},
        "scaling": [{"round": k, "accuracy": v, "finished": 0.0 if k == 0 else 0.5 + 0.1 * k,
                     "improved": 0 if k == 0 else 2, "worse": 0 if k == 0 else 1, "unchanged": 20}
                    for k, v in enumerate(rounds)],
        "ita": {"overall": ita, "per_tag": {}}, "vqa": {"overall": vqa, "per_category": {}},
    }


def evaluate_metrics(sft: float, rl: float) -> dict:
    """metrics.json as r3.evals.evaluate writes it, its headline made by evaluate's own `headline`."""
    metrics = {"suites": {"geneval_pp": [], "geneval": []}, "scaling_suite": "geneval_pp", "max_rounds": 3,
               "reference": "sft",
               "checkpoints": {"sft": checkpoint(sft, sft + 0.01, 0.5, 0.6, 0.7),
                               "rl": checkpoint(rl, rl + 0.05, 0.55, 0.61, 0.69)}}
    return {"headline": headline(metrics), **metrics}


def state(name: str, rev: str, seed: int, metrics: dict | None, **rl: object) -> dict:
    """One `dvc exp show --json` state (params.yaml with `rl` overrides); no metrics = a failed experiment."""
    params = {**PARAMS, "base": {**PARAMS["base"], "seed": seed}, "rl": {**PARAMS["rl"], **rl}}
    result = {"data": metrics} if metrics else {"error": {"type": "FileNotFoundError", "msg": "no such file"}}
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {"params.yaml": {"data": params}},
                                               "metrics": {METRICS_FILE: result}}, "error": None, "experiments": None}


SFT = {0: 0.02, 1: 0.03, 2: 0.04}
RL = {("default", 0): 0.10, ("default", 1): 0.20, ("default", 2): 0.30,
      ("reason-only", 0): 0.05, ("reason-only", 1): 0.07, ("control-no-reward", 0): 0.02}


def entries() -> list[dict]:
    """Workspace, baseline (default config, seed 0, different numbers), and its experiments, newest first."""
    overrides = {"default": {}, "reason-only": {"refine_steps": 0}, "control-no-reward": {"reward": {
        "name": "none", "params": {"mode": "partial"}}}}
    experiments = [state(f"{config}-{seed}", f"{i:040x}", seed, evaluate_metrics(SFT[seed], rl), **overrides[config])
                   for i, ((config, seed), rl) in enumerate(RL.items(), start=1)]
    experiments.append(state("failed-1", "f" * 40, 1, None, reward={"name": "none", "params": {"mode": "partial"}}))
    baseline = {**state("main", "a" * 40, 0, evaluate_metrics(0.5, 0.5)),
                "experiments": [{"revs": experiments, "executor": None}]}
    return [state(None, "workspace", 0, evaluate_metrics(0.5, 0.5)), baseline]


def runs():
    return seed_runs(rows_from_dvc(experiments_first(entries()), metrics_file=METRICS_FILE), DEFAULTS)


def test_values_are_spelled_alike_from_dvc_and_mlflow_and_configs_are_named():
    assert param_text(0) == param_text(0.0) == param_text("0.0") == "0"
    assert param_text(True) == param_text("True") == "true" and param_text(None) == param_text("None") == "null"
    assert param_text(["edit", "answer"]) == '["edit", "answer"]' and param_text("none") == "none"
    assert config_label({}) == "default"
    assert config_label({"rl.refine_steps": "0"}) == "reason-only"
    assert config_label({"rl.reward.name": "none"}) == "control-no-reward"
    assert config_label({"rl.refine_steps": "0", "rl.beta_text": "0.001"}) == "rl.beta_text=0.001+reason-only"
    assert config_label({"rl.w_text": "0", "rl.w_image": "0"}) == "control-replay-only"
    assert parse_label("rl.kl=False:no-kl-penalty") == ("rl.kl=false", "no-kl-penalty")
    with pytest.raises(ValueError, match="KEY=VALUE:NAME"):
        parse_label("textbook")


def test_runs_group_by_config_with_one_record_of_the_exact_shape_per_seed():
    found, repeats = runs()
    records = [run.record for run in found]
    assert [(r["config"], r["seed"]) for r in records] == [
        ("default", 0), ("default", 1), ("default", 2), ("control-no-reward", 0), ("reason-only", 0), ("reason-only", 1)]
    assert all(list(r) == ["config", "seed", *METRICS] for r in records)
    assert list(METRICS) == ["sft/geneval_pp", "rl/geneval_pp", "rl/geneval_pp_r3", "sft/geneval_pp_r3", "rl/geneval",
                             "sft/geneval", "rl/ita", "sft/ita", "rl/vqa", "sft/vqa"]
    assert records[1] == {"config": "default", "seed": 1, "sft/geneval_pp": 0.03, "rl/geneval_pp": 0.20,
                          "rl/geneval_pp_r3": pytest.approx(0.25), "sft/geneval_pp_r3": pytest.approx(0.04),
                          "rl/geneval": 0.55, "sft/geneval": 0.5, "rl/ita": 0.61, "sft/ita": 0.6, "rl/vqa": 0.69,
                          "sft/vqa": 0.7}
    assert records[0]["rl/geneval_pp"] == 0.10  # the experiment, not the baseline commit of the same config and seed
    assert repeats == ["main"]  # the workspace is never read; the failed experiment has no headline


def test_markdown_gives_mean_and_sd_over_seeds_per_config():
    found, repeats = runs()
    lines = seeds_markdown(found, repeats=repeats).splitlines()
    # default RL GenEval++ over seeds 0, 1, 2: 0.1, 0.2, 0.3 -> mean 0.2, sample sd 0.1; + R3: each + 0.05
    assert "| SFT | 0, 1, 2 | 0.030 ± 0.010 | 0.040 ± 0.010 | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.700 ± 0.000 |" in lines
    assert "| RL (default) | 0, 1, 2 | 0.200 ± 0.100 | 0.250 ± 0.100 | 0.550 ± 0.000 | 0.610 ± 0.000 | 0.690 ± 0.000 |" \
        in lines
    assert "| RL (reason-only) | 0, 1 | 0.060 ± 0.014 | 0.110 ± 0.014 | 0.550 ± 0.000 | 0.610 ± 0.000 | 0.690 ± 0.000 |" \
        in lines
    assert "| RL (control-no-reward) | 0 | 0.020 | 0.070 | 0.550 | 0.610 | 0.690 |" in lines  # one seed: no sd
    assert "| default | 1 | default-1 | 0.030 | 0.200 | 0.250 | 0.040 | 0.550 | 0.500 | 0.610 | 0.600 | 0.690 | 0.700 |" \
        in lines
    # scaling after 2 rounds: accuracy 0.1+0.05, 0.2+0.05, 0.3+0.05; finished 0.7 each; 2 improved, 1 worse
    assert "| default | rl | 2 | 3 | 0.250 ± 0.100 | 0.700 ± 0.000 | 2.0 ± 0.0 | 1.0 ± 0.0 |" in lines
    assert lines[-1] == "Left out as repeats of an earlier run of the same config and seed: main."


def test_reward_trend_averages_the_first_and_last_reason_steps():
    history = [{"step": s, "reward/verifier_partial": 0.1 * s, **({"reward/reason_mean": 0.0} if s % 2 == 0 else {})}
               for s in range(10)]
    history.append({"step": 10, "heldout/generation_strict/geneval_pp": 0.0})  # an evaluation row
    # reason steps 0, 2, 4, 6, 8: first two (0.0, 0.2) -> 0.1, last two (0.6, 0.8) -> 0.7
    assert reward_trend(history[::-1], "reward/verifier_partial", 2) == pytest.approx((0.1, 0.7))
    assert reward_trend(history, "reward/verifier_partial", 3) is None  # 5 reason steps < 2 windows
    default = [RewardTrend("default", s, 0.2, 0.2 + rise) for s, rise in enumerate((0.10, 0.12, 0.14))]
    control = [RewardTrend("control-no-reward", s, 0.2, 0.2 + rise) for s, rise in enumerate((0.0, 0.01, -0.01))]
    lines = trend_lines(control + default, "reward/verifier_partial", 20)
    assert "| default | 0, 1, 2 | 0.200 ± 0.000 | 0.320 ± 0.020 | 0.120 ± 0.020 |" in lines
    assert lines[-1] == ("- default rises +0.120 ± 0.020, control-no-reward +0.000 ± 0.010: the difference +0.120 is "
                         "more than 2 sd (0.040).")


def test_flows_compare_writes_the_seed_view(tmp_path: Path) -> None:
    saved, defaults = tmp_path / "exp_show.json", tmp_path / "params.yaml"
    saved.write_text(json.dumps(entries()))
    defaults.write_text(json.dumps(PARAMS))  # JSON is YAML
    out = tmp_path / "reports"
    code = main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out", str(out),
                 "--reward-window", "0", "--label", "rl.refine_steps=0:tree-rl-without-refine"])
    assert code == 0
    records = json.loads((out / "seeds.json").read_text())
    assert [(r["config"], r["seed"]) for r in records][-2:] == [("tree-rl-without-refine", 0),
                                                                ("tree-rl-without-refine", 1)]
    assert records[:4] == [run.record for run in runs()[0]][:4]
    assert "| RL (tree-rl-without-refine) | 0, 1 |" in (out / "seeds.md").read_text()
    saved.write_text(json.dumps([entries()[0]]))  # the workspace only: nothing to show
    assert main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out", str(out)]) == 2


def test_reward_trends_come_from_the_newest_mlflow_rl_run_of_each_config_and_seed() -> None:
    """rl runs logged as flows.rl logs them (every config field as a param, one metric batch per step)."""
    defaults = flat_params({"base": BaseConfig(), "rl": RlConfig()})
    control = RlConfig(reward=RewardConfig(name="none", params={"mode": "partial"}))
    for cfg, seed, slope in ((RlConfig(), 0, -1.0), (RlConfig(), 0, 0.1), (control, 0, 0.0), (RlConfig(), 1, 0.2)):
        with stage_run("rl", "seeds", {"base": BaseConfig(seed=seed), "rl": cfg}) as run:
            log = metric_logger(run.info.run_id)
            for step in range(8):  # reason steps are the even ones
                log({"reward/verifier_partial": 0.3 + slope * step,
                     **({"reward/reason_mean": 0.0} if step % 2 == 0 else {})}, step)
    trends = mlflow_trends("seeds", defaults, LABELS, "reward/verifier_partial", 2)
    # reason steps 0, 2 | 4, 6: start 0.3 + slope, end 0.3 + 5 slope
    assert sorted((t.config, t.seed, round(t.initial, 6), round(t.final, 6)) for t in trends) == [
        ("control-no-reward", 0, 0.3, 0.3), ("default", 0, 0.4, 0.8), ("default", 1, 0.5, 1.3)]
