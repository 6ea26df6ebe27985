"""Seed view: configs from overrides, a run's identity (config, SFT seed, RL seed), grouping over RL seeds, mean ± sd,
the exact seeds.json shape with figures from the evaluate, rl and sft metrics files, the Markdown, the training-reward
trend, and `python -m flows.compare --seeds` on a `dvc exp show --json` laid out as DVC 3.67 writes it."""

import json
from pathlib import Path

import pytest

from flows.compare import main, mlflow_trends, training_reward_key
from r3.config import BaseConfig
from r3.evals.compare import rows_from_dvc
from r3.evals.evaluate import headline
from r3.evals.seeds import (LABELS, METRICS, OPTIONAL, RewardTrend, config_label, experiments_first, param_text,
                            parse_label, reward_trend, run_identity, seed_runs, seeds_markdown, trend_lines)
from r3.rewards import RewardConfig
from r3.rl.config import RlConfig
from r3.train.heldout_view import skill_headline
from tasks.tracking import flat_params, metric_logger, stage_run

EVALUATE_FILE, RL_FILE, SFT_FILE = "data/evaluate/metrics.json", "data/rl/metrics.json", "data/sft/metrics.json"
PARAMS = {"base": {"seed": 0, "canvas": 32}, "rl": {"seed": None, "refine_steps": 1, "kl": True, "beta_text": 0.05,
                                                    "reward": {"name": "verifier", "params": {"mode": "partial"}}}}
DEFAULTS = {"base.seed": 0, "base.canvas": 32, "rl.seed": None, "rl.refine_steps": 1, "rl.kl": True,
            "rl.beta_text": 0.05, "rl.reward.name": "verifier", "rl.reward.params.mode": "partial"}


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


def stage_metrics(editing: float, fidelity: float, seconds: float) -> dict:
    """data/{sft,rl}/metrics.json as the training stages write it: the held-out view, its `skill_headline`, times."""
    view = {"vqa": {"overall": 0.8}, "ita": {"overall": 0.9}, "reasoning_validity": {"overall": 0.7},
            "reflection": {"overall": 0.6}, "editing": {"overall": editing},
            "render_fidelity": {"strict": {"overall": {"geneval_pp": fidelity, "geneval": fidelity}}},
            "generation": {"strict": {"overall": {"geneval_pp": 0.4}}, "partial": {"overall": {"geneval_pp": 0.5}}}}
    return {"headline": skill_headline(view), **view, "train_seconds": seconds - 20, "total_seconds": seconds}


def pipeline_metrics(sft: float, rl: float, rl_seconds: float) -> dict:
    """Every metrics file of the pipeline: the SFT stage's (1000 s: never rl_seconds), the rl stage's, evaluate's."""
    return {EVALUATE_FILE: evaluate_metrics(sft, rl), RL_FILE: stage_metrics(0.55, 0.97, rl_seconds),
            SFT_FILE: stage_metrics(0.6, 0.99, 1000.0)}


def state(name: str | None, rev: str, sft_seed: int, rl_seed: int | None, files: dict | None, **rl: object) -> dict:
    """One `dvc exp show --json` state (params.yaml with `rl` overrides); no files = a failed experiment."""
    params = {**PARAMS, "base": {**PARAMS["base"], "seed": sft_seed}, "rl": {**PARAMS["rl"], "seed": rl_seed, **rl}}
    metrics = ({path: {"data": data} for path, data in files.items()} if files else
               {EVALUATE_FILE: {"error": {"type": "FileNotFoundError", "msg": "no such file"}}})
    return {"rev": rev, "name": name, "data": {"rev": rev, "params": {"params.yaml": {"data": params}},
                                               "metrics": metrics}, "error": None, "experiments": None}


SFT = {0: 0.02, 1: 0.03}
RL = {("default", 0, 0): 0.10, ("default", 0, 1): 0.20, ("default", 0, 2): 0.30, ("default", 1, None): 0.40,
      ("reason-only", 0, 0): 0.05, ("reason-only", 0, 1): 0.07, ("control", 0, 0): 0.02}
