"""The evaluation report: Markdown tables laid out like the R3 paper's Tables 1-3, DVC plot data
(CSV), the inference-time scaling and equal-compute figures and sample grids of the R3 loop.

Everything here reads the metrics dict `r3.evals.evaluate` writes to metrics.json:
    {"suites": {suite: [tags]}, "scaling_suite": str, "max_rounds": int, "reference": str | None,
     "prompts": {suite: prompts evaluated},
     "checkpoints": {name: {"generation": {suite: [per-round {"overall", "per_tag"}]},
                            "scaling": [per-round rows of r3_loop.scaling_metrics],
                            "compute": [per-budget rows of best_of_n.equal_compute] (where it ran),
                            "ita": {"overall", "per_tag": {"suite/tag": acc}, "n": rows},
                            "vqa": {"overall", "per_category": {category: acc}, "n": rows},
                            "tiif": {suite: {"overall": score, "per_type": {type: score}}} (a TIIF file; each
                                     score {"score", "low", "high", "n"}, r3.evals.tiif.type_scores)}}}
"""

import csv
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from r3.data.grid import image_grid
from r3.evals.r3_loop import OUTCOMES_ON_RIGHT, OUTCOMES_ON_WRONG, R3Trace
from r3.world.prompts import SUITES

SUITE_TITLES = {"geneval_pp": "GenEval++", "geneval": "GenEval", "tiif_short": "TIIF short", "tiif_long": "TIIF long"}


def suite_title(suite: str) -> str:
    return SUITE_TITLES.get(suite, suite)


def cell(value: float | None, reference: float | None = None) -> str:
    """'0.450', with ↑ / ↓ when it is above / below the reference value; '-' when missing."""
    if value is None:
        return "-"
    text = f"{value:.3f}"
    if reference is None or round(value, 3) == round(reference, 3):
        return text
    return text + (" ↑" if value > reference else " ↓")


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


Z_95 = 1.959963984540054
"""Two-sided 95% quantile of the standard normal."""


