"""The stage graph, single source of truth: `dvc.yaml` is rendered from it and the pipeline
flow runs it in order. `python -m flows.graph` rewrites dvc.yaml; a test fails if they differ."""

import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from r3 import paths


@dataclass(frozen=True)
class Stage:
    name: str
    """Stage name; its flow lives in `flows/<name>.py`."""
    params: tuple[str, ...]
    """params.yaml sections the stage reads (changing any other section does not rerun it)."""
    deps: tuple[str, ...]
    """Code and upstream outputs the stage depends on."""
    outs: tuple[str, ...]
    """Outputs cached and versioned by DVC."""
    metrics: tuple[str, ...] = ()
    """JSON metrics files (kept in git, not the DVC cache)."""
    plots: tuple[str, ...] = ()
    """Plot data files (kept in git, not the DVC cache); how to draw them is in PLOTS."""

    @property
    def cmd(self) -> str:
        return f"python -m flows.{self.name}"


COMMON_CODE = ("r3/config.py", "r3/params.py", "r3/paths.py", "flows/cli.py", "tasks/cache.py", "tasks/tracking.py")

STAGES: tuple[Stage, ...] = (
    Stage(
        name="synth",
        params=("base", "synth"),
        deps=(*COMMON_CODE, "r3/world", "r3/data", "flows/synth.py", "tasks/synth.py"),
        outs=(str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT), str(paths.SYNTH_SAMPLES), str(paths.SYNTH_CARD)),
        metrics=(str(paths.SYNTH_METRICS),),
    ),
    Stage(
        name="sft",
        params=("base", "sft"),
        deps=(*COMMON_CODE, "r3/models", "r3/train", "r3/evals", "flows/sft.py", "tasks/sft.py",
              "tasks/training.py",
              str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT)),
        outs=(str(paths.SFT_CHECKPOINT), str(paths.SFT_SAMPLES)),
        metrics=(str(paths.SFT_METRICS),),
    ),
    Stage(
        name="rl",
        params=("base", "rl"),
        deps=(*COMMON_CODE, "r3/models", "r3/rl", "r3/rewards", "r3/train", "r3/evals", "flows/rl.py", "tasks/rl.py",
              "tasks/training.py", str(paths.SFT_CHECKPOINT), str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT)),
        outs=(str(paths.RL_CHECKPOINT), str(paths.RL_SAMPLES)),
        metrics=(str(paths.RL_METRICS),),
    ),
    Stage(
        name="evaluate",
        params=("base", "evaluate", "runner"),
        deps=(*COMMON_CODE, "r3/models", "r3/evals", "r3/world", "r3/rewards", "r3/train", "flows/evaluate.py",
              "tasks/evaluate.py", "tasks/runner.py", str(paths.SFT_CHECKPOINT), str(paths.RL_CHECKPOINT),
              str(paths.SYNTH_HELDOUT)),
        outs=(str(paths.EVALUATE_REPORT), str(paths.EVALUATE_FIGURES)),
        metrics=(str(paths.EVALUATE_METRICS),),
        plots=(str(paths.EVALUATE_SCALING), str(paths.EVALUATE_TAGS)),
    ),
)

CHECKPOINT_SERIES = ["base", "sft", "rl"]

PLOTS = [
    {"Held-out GenEval++ strict accuracy vs. allowed reflect-refine rounds": {
        "template": "linear", "x": "round", "y": {str(paths.EVALUATE_SCALING): list(CHECKPOINT_SERIES)},
        "y_label": "strict accuracy"}},
    {"Round-0 strict accuracy per tag": {
        "template": "scatter", "x": "tag", "y": {str(paths.EVALUATE_TAGS): list(CHECKPOINT_SERIES)},
        "y_label": "strict accuracy"}},
]
"""Top-level DVC plot definitions (`dvc plots show`): one series per evaluated checkpoint."""

SERVE_SECTIONS = ("schedule",)
"""Sections that no stage reads: `python -m flows.serve` takes the pipeline's schedule from them."""

SECTIONS = tuple(dict.fromkeys(section for stage in STAGES for section in stage.params)) + SERVE_SECTIONS
"""Every params.yaml section; any other top-level key is an error."""


def dvc_yaml() -> dict:
    stages = {}
    for stage in STAGES:
        entry: dict = {"cmd": stage.cmd, "deps": list(stage.deps), "params": list(stage.params),
                       "outs": list(stage.outs)}
        if stage.metrics:
            entry["metrics"] = [{path: {"cache": False}} for path in stage.metrics]
        if stage.plots:
            entry["plots"] = [{path: {"cache": False}} for path in stage.plots]
        stages[stage.name] = entry
    return {"stages": stages, "plots": PLOTS}


def render_dvc_yaml() -> str:
    header = "# Rendered from flows/graph.py by `python -m flows.graph`; edit the graph, not this file.\n"
    return header + yaml.safe_dump(dvc_yaml(), sort_keys=False)


def main() -> int:
    Path("dvc.yaml").write_text(render_dvc_yaml())
    print(f"wrote dvc.yaml with stages: {', '.join(s.name for s in STAGES)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