"""RL GenEval++ by (config, base.seed, rl.seed); the base.seed=1 pipeline runs with rl.seed null (RL seed 1)."""


def entries() -> list[dict]:
    """Workspace, baseline (default config, base.seed 0, rl.seed null: RL seed 0, other numbers), and its
    experiments, newest first; rl_seconds = 300 + 10 * RL seed."""
    overrides = {"default": {}, "reason-only": {"refine_steps": 0}, "control": {"reward": {
        "name": "none", "params": {"mode": "partial"}}}}
    experiments = [state(f"{config}-sft{sft_seed}-{rl_seed}", f"{i:040x}", sft_seed, rl_seed,
                         pipeline_metrics(SFT[sft_seed], rl, 300.0 + 10 * (sft_seed if rl_seed is None else rl_seed)),
                         **overrides[config])
                   for i, ((config, sft_seed, rl_seed), rl) in enumerate(RL.items(), start=1)]
    experiments.append(state("failed-1", "f" * 40, 0, 1, None, reward={"name": "none", "params": {"mode": "partial"}}))
    baseline = {**state("main", "a" * 40, 0, None, pipeline_metrics(0.5, 0.5, 1.0)),
                "experiments": [{"revs": experiments, "executor": None}]}
    return [state(None, "workspace", 0, None, pipeline_metrics(0.5, 0.5, 1.0)), baseline]


def runs():
    return seed_runs(rows_from_dvc(experiments_first(entries())), DEFAULTS)


def test_values_are_spelled_alike_from_dvc_and_mlflow_and_configs_are_named():
    assert param_text(0) == param_text(0.0) == param_text("0.0") == "0"
    assert param_text(True) == param_text("True") == "true" and param_text(None) == param_text("None") == "null"
    assert param_text(["edit", "answer"]) == '["edit", "answer"]' and param_text("none") == "none"
    assert config_label({}) == "default"
    assert config_label({"rl.refine_steps": "0"}) == "reason-only"
    assert config_label({"rl.reward.name": "none"}) == "control"
    assert config_label({"rl.refine_steps": "0", "rl.beta_text": "0.001"}) == "rl.beta_text=0.001+reason-only"
    assert config_label({"rl.w_text": "0", "rl.w_image": "0"}) == "control-replay-only"
    assert parse_label("rl.kl=False:no-kl-penalty") == ("rl.kl=false", "no-kl-penalty")
    with pytest.raises(ValueError, match="KEY=VALUE:NAME"):
        parse_label("textbook")


def test_a_run_is_its_config_sft_seed_and_rl_seed():
    # rl.seed as DVC gives it (int or null), as MLflow logs it (strings, "None"), or missing (runs before the param)
    assert run_identity({"base.seed": 0, "rl.seed": 2}, DEFAULTS) == ("default", 0, 2)
    assert run_identity({"base.seed": "0", "rl.seed": "2"}, DEFAULTS) == ("default", 0, 2)
    assert run_identity({"base.seed": 1, "rl.seed": None}, DEFAULTS) == ("default", 1, 1)
    assert run_identity({"base.seed": "1", "rl.seed": "None"}, DEFAULTS) == ("default", 1, 1)
    assert run_identity({"base.seed": 1}, DEFAULTS) == ("default", 1, 1)
    assert run_identity({"base.seed": 0, "rl.seed": 1, "rl.refine_steps": 0}, DEFAULTS) == ("reason-only", 0, 1)