def wilson_interval(share: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval of a proportion observed as `share` of `n` trials (95% by default)."""
    if n < 1 or not 0.0 <= share <= 1.0:
        raise ValueError(f"wilson_interval: need 0 <= share <= 1 and n >= 1, got share={share}, n={n}")
    denominator = 1.0 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z / denominator * math.sqrt(share * (1.0 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


Row = tuple[str, list[float | None], list[float | None] | None]
"""(label, values, values of the reference row to compare with, or None)."""


def _table_rows(rows: list[Row]) -> list[list[str]]:
    return [[label] + [cell(v, None if ref is None else ref[i]) for i, v in enumerate(values)]
            for label, values, ref in rows]


def _against_reference(named: list[tuple[str, list[float | None]]], reference: str | None) -> list[Row]:
    """Every row but the reference's is compared with the reference row (no arrows without one)."""
    ref = dict(named).get(reference) if reference is not None else None
    return [(label, values, None if label == reference else ref) for label, values in named]


def generation_table(metrics: dict, suite: str) -> str:
    """Table 1: per-tag strict accuracy and overall (mean of tags) per checkpoint; + R3 rows on the scaling suite."""
    tags, reference, checkpoints = metrics["suites"][suite], metrics.get("reference"), metrics["checkpoints"]
    kinds = [("", 0)]
    if suite == metrics["scaling_suite"] and metrics["max_rounds"] > 0:
        kinds.append((f" + R3 (≤{metrics['max_rounds']} rounds)", -1))

    def values(name: str, k: int) -> list[float | None]:
        summary = checkpoints[name]["generation"][suite][k]
        return [summary["per_tag"].get(t) for t in tags] + [summary["overall"]]

    rows: list[Row] = []
    for name in checkpoints:
        for suffix, k in kinds:
            ref = values(reference, k) if reference in checkpoints and name != reference else None
            rows.append((name + suffix, values(name, k), ref))
    return markdown_table(["Model", *tags, "Overall"], _table_rows(rows))


def _suite_tag_rank(key: str) -> tuple:
    """Sort "suite/tag" keys in SUITES order, unknown suites and tags after the known ones."""
    suite, tag = key.split("/", 1)
    tags = SUITES.get(suite, ())
    return (list(SUITES).index(suite) if suite in SUITES else len(SUITES), suite,
            tags.index(tag) if tag in tags else len(tags), tag)


def ita_suites(metrics: dict) -> dict[str, list[str]]:
    """{suite: tags} of the ITA rows (the synth held-out table, whatever prompts the generation used)."""
    keys = {key for r in metrics["checkpoints"].values() for key in r["ita"]["per_tag"]}
    found: dict[str, list[str]] = {}
    for key in sorted(keys, key=_suite_tag_rank):
        suite, tag = key.split("/", 1)
        found.setdefault(suite, []).append(tag)
    return found


def ita_table(metrics: dict, suite: str) -> str:
    """Table 2: ITA accuracy per tag of one suite, and the mean of those tags."""
    tags = ita_suites(metrics)[suite]
    named = []
    for name, result in metrics["checkpoints"].items():
        per_tag = result["ita"]["per_tag"]
        values = [per_tag.get(f"{suite}/{t}") for t in tags]
        present = [v for v in values if v is not None]
        named.append((name, values + [float(np.mean(present)) if present else None]))
    rows = _against_reference(named, metrics.get("reference"))
    return markdown_table(["Model", *tags, "Mean"], _table_rows(rows))


def vqa_table(metrics: dict) -> str:
    """Table 3: VQA exact-answer accuracy per category and overall."""
    categories = sorted({c for r in metrics["checkpoints"].values() for c in r["vqa"]["per_category"]})
    named = [(name, [r["vqa"]["per_category"].get(c) for c in categories] + [r["vqa"]["overall"]])
             for name, r in metrics["checkpoints"].items()]
    rows = _against_reference(named, metrics.get("reference"))
    return markdown_table(["Model", *categories, "Overall"], _table_rows(rows))


def scaling_table(metrics: dict) -> str:
    rows = [
        [name, str(r["round"]), f"{r['accuracy']:.3f}", f"{r['finished']:.3f}",
         str(r["improved"]), str(r["worse"]), str(r["unchanged"])]
        for name, result in metrics["checkpoints"].items()
        for r in result["scaling"]
    ]
    return markdown_table(["Model", "Rounds", "Accuracy", "Finished", "Improved", "Worse", "Unchanged"], rows)


def reflection_table(metrics: dict) -> str:
    """Per checkpoint: the first reflection's stop rate on wrong and on right images (overall and per tag), and
    what every round did with the images it was shown (r3_loop.reflection_outcomes)."""
    outcomes = OUTCOMES_ON_WRONG + OUTCOMES_ON_RIGHT
    results = {name: r["reflection"] for name, r in metrics["checkpoints"].items() if r.get("reflection")}
    tags = sorted({t for r in results.values() for side in ("stop_on_wrong", "stop_on_right")
                   for t in r[side]["per_tag"]})
    rows = []
    for name, r in results.items():
        for side, label in (("stop_on_wrong", "stop on wrong"), ("stop_on_right", "stop on right")):
            rate = r[side]
            overall = "-" if rate["overall"] is None else f"{rate['overall']:.3f}"
            rows.append([name, label, f"{overall} (n = {rate['n']})",
                         *(f"{rate['per_tag'][t]:.2f}" if t in rate["per_tag"] else "-" for t in tags)])
    stops = markdown_table(["Model", "First reflection", "Overall", *tags], rows)
    counts = markdown_table(["Model", *outcomes],
                            [[name, *(str(r["outcomes"][o]) for o in outcomes)] for name, r in results.items()])
    return stops + "\n\n" + counts


COMPUTE_METHODS = {"r3": "R3, ≤ N-1 rounds", "r3_images": "R3: images generated (mean)",
                   "best_of_n": "best-of-N, own judge", "oracle": "best-of-N, oracle (verifier picks)",
                   "sampled": "one sample (mean of N)"}
"""The columns of an equal-compute row and their titles."""


def compute_rows(metrics: dict) -> dict[str, list[dict]]:
    """{checkpoint: its best_of_n.equal_compute rows} for the checkpoints the comparison ran on."""
    return {name: r["compute"] for name, r in metrics["checkpoints"].items() if "compute" in r}


def compute_table(metrics: dict) -> str:
    """R3 against best-of-N per budget of N images per prompt: one line per checkpoint and method."""
    curves = compute_rows(metrics)
    budgets = [row["images"] for row in next(iter(curves.values()))]
    rows = [[name, title] + [f"{row[method]:.2f}" if method == "r3_images" else f"{row[method]:.3f}" for row in curve]
            for name, curve in curves.items() for method, title in COMPUTE_METHODS.items() if method in curve[0]]
    return markdown_table(["Model", "Method", *(f"N = {n}" for n in budgets)], rows)


def _headline_columns(metrics: dict) -> list[tuple[str, str, int]]:
    """(title, suite, round index) of the generation columns of the headline: round 0 of every suite, and the last
    round on the scaling suite."""
    columns: list[tuple[str, str, int]] = []
    for suite in metrics["suites"]:
        columns.append((suite_title(suite), suite, 0))
        if suite == metrics["scaling_suite"] and metrics["max_rounds"] > 0:
            columns.append((f"{suite_title(suite)} + R3", suite, -1))
    return columns


def _headline_values(result: dict, columns: list[tuple[str, str, int]]) -> list[float]:
    return [result["generation"][suite][k]["overall"] for _, suite, k in columns] + [result["ita"]["overall"],
                                                                                  result["vqa"]["overall"]]


def headline_table(metrics: dict) -> str:
    """Round-0 accuracy of every suite (and after the R3 rounds on the scaling suite), ITA and VQA."""
    columns = _headline_columns(metrics)
    named = [(name, _headline_values(r, columns)) for name, r in metrics["checkpoints"].items()]
    header = ["Model", *(title for title, _, _ in columns), "ITA", "VQA"]
    return markdown_table(header, _table_rows(_against_reference(named, metrics.get("reference"))))


def interval_table(metrics: dict) -> str | None:
    """The headline figures with their 95% Wilson intervals, each column titled with the number of prompts (ITA /
    VQA: held-out rows) it rests on; None when metrics.json predates the counts."""
    columns = _headline_columns(metrics)
    prompts = metrics.get("prompts", {})
    checkpoints = metrics["checkpoints"]
    if any(suite not in prompts for _, suite, _ in columns) or any(
            "n" not in r["ita"] or "n" not in r["vqa"] for r in checkpoints.values()):
        return None
    counts_by_model = {name: [prompts[suite] for _, suite, _ in columns] + [r["ita"]["n"], r["vqa"]["n"]]
                       for name, r in checkpoints.items()}
    distinct = {tuple(c) for c in counts_by_model.values()}
    if len(distinct) != 1:
        raise ValueError(f"interval_table: checkpoints were scored on different row counts: {sorted(distinct)}")
    counts = counts_by_model[next(iter(checkpoints))]
    titles = [title for title, _, _ in columns] + ["ITA", "VQA"]
    header = ["Model", *(f"{title} (n = {n})" for title, n in zip(titles, counts, strict=True))]
    rows = []
    for name, result in checkpoints.items():
        cells = []
        for value, n in zip(_headline_values(result, columns), counts, strict=True):
            low, high = wilson_interval(value, n)
            cells.append(f"{value:.3f} [{low:.3f}, {high:.3f}]")
        rows.append([name, *cells])
    return markdown_table(header, rows)


def tiif_suites(metrics: dict) -> list[str]:
    """The suites of a TIIF file, in evaluation order (none for GenEval files and synth prompts)."""
    return list(dict.fromkeys(s for r in metrics["checkpoints"].values() for s in r.get("tiif", {})))


def _scored(score: dict) -> str:
    return f"{score['score']:.3f} [{score['low']:.3f}, {score['high']:.3f}]"


def tiif_table(metrics: dict) -> str:
    """TIIF-format suites per checkpoint and description: the mean score per type and overall with its 95% Wilson interval,
    each column titled with the number of prompts it rests on (the same for both descriptions)."""
    first_suite, first = next(iter(next(r["tiif"] for r in metrics["checkpoints"].values()).items()))
    types = metrics["suites"][first_suite]
    header = ["Model", "Prompts", *(f"{t} (n = {first['per_type'][t]['n']})" for t in types),
              f"Overall (n = {first['overall']['n']})"]
    rows = [[name, suite_title(suite), *(_scored(by["per_type"][t]) for t in types), _scored(by["overall"])]
            for name, result in metrics["checkpoints"].items() for suite, by in result["tiif"].items()]
    return markdown_table(header, rows)


def render_report(metrics: dict, figures: Sequence[Path], out_dir: Path, notes: Sequence[str] = ()) -> str:
    """The whole report.md; figure paths are written relative to `out_dir`."""
    reference = metrics.get("reference")
    parts = ["# Evaluation report", ""]
    parts += [f"- {note}" for note in notes]
    if reference:
        parts.append(f"- Arrows: change against `{reference}` (↑ better, ↓ worse).")
    parts += ["", "## Headline", "", headline_table(metrics), ""]
    intervals = interval_table(metrics)
    if intervals is not None:
        parts += ["## Headline with 95% intervals (Wilson score; n = prompts or held-out rows each figure rests on)",
                  "", "A suite's figure is the mean of its tags, i.e. the share of its n prompts when every tag has "
                  "as many prompts (evaluate.per_tag).", "", intervals, ""]
    tiif = tiif_suites(metrics)
    if tiif:
        parts += ["## TIIF-format suites (mean share of each prompt's yes/no questions answered as expected, per type; 95% "
                  "Wilson interval)", "", "A score in [0, 1] varies at most as a yes/no outcome of the same mean does, "
                  "so the interval is conservative; overall = mean of the types, its n every prompt.", "",
                  tiif_table(metrics), ""]
    for i, suite in enumerate(metrics["suites"], start=1):
        measure = "mean TIIF score per type" if suite in tiif else "strict accuracy per tag"
        title = f"## Table 1.{i}: {suite_title(suite)} generation ({measure}; overall = mean of tags)"
        parts += [title, "", generation_table(metrics, suite), ""]
    for i, suite in enumerate(ita_suites(metrics), start=1):
        title = f"## Table 2.{i}: ITA on {suite_title(suite)} prompts (aligned or not, accuracy per tag)"
        parts += [title, "", ita_table(metrics, suite), ""]
    parts += ["## Table 3: VQA (exact answer accuracy per category)", "", vqa_table(metrics), ""]
    if metrics["max_rounds"] > 0:
        title = f"## Inference-time scaling on {suite_title(metrics['scaling_suite'])} (R3 loop, reflect-refine rounds)"
        parts += [title, "", scaling_table(metrics), ""]
        if any(r.get("reflection") for r in metrics["checkpoints"].values()):
            parts += ["## Where the rounds' images go", "",
                      "Stop rates of the first reflection, on images the verifier finds wrong and right; then, over "
                      "every round and the rows still active in it: on a wrong image the reflection stopped "
                      "(missed: a reflection error), the edit made it right (fixed), or it stayed wrong "
                      "(edit_failed: the instruction or the edit failed); on a right image it stopped (kept), was "
                      "edited and stayed right (kept_edited) or was edited wrong (broke).", "",
                      reflection_table(metrics), ""]
    if compute_rows(metrics):
        title = f"## R3 against best-of-N at equal compute on {suite_title(metrics['scaling_suite'])} (strict accuracy)"
        parts += [title, "", "N = images per prompt: best-of-N generates N and keeps one; R3 may generate N (one per "
                  "round), fewer where the model stops, and the mean it generated is its own line.", "",
                  compute_table(metrics), ""]
    for figure in figures:
        parts += [f"![{figure.stem}]({figure.relative_to(out_dir).as_posix()})", ""]
    return "\n".join(parts)


def write_plot_data(metrics: dict, plots_dir: Path) -> list[Path]:
    """DVC plot data, one column per checkpoint so that `dvc plots show` draws one series each:
    scaling.csv (round, <checkpoint>...: accuracy after that many reflect-refine rounds),
    tags.csv (tag = suite/tag, <checkpoint>...: round-0 strict accuracy) and
    compute.csv (images = budget N, <checkpoint>_<method>... of COMPUTE_METHODS; only `images` where the
    equal-compute comparison did not run)."""
    plots_dir.mkdir(parents=True, exist_ok=True)
    names = list(metrics["checkpoints"])
    scaling_path, tags_path, compute_path = plots_dir / "scaling.csv", plots_dir / "tags.csv", plots_dir / "compute.csv"
    with scaling_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["round", *names])
        rounds = zip(*(metrics["checkpoints"][n]["scaling"] for n in names), strict=True)
        writer.writerows([per_name[0]["round"], *(r["accuracy"] for r in per_name)] for per_name in rounds)
    with tags_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["tag", *names])
        for suite, tags in metrics["suites"].items():
            for tag in tags:
                per_tag = [metrics["checkpoints"][n]["generation"][suite][0]["per_tag"].get(tag) for n in names]
                writer.writerow([f"{suite}/{tag}", *per_tag])
    curves = compute_rows(metrics)
    with compute_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["images", *(f"{name}_{method}" for name in curves for method in COMPUTE_METHODS)])
        budgets = zip(*curves.values(), strict=True)
        writer.writerows([per_name[0]["images"], *(row[m] for row in per_name for m in COMPUTE_METHODS)]
                         for per_name in budgets)
    return [scaling_path, tags_path, compute_path]


