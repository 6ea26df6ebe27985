"""Report tables on a hand-built metrics dict: layout, values and the arrows against SFT."""

import copy
from pathlib import Path

import pytest

from r3.evals.report import (Z_95, cell, compute_table, generation_table, headline_table, interval_table, ita_table,
                             render_report, vqa_table, wilson_interval)


def _result(pp: list[float], r3: list[float], ita: float, vqa_count: float) -> dict:
    def summary(values: list[float]) -> dict:
        return {"overall": sum(values) / 2, "per_tag": {"counting": values[0], "color_attr": values[1]}}

    return {
        "generation": {"geneval_pp": [summary(pp), summary(pp), summary(r3)], "geneval": [summary(pp)]},
        "scaling": [{"round": k, "accuracy": 0.0, "finished": 0.0, "improved": 0, "worse": 0, "unchanged": 2}
                    for k in range(3)],
        "ita": {"overall": ita, "per_tag": {"geneval_pp/counting": ita, "geneval/colors": 1.0}},
        "vqa": {"overall": vqa_count, "per_category": {"count": vqa_count}},
    }


METRICS = {
    "suites": {"geneval_pp": ["counting", "color_attr"], "geneval": ["counting", "color_attr"]},
    "scaling_suite": "geneval_pp",
    "max_rounds": 2,
    "reference": "sft",
    "checkpoints": {
        "base": _result([0.0, 0.0], [0.0, 0.5], 0.5, 0.25),
        "sft": _result([0.5, 0.25], [0.5, 0.5], 0.75, 0.5),
        "rl": _result([0.75, 0.25], [1.0, 0.5], 0.75, 0.75),
    },
}


def test_cell_marks_change_against_the_reference():
    assert cell(0.5) == "0.500"
    assert cell(0.6, 0.5) == "0.600 ↑" and cell(0.4, 0.5) == "0.400 ↓" and cell(0.5, 0.5) == "0.500"
    assert cell(None, 0.5) == "-"


def test_generation_table_has_r3_rows_on_the_scaling_suite_with_arrows_against_sft():
    lines = generation_table(METRICS, "geneval_pp").splitlines()
    assert lines[0] == "| Model | counting | color_attr | Overall |"
    assert lines[2] == "| base | 0.000 ↓ | 0.000 ↓ | 0.000 ↓ |"
    assert lines[3] == "| base + R3 (≤2 rounds) | 0.000 ↓ | 0.500 | 0.250 ↓ |"
    assert lines[4] == "| sft | 0.500 | 0.250 | 0.375 |"
    assert lines[5] == "| sft + R3 (≤2 rounds) | 0.500 | 0.500 | 0.500 |"
    assert lines[6] == "| rl | 0.750 ↑ | 0.250 | 0.500 ↑ |"
    assert lines[7] == "| rl + R3 (≤2 rounds) | 1.000 ↑ | 0.500 | 0.750 ↑ |"
    assert len(generation_table(METRICS, "geneval").splitlines()) == 2 + 3  # round 0 rows only


def test_understanding_and_headline_tables():
    ita = ita_table(METRICS, "geneval_pp").splitlines()
    assert ita[0] == "| Model | counting | Mean |" and ita[4] == "| rl | 0.750 | 0.750 |"
    vqa = vqa_table(METRICS).splitlines()
    assert vqa[0] == "| Model | count | Overall |" and vqa[2] == "| base | 0.250 ↓ | 0.250 ↓ |"
    headline = headline_table(METRICS).splitlines()
    assert headline[0] == "| Model | GenEval++ | GenEval++ + R3 | GenEval | ITA | VQA |"
    assert headline[4] == "| rl | 0.500 ↑ | 0.750 ↑ | 0.500 ↑ | 0.750 | 0.750 ↑ |"


def test_wilson_interval_matches_hand_computed_values():
    # 50 of 100: centre (0.5 + z²/200) / (1 + z²/100) = 0.5; half = z / 1.038415 * sqrt(0.0025 + z²/40000) = 0.096168
    assert wilson_interval(0.5, 100) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    # 0 of 10: the interval is [0, z² / (n + z²)] = [0, 3.841459 / 13.841459]
    low, high = wilson_interval(0.0, 10)
    assert low == 0.0 and high == pytest.approx(Z_95**2 / (10 + Z_95**2)) and high == pytest.approx(0.277533, abs=1e-6)
    assert wilson_interval(1.0, 10) == pytest.approx((1 - high, 1.0))  # symmetric in share <-> 1 - share
    assert wilson_interval(6 / 280, 280) == pytest.approx((0.009857, 0.045954), abs=1e-6)  # the SFT figure
    with pytest.raises(ValueError, match="n >= 1"):
        wilson_interval(0.5, 0)


def test_interval_table_gives_each_figure_its_count_and_interval():
    counted = copy.deepcopy(METRICS)
    counted["prompts"] = {"geneval_pp": 4, "geneval": 4}
    for result in counted["checkpoints"].values():
        result["ita"]["n"], result["vqa"]["n"] = 8, 4
    lines = interval_table(counted).splitlines()
    assert lines[0] == "| Model | GenEval++ (n = 4) | GenEval++ + R3 (n = 4) | GenEval (n = 4) | ITA (n = 8) | VQA (n = 4) |"
    # sft: 0.375 of 4, 0.5 of 4, 0.375 of 4, 0.75 of 8, 0.5 of 4
    cells = [f"{v:.3f} [{lo:.3f}, {hi:.3f}]" for v, n in ((0.375, 4), (0.5, 4), (0.375, 4), (0.75, 8), (0.5, 4))
             for lo, hi in [wilson_interval(v, n)]]
    assert lines[3] == "| sft | " + " | ".join(cells) + " |"
    assert cells[1] == "0.500 [0.150, 0.850]"
    report = render_report(counted, [], Path("."))
    assert "## Headline with 95% intervals" in report and lines[3] in report
    assert interval_table(METRICS) is None and "95% intervals" not in render_report(METRICS, [], Path("."))


def test_compute_table_lists_each_method_per_image_budget():
    compared = copy.deepcopy(METRICS)
    for name, best in (("sft", 0.25), ("rl", 0.5)):
        compared["checkpoints"][name]["compute"] = [
            {"images": n, "r3": 0.375 + 0.0625 * (n - 1), "r3_images": 1 + 0.5 * (n - 1), "best_of_n": best,
             "oracle": 0.25 * n} for n in (1, 2, 3)]
    lines = compute_table(compared).splitlines()
    assert lines[0] == "| Model | Method | N = 1 | N = 2 | N = 3 |"
    assert lines[2:6] == ["| sft | R3, ≤ N-1 rounds | 0.375 | 0.438 | 0.500 |",
                          "| sft | R3: images generated (mean) | 1.00 | 1.50 | 2.00 |",
                          "| sft | best-of-N, own judge | 0.250 | 0.250 | 0.250 |",
                          "| sft | best-of-N, oracle (verifier picks) | 0.250 | 0.500 | 0.750 |"]
    assert len(lines) == 2 + 2 * 4  # base has no comparison
    assert "## R3 against best-of-N at equal compute on GenEval++" in render_report(compared, [], Path("."))
    assert "best-of-N" not in render_report(METRICS, [], Path("."))