def test_runs_group_by_config_sft_seed_and_rl_seed_with_records_of_the_exact_shape():
    found, repeats = runs()
    records = [run.record for run in found]
    assert [(r["config"], r["sft_seed"], r["seed"]) for r in records] == [
        ("default", 0, 0), ("default", 0, 1), ("default", 0, 2), ("default", 1, 1), ("control", 0, 0),
        ("reason-only", 0, 0), ("reason-only", 0, 1)]
    assert list(METRICS) == ["sft/geneval_pp", "rl/geneval_pp", "rl/geneval_pp_r3", "sft/geneval", "rl/geneval",
                             "sft/ita", "rl/ita", "sft/vqa", "rl/vqa", "rl/render_fidelity", "rl/editing",
                             "sft/editing", "rl_seconds", *OPTIONAL]
    assert all(list(r) == ["config", "seed", "sft_seed", *METRICS] for r in records)
    # evaluate's headline; render fidelity and editing from the training stages' held-out view; rl's total_seconds
    assert records[1] == {"config": "default", "seed": 1, "sft_seed": 0, "sft/geneval_pp": 0.02, "rl/geneval_pp": 0.20,
                          "rl/geneval_pp_r3": pytest.approx(0.25), "sft/geneval": 0.5, "rl/geneval": 0.55,
                          "sft/ita": 0.6, "rl/ita": 0.61, "sft/vqa": 0.7, "rl/vqa": 0.69,
                          "rl/render_fidelity": pytest.approx(0.97), "rl/editing": 0.55, "sft/editing": 0.6,
                          "rl_seconds": 310.0, **dict.fromkeys(OPTIONAL)}  # these metrics files predate them
    # the base.seed=1 pipeline (rl.seed null: RL seed 1) stands beside RL seed 1 of SFT seed 0, not on it
    assert (records[3]["sft/geneval_pp"], records[3]["rl/geneval_pp"], records[3]["rl_seconds"]) == (0.03, 0.40, 310.0)
    assert records[0]["rl/geneval_pp"] == 0.10  # the experiment, not the baseline commit of the same run
    assert repeats == ["main"]  # rl.seed null = base.seed 0; the workspace is never read; no headline in the failed one


def test_a_run_without_the_training_stages_metrics_has_none_for_their_figures():
    state_ = state("old", "b" * 40, 0, None, {EVALUATE_FILE: evaluate_metrics(0.02, 0.1)})
    (run,), _ = seed_runs(rows_from_dvc([state_]), DEFAULTS)
    assert [key for key, value in run.record.items() if value is None] == [
        "rl/render_fidelity", "rl/editing", "sft/editing", "rl_seconds", *OPTIONAL]