def scaling_figure(metrics: dict, path: Path) -> Path:
    """Accuracy and finished (stopped) rate against the number of allowed reflect-refine rounds."""
    figure = Figure(figsize=(8, 3.2), dpi=120)
    FigureCanvasAgg(figure)
    accuracy, finished = figure.subplots(1, 2)
    for name, result in metrics["checkpoints"].items():
        rounds = [r["round"] for r in result["scaling"]]
        accuracy.plot(rounds, [r["accuracy"] for r in result["scaling"]], marker="o", label=name)
        finished.plot(rounds, [r["finished"] for r in result["scaling"]], marker="o", label=name)
    title = suite_title(metrics["scaling_suite"])
    for axis, label in ((accuracy, f"{title} strict accuracy"), (finished, "finished (stopped) rate")):
        axis.set_xlabel("max reflect-refine rounds")
        axis.set_ylabel(label)
        axis.set_xticks(range(metrics["max_rounds"] + 1))
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    accuracy.legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def compute_figure(metrics: dict, path: Path) -> Path:
    """Strict accuracy against images generated per prompt, one panel per checkpoint: R3 at the mean number of
    images it generated with up to N - 1 rounds, best-of-N (own judge) and the oracle best-of-N at N."""
    curves = compute_rows(metrics)
    figure = Figure(figsize=(4 * len(curves), 3.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(curves), squeeze=False)[0]
    for axis, (name, curve) in zip(axes, curves.items(), strict=True):
        budgets = [row["images"] for row in curve]
        axis.plot([row["r3_images"] for row in curve], [row["r3"] for row in curve], marker="o", label="R3")
        axis.plot(budgets, [row["best_of_n"] for row in curve], marker="s", label="best-of-N (own judge)")
        axis.plot(budgets, [row["oracle"] for row in curve], marker="^", linestyle="--", label="oracle best-of-N")
        axis.set_title(name)
        axis.set_xlabel("images generated per prompt")
        axis.set_xticks(budgets)
        axis.set_ylim(-0.02, 1.02)
        axis.grid(alpha=0.3)
    axes[0].set_ylabel(f"{suite_title(metrics['scaling_suite'])} strict accuracy")
    axes[0].legend()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def loop_grid(trace: R3Trace, rows: int, path: Path) -> Path:
    """One line per prompt (spread over the trace): the image after each round, captioned with the prompt
    (round 0) or that round's reflection, and whether the image is aligned."""
    index = np.unique(np.linspace(0, len(trace.prompts) - 1, min(rows, len(trace.prompts))).astype(int))
    images, captions = [], []
    for i in index:
        for k, current in enumerate(trace.rounds):
            mark = "ok" if current.scores[i] >= 1.0 else "x"
            if k == 0:
                text = trace.prompts[i]
            elif trace.rounds[k - 1].finished[i]:
                text = "(stopped)"
            else:
                text = current.texts[i] or "(empty)"
            images.append(current.images[i])
            captions.append(f"r{k} {mark}: {text}")
    path.parent.mkdir(parents=True, exist_ok=True)
    image_grid(images, captions, columns=len(trace.rounds)).save(path)
    return path