def test_markdown_gives_mean_and_sd_over_rl_seeds_per_config_and_sft_seed():
    found, repeats = runs()
    lines = seeds_markdown(found, repeats=repeats).splitlines()
    # SFT seed 0 as its six runs evaluated it; GenEval++, +R3, GenEval, ITA, VQA, editing, render fidelity
    assert "| SFT | 0 | - | 0.020 ± 0.000 | - | 0.500 ± 0.000 | 0.600 ± 0.000 | 0.700 ± 0.000 | 0.600 ± 0.000 | - |" \
        in lines
    assert "| SFT | 1 | - | 0.030 | - | 0.500 | 0.600 | 0.700 | 0.600 | - |" in lines
    # default RL GenEval++ over RL seeds 0, 1, 2: 0.1, 0.2, 0.3 -> mean 0.2, sample sd 0.1; + R3: each + 0.05
    assert ("| RL (default) | 0 | 0, 1, 2 | 0.200 ± 0.100 | 0.250 ± 0.100 | 0.550 ± 0.000 | 0.610 ± 0.000 | "
            "0.690 ± 0.000 | 0.550 ± 0.000 | 0.970 ± 0.000 |") in lines
    assert "| RL (default) | 1 | 1 | 0.400 | 0.450 | 0.550 | 0.610 | 0.690 | 0.550 | 0.970 |" in lines
    assert "| RL (control) | 0 | 0 | 0.020 | 0.070 | 0.550 | 0.610 | 0.690 | 0.550 | 0.970 |" in lines
    assert ("| default | 0 | 0, 1, 2 | 0.020 ± 0.000 | 0.200 ± 0.100 | 0.250 ± 0.100 | 0.500 ± 0.000 | 0.550 ± 0.000 | "
            "0.600 ± 0.000 | 0.610 ± 0.000 | 0.700 ± 0.000 | 0.690 ± 0.000 | 0.970 ± 0.000 | 0.550 ± 0.000 | "
            "0.600 ± 0.000 | 310 ± 10 |" + " - |" * len(OPTIONAL)) in lines
    assert ("| default | 1 | 1 | default-sft1-None | 0.030 | 0.400 | 0.450 | 0.500 | 0.550 | 0.600 | 0.610 | 0.700 | "
            "0.690 | 0.970 | 0.550 | 0.600 | 310 |" + " - |" * len(OPTIONAL)) in lines
    # gains: RL - SFT 0.08, 0.18, 0.28 -> 0.18 ± 0.1; R3 rounds after RL + 0.05 each
    assert ("| default | 0 | 0.180 ± 0.100 | 0: +0.080, 1: +0.180, 2: +0.280 | 0.050 ± 0.000 | "
            "0: +0.050, 1: +0.050, 2: +0.050 |") in lines
    assert "| reason-only | 0 | 0.040 ± 0.014 | 0: +0.030, 1: +0.050 | 0.050 ± 0.000 | 0: +0.050, 1: +0.050 |" in lines
    # scaling after 2 rounds: accuracy 0.1+0.05, 0.2+0.05, 0.3+0.05; finished 0.7 each; 2 improved, 1 worse
    assert "| default | 0 | rl | 2 | 3 | 0.250 ± 0.100 | 0.700 ± 0.000 | 2.0 ± 0.0 | 1.0 ± 0.0 |" in lines
    # over SFT seeds: RL - SFT 0.08, 0.18, 0.28 (SFT seed 0) and 0.37 (seed 1): mean 0.2275, SFT seeds' means 0.18
    # and 0.37, lowest run 0.08; GenEval +0.05, ITA +0.01, VQA -0.01, editing 0.55 - 0.6; rl s 300 + 10 * RL seed
    assert ("| default | 4 | 0, 1 | +0.228 | +0.180 | +0.080 | +0.050 | +0.050 | +0.010 | -0.010 | -0.050 | 0.970 | "
            "320 |") in lines
    assert "| reason-only | 2 | 0 | +0.040 | +0.040 | +0.030 | +0.050 | +0.050 | +0.010 | -0.010 | -0.050 | 0.970 | 310 |" \
        in lines
    # after the rounds, SFT seed 0: default 0.25, reason-only (0.10 + 0.12) / 2
    assert "- default minus reason-only, both after the R3 rounds: +0.140 (mean over SFT seeds 0)." in lines
    assert lines[-1] == "Left out as repeats of an earlier run of the same config, SFT seed and seed: main."


def test_reward_trend_averages_the_first_and_last_reason_steps():
    history = [{"step": s, "reward/verifier_partial": 0.1 * s, **({"reward/reason_mean": 0.0} if s % 2 == 0 else {})}
               for s in range(10)]
    history.append({"step": 10, "heldout/generation_strict/geneval_pp": 0.0})  # an evaluation row
    # reason steps 0, 2, 4, 6, 8: first two (0.0, 0.2) -> 0.1, last two (0.6, 0.8) -> 0.7
    assert reward_trend(history[::-1], "reward/verifier_partial", 2) == pytest.approx((0.1, 0.7))
    assert reward_trend(history, "reward/verifier_partial", 3) is None  # 5 reason steps < 2 windows
    default = [RewardTrend("default", 0, s, 0.2, 0.2 + rise) for s, rise in enumerate((0.10, 0.12, 0.14))]
    control = [RewardTrend("control", 0, s, 0.2, 0.2 + rise) for s, rise in enumerate((0.0, 0.01, -0.01))]
    other_sft = [RewardTrend("default", 1, 1, 0.2, 0.5)]
    better = [RewardTrend("reason-only", 0, s, 0.2, 0.2 + rise) for s, rise in enumerate((0.30, 0.32, 0.34))]
    lines = trend_lines(control + other_sft + default + better, "reward/verifier_partial", 20)
    assert "| default | 0 | 0, 1, 2 | 0.200 ± 0.000 | 0.320 ± 0.020 | 0.120 ± 0.020 |" in lines
    assert "| default | 1 | 1 | 0.200 | 0.500 | 0.300 |" in lines
    assert lines[-2:] == ["- SFT seed 0: default rises +0.120 ± 0.020, control +0.000 ± 0.010: the difference +0.120 "
                          "is more than 2 sd (0.040).",
                          "- SFT seed 0: default rises +0.120 ± 0.020, reason-only +0.320 ± 0.020: the difference "
                          "-0.200 is more than 2 sd (0.040)."]


def test_flows_compare_writes_the_seed_view(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository: no committed metrics to add
    saved, defaults = tmp_path / "exp_show.json", tmp_path / "params.yaml"
    saved.write_text(json.dumps(entries()))
    defaults.write_text(json.dumps(PARAMS))  # JSON is YAML
    out = tmp_path / "reports"
    code = main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out", str(out),
                 "--reward-window", "0", "--label", "rl.refine_steps=0:tree-rl-without-refine"])
    assert code == 0
    records = json.loads((out / "seeds.json").read_text())
    assert [(r["config"], r["sft_seed"], r["seed"]) for r in records][-2:] == [("tree-rl-without-refine", 0, 0),
                                                                               ("tree-rl-without-refine", 0, 1)]
    assert records[:5] == [run.record for run in runs()[0]][:5]
    assert "| RL (tree-rl-without-refine) | 0 | 0, 1 |" in (out / "seeds.md").read_text()
    saved.write_text(json.dumps([entries()[0]]))  # the workspace only: nothing to show
    assert main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out", str(out)]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "dvc exp run --queue -S rl.seed=0,1,2" in " ".join(capsys.readouterr().out.split())


def test_the_default_reward_curve_is_the_one_the_defaults_train_with() -> None:
    assert training_reward_key({"rl": {"steps": 3}}) == "reward/verifier_strict"  # RlConfig's default reward
    partial = {"rl": {"reward": {"name": "verifier", "params": {"mode": "partial"}}}}
    assert training_reward_key(partial) == "reward/verifier_partial"
    weighted = {"rl": {"reward": {"name": "weighted", "weights": [0.3, 0.7], "components": [
        {"name": "verifier", "params": {"mode": "strict"}}, {"name": "verifier", "params": {"mode": "partial"}}]}}}
    assert training_reward_key(weighted) == "reward/verifier_partial"


def test_reward_trends_come_from_the_newest_mlflow_rl_run_of_each_config_and_seed() -> None:
    """rl runs logged as flows.rl logs them (every config field as a param, one metric batch per step)."""
    defaults = flat_params({"base": BaseConfig(), "rl": RlConfig()})
    control = RlConfig(reward=RewardConfig(name="none", params=RlConfig().reward.params))  # -S rl.reward.name=none
    for sft_seed, cfg, slope in ((0, RlConfig(), -1.0), (0, RlConfig(seed=0), 0.1), (0, control, 0.0),
                                 (0, RlConfig(seed=1), 0.2), (1, RlConfig(), 0.3)):
        with stage_run("rl", "seeds", {"base": BaseConfig(seed=sft_seed), "rl": cfg}) as run:
            log = metric_logger(run.info.run_id)
            for step in range(8):  # reason steps are the even ones
                log({"reward/verifier_partial": 0.3 + slope * step,
                     **({"reward/reason_mean": 0.0} if step % 2 == 0 else {})}, step)
    trends = mlflow_trends("seeds", defaults, LABELS, "reward/verifier_partial", 2)
    # reason steps 0, 2 | 4, 6: start 0.3 + slope, end 0.3 + 5 slope; rl.seed 0 of base.seed 0 replaces the null run
    assert sorted((t.config, t.sft_seed, t.seed, round(t.initial, 6), round(t.final, 6)) for t in trends) == [
        ("control", 0, 0, 0.3, 0.3), ("default", 0, 0, 0.4, 0.8), ("default", 0, 1, 0.5, 1.3),
        ("default", 1, 1, 0.6, 1.8)]


def without_lists(tree: dict) -> dict:
    """A metrics tree as `dvc exp show --json` gives it: list values left out."""
    return {k: without_lists(v) if isinstance(v, dict) else v for k, v in tree.items() if not isinstance(v, list)}


def test_flows_compare_reads_the_scaling_rows_dvc_leaves_out_from_each_runs_commit(tmp_path, monkeypatch):
    import subprocess

    monkeypatch.chdir(tmp_path)
    subprocess.run(["git", "init", "-q"], check=True)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    listed = entries()
    for exp in listed[1]["experiments"][0]["revs"]:
        if exp["name"] != "default-sft0-1":
            continue
        evaluate = exp["data"]["metrics"][EVALUATE_FILE]
        Path(EVALUATE_FILE).parent.mkdir(parents=True, exist_ok=True)
        Path(EVALUATE_FILE).write_text(json.dumps(evaluate["data"]))
        subprocess.run([*git, "add", EVALUATE_FILE], check=True)
        subprocess.run([*git, "commit", "-qm", "run"], check=True)
        exp["rev"] = exp["data"]["rev"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                                         text=True, check=True).stdout.strip()
    for exp in listed[1]["experiments"][0]["revs"]:
        if exp["data"]["metrics"][EVALUATE_FILE].get("data"):
            exp["data"]["metrics"][EVALUATE_FILE]["data"] = without_lists(exp["data"]["metrics"][EVALUATE_FILE]["data"])
    Path(EVALUATE_FILE).unlink()  # the workspace has no metrics file: its row stays as DVC gave it
    saved, defaults, out = tmp_path / "exp_show.json", tmp_path / "params.yaml", tmp_path / "reports"
    saved.write_text(json.dumps(listed))
    defaults.write_text(json.dumps(PARAMS))
    assert main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out", str(out),
                 "--reward-window", "0"]) == 0
    lines = (out / "seeds.md").read_text().splitlines()
    # only RL seed 1's commit is readable: its scaling rows come back (0.2 + 0.05 after 2 rounds), one run each
    assert "| default | 0 | rl | 2 | 1 | 0.250 | 0.700 | 2.0 | 1.0 |" in lines
    assert not any(line.startswith("| reason-only | 0 | rl |") for line in lines)


# Run records: reports/runs/<name>.json, written by --record / --record-exps, the source of --seeds.

REPO = Path(__file__).resolve().parent.parent
MACHINE = {"cpu": "Test CPU", "cpu_capability": "AVX2", "cores": 2, "threads": 2, "torch": "2.13.0+cpu", "gpu": None}


def git(*args: str) -> str:
    import subprocess

    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], capture_output=True,
                          text=True, check=True).stdout.strip()


def workspace(root: Path, machine: dict | None = MACHINE) -> str:
    """A repository whose HEAD commits PARAMS and whose workspace ran rl.seed=1, rl.refine_steps=0 (params.yaml as
    dvc.lock says the stages ran it), with the three metrics files and the rl history; returns HEAD's sha."""
    git("init", "-q", str(root))
    (root / "params.yaml").write_text(json.dumps(PARAMS))
    (root / "code.py").write_text("x = 1\n")
    git("-C", str(root), "add", "params.yaml", "code.py")
    git("-C", str(root), "commit", "-qm", "defaults")
    params = {**PARAMS, "rl": {**PARAMS["rl"], "seed": 1, "refine_steps": 0}}
    (root / "params.yaml").write_text(json.dumps(params))
    (root / "dvc.lock").write_text(json.dumps({"schema": "2.0", "stages": {
        "rl": {"params": {"params.yaml": {"base": params["base"], "rl": params["rl"]}}}}}))
    for path, data in pipeline_metrics(0.3, 0.4, 500.0).items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(json.dumps({**data, **({"machine": machine} if machine else {})}))
    history = [{"step": s, "reward/verifier_partial": 0.1 * s, **({"reward/reason_mean": 0.0} if s % 2 == 0 else {})}
               for s in range(10)]
    (root / "data/rl/history.jsonl").write_text("".join(json.dumps(row) + "\n" for row in history))
    return git("-C", str(root), "rev-parse", "HEAD")


def test_a_workspace_run_is_recorded_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    head = workspace(tmp_path)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "code.py").write_text("x = 2\n")  # an uncommitted code change: named in the record
    assert main(["--record", "ws-1", "--reward-window", "2"]) == 0
    path = tmp_path / "reports/runs/ws-1.json"
    text = path.read_text()
    record = json.loads(text)
    assert list(record) == ["name", "source", "commit", "experiment", "code_changes", "seeds", "overrides", "metrics",
                            "scaling", "reward_trend", "machine", "note"]
    assert (record["name"], record["commit"], record["experiment"], record["code_changes"]) == (
        "ws-1", head, None, ["code.py"])  # params.yaml, dvc.lock and data/ are not code
    assert record["seeds"] == {"base.seed": 0, "rl.seed": 1} and record["overrides"] == {"rl.refine_steps": "0"}
    assert record["metrics"]["rl/geneval_pp"] == 0.4 and record["metrics"]["rl_seconds"] == 500.0
    assert list(record["metrics"]) == list(METRICS)
    assert [key for key, value in record["metrics"].items() if value is None] == list(OPTIONAL)
    assert [row["round"] for row in record["scaling"]["rl"]] == [0, 1, 2, 3]
    # reason steps 0, 2, 4, 6, 8 of the history: first two 0.0, 0.2; last two 0.6, 0.8
    assert record["reward_trend"] == {"key": "reward/verifier_partial", "window": 2, "initial": pytest.approx(0.1),
                                      "final": pytest.approx(0.7)}
    assert record["machine"] == MACHINE and record["note"] is None
    # the same record again changes nothing; a different one under the same name is refused, nothing written
    assert main(["--record", "ws-1", "--reward-window", "2"]) == 0 and path.read_text() == text
    assert "unchanged" in capsys.readouterr().out
    assert main(["--record", "ws-1", "--reward-window", "0"]) == 2 and path.read_text() == text
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "reports/runs/ws-1.json exists with other content" in err
    assert main(["--record", "../escape"]) == 2 and sorted(p.name for p in path.parent.iterdir()) == ["ws-1.json"]


def test_a_record_is_refused_when_its_metrics_or_params_are_not_the_runs(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    workspace(tmp_path, machine=None)
    monkeypatch.chdir(tmp_path)
    runs = tmp_path / "reports/runs"
    rl = Path(RL_FILE)
    saved = rl.read_text()
    metrics = json.loads(saved)
    del metrics["headline"]["render_fidelity"]
    rl.write_text(json.dumps(metrics))
    assert main(["--record", "r"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: data/rl/metrics.json has no headline.render_fidelity: rerun its stage (`dvc repro`) first; "
                   "nothing written")
    rl.unlink()
    assert main(["--record", "r"]) == 2
    assert "data/rl/metrics.json is missing" in capsys.readouterr().err
    rl.write_text(saved)
    evaluate = json.loads(Path(EVALUATE_FILE).read_text())
    del evaluate["checkpoints"]["rl"]["scaling"]
    Path(EVALUATE_FILE).write_text(json.dumps(evaluate))
    assert main(["--record", "r"]) == 2
    assert "data/evaluate/metrics.json has no checkpoints.rl.scaling" in capsys.readouterr().err
    Path(EVALUATE_FILE).write_text(json.dumps(evaluate_metrics(0.3, 0.4)))
    params = json.loads(Path("params.yaml").read_text())
    Path("params.yaml").write_text(json.dumps({**params, "rl": {**params["rl"], "seed": 2}}))  # edited after the run
    assert main(["--record", "r"]) == 2
    assert "params.yaml: rl.seed is not what dvc.lock's rl stage ran with" in capsys.readouterr().err
    assert not runs.exists()
    Path("params.yaml").write_text(json.dumps(params))
    assert main(["--record", "r"]) == 0
    record = json.loads((runs / "r.json").read_text())
    assert record["machine"] is None and "machine not recorded" in record["note"]


def test_every_experiment_is_recorded_and_its_records_give_the_seed_view_dvc_gives(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # not a git repository: the metrics as `dvc exp show` gives them, lists included
    saved, defaults = tmp_path / "exp_show.json", tmp_path / "params.yaml"
    saved.write_text(json.dumps(entries()))
    defaults.write_text(json.dumps(PARAMS))
    assert main(["--record-exps", "--dvc-json", str(saved), "--reward-window", "0"]) == 0
    assert "skipped experiment failed-1" in capsys.readouterr().err
    runs = tmp_path / "reports/runs"
    assert sorted(path.stem for path in runs.iterdir()) == sorted(f"{c}-sft{s}-{r}" for c, s, r in RL)
    record = json.loads((runs / "reason-only-sft0-1.json").read_text())
    assert (record["commit"], record["experiment"]) == ("a" * 40, f"{6:040x}")
    assert record["overrides"] == {"rl.refine_steps": "0"} and record["seeds"] == {"base.seed": 0, "rl.seed": 1}
    assert main(["--seeds", "--seeds-out", str(tmp_path / "from_records")]) == 0
    assert main(["--seeds", "--dvc-json", str(saved), "--defaults", str(defaults), "--seeds-out",
                 str(tmp_path / "from_dvc"), "--reward-window", "0"]) == 0
    assert (tmp_path / "from_records/seeds.json").read_text() == (tmp_path / "from_dvc/seeds.json").read_text()
    # an experiment with a headline but without the rl stage's metrics is refused, and nothing is written
    listed = entries()
    del listed[1]["experiments"][0]["revs"][0]["data"]["metrics"][RL_FILE]
    saved.write_text(json.dumps(listed))
    out = tmp_path / "other"
    assert main(["--record-exps", "--dvc-json", str(saved), "--reward-window", "0", "--runs", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: experiment default-sft0-0: data/rl/metrics.json has no headline.")
    assert not out.exists()


def test_the_seed_view_of_records_is_the_same_bytes_every_time(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    saved = tmp_path / "exp_show.json"
    saved.write_text(json.dumps(entries()))
    assert main(["--record-exps", "--dvc-json", str(saved), "--reward-window", "0"]) == 0
    runs = tmp_path / "reports/runs"
    trend = {"key": "reward/verifier_partial", "window": 20, "initial": 0.3, "final": 0.5}
    for path in sorted(runs.iterdir())[:3]:  # a reward trend on three runs, a repeat of one of them
        path.write_text(json.dumps({**json.loads(path.read_text()), "reward_trend": trend}))
    repeat = json.loads((runs / "default-sft0-0.json").read_text())
    (runs / "zz-repeat.json").write_text(json.dumps({**repeat, "name": "zz-repeat"}))
    built = []
    for out in ("a", "b"):
        assert main(["--seeds", "--seeds-out", out]) == 0
        built.append([(tmp_path / out / name).read_bytes() for name in ("seeds.json", "seeds.md")])
    assert built[0] == built[1]
    md = built[0][1].decode()
    assert "## Training reward (`reward/verifier_partial`, mean of the first / last 20 reason steps" in md
    assert "Left out as repeats of an earlier run of the same config, SFT seed and seed: zz-repeat." in md
    assert "| control-sft0-0 | control | 0 | 0 | aaaaaaa | 0000000 | not recorded |" in md
    (runs / "bad.json").write_text(json.dumps({**repeat, "name": "other"}))
    assert main(["--seeds", "--seeds-out", "c"]) == 2  # a file whose name is not its record's


@pytest.mark.parametrize("reports", ["reports", "reports/suite-v1"])
def test_the_committed_seed_view_is_rebuilt_from_the_committed_run_records(tmp_path: Path, reports: str) -> None:
    """reports/seeds.{json,md} are `python -m flows.compare --seeds` over reports/runs, byte for byte; so are those
    of the runs on the earlier GenEval++ suite, kept in reports/suite-v1."""
    assert main(["--seeds", "--runs", str(REPO / reports / "runs"), "--seeds-out", str(tmp_path)]) == 0
    for name in ("seeds.json", "seeds.md"):
        assert (tmp_path / name).read_bytes() == (REPO / reports / name).read_bytes(), name
