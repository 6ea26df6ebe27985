"""The stage graph, single source of truth: `dvc.yaml` is rendered from it and the pipeline
flow runs it in order. `python -m flows.graph` rewrites dvc.yaml; `python -m flows.graph --check` exits 1
when dvc.yaml is not what the graph renders (a stage's code changed its imports, or the graph changed).

A stage's code deps are not listed by hand: they are the files of the import closure of its flow module
flows/<name>.py (r3.devtools.imports.stage_code), the same files whose digest keys its Prefect cache.
"""

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from r3 import paths
from r3.devtools.imports import stage_code


@dataclass(frozen=True)
class Stage:
    name: str
    """Stage name; its flow lives in `flows/<name>.py`."""
    params: tuple[str, ...]
    """params.yaml sections the stage reads (changing any other section does not rerun it)."""
    inputs: tuple[str, ...]
    """Upstream outputs the stage reads (its code deps are derived: see `code`)."""
    outs: tuple[str, ...]
    """Outputs cached and versioned by DVC."""
    metrics: tuple[str, ...] = ()
    """JSON metrics files (kept in git, not the DVC cache)."""
    plots: tuple[str, ...] = ()
    """Plot data files (kept in git, not the DVC cache); how to draw them is in PLOTS."""
    committed_outs: tuple[str, ...] = ()
    """Outputs versioned by DVC but kept in git rather than the DVC cache (a shipped model)."""
    frozen: bool = False
    """`dvc repro` never runs the stage (even with -f) and uses its committed outputs; run its flow by hand and
    `dvc commit` it to reproduce them. Its outputs are all `committed_outs`: a clone has no DVC cache to take
    them from."""

    def __post_init__(self) -> None:
        if self.frozen and self.outs:
            raise ValueError(f"stage {self.name}: a frozen stage's outputs must be committed_outs (in git), got "
                             f"cached outs {list(self.outs)}")

    @property
    def cmd(self) -> str:
        return f"python -m flows.{self.name}"

    @property
    def code(self) -> tuple[str, ...]:
        """The project source files its flow module runs when imported (deferred imports included)."""
        return stage_code(self.name)

    @property
    def deps(self) -> tuple[str, ...]:
        """What DVC reruns the stage on besides params: its code, then its upstream outputs."""
        return self.code + self.inputs


STAGES: tuple[Stage, ...] = (
    Stage(
        name="synth",
        params=("base", "synth"),
        inputs=(),
        outs=(str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT), str(paths.SYNTH_TIIF), str(paths.SYNTH_SAMPLES),
              str(paths.SYNTH_CARD)),
        metrics=(str(paths.SYNTH_METRICS),),
    ),
    Stage(
        name="pretrain",
        params=("base", "pretrain"),
        inputs=(str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT)),
        outs=(),
        committed_outs=(str(paths.BASE_MODEL),),
        frozen=True,
    ),
    Stage(
        name="sft",
        params=("base", "sft"),
        inputs=(str(paths.BASE_MODEL), str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT)),
        outs=(str(paths.SFT_CHECKPOINT), str(paths.SFT_SAMPLES)),
        metrics=(str(paths.SFT_METRICS),),
    ),
    Stage(
        name="rl",
        params=("base", "rl"),
        inputs=(str(paths.SFT_CHECKPOINT), str(paths.SYNTH_TRAIN), str(paths.SYNTH_HELDOUT), str(paths.SYNTH_TIIF)),
        outs=(str(paths.RL_CHECKPOINT), str(paths.RL_SAMPLES)),
        metrics=(str(paths.RL_METRICS),),
    ),
    Stage(
        name="evaluate",
        params=("base", "evaluate", "runner"),
        inputs=(str(paths.SFT_CHECKPOINT), str(paths.RL_CHECKPOINT), str(paths.SYNTH_HELDOUT), str(paths.SYNTH_TIIF)),
        outs=(str(paths.EVALUATE_REPORT), str(paths.EVALUATE_FIGURES)),
        metrics=(str(paths.EVALUATE_METRICS),),
        plots=(str(paths.EVALUATE_SCALING), str(paths.EVALUATE_TAGS), str(paths.EVALUATE_COMPUTE)),
    ),
)

CHECKPOINT_SERIES = ["base", "sft", "rl"]
COMPUTE_SERIES = [f"{name}_{method}" for name in ("sft", "rl") for method in ("r3", "best_of_n", "oracle")]
"""compute.csv's accuracy columns (r3.evals.report.write_plot_data): the trained checkpoints."""

PLOTS = [
    {"Held-out GenEval++ strict accuracy vs. allowed reflect-refine rounds": {
        "template": "linear", "x": "round", "y": {str(paths.EVALUATE_SCALING): list(CHECKPOINT_SERIES)},
        "y_label": "strict accuracy"}},
    {"Round-0 strict accuracy per tag": {
        "template": "scatter", "x": "tag", "y": {str(paths.EVALUATE_TAGS): list(CHECKPOINT_SERIES)},
        "y_label": "strict accuracy"}},
    {"Held-out GenEval++ strict accuracy vs. image budget N per prompt (R3: up to N-1 rounds; best-of-N)": {
        "template": "linear", "x": "images", "y": {str(paths.EVALUATE_COMPUTE): COMPUTE_SERIES},
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
                       "outs": [*stage.outs, *({path: {"cache": False}} for path in stage.committed_outs)]}
        if stage.frozen:
            entry["frozen"] = True
        if stage.metrics:
            entry["metrics"] = [{path: {"cache": False}} for path in stage.metrics]
        if stage.plots:
            entry["plots"] = [{path: {"cache": False}} for path in stage.plots]
        stages[stage.name] = entry
    return {"stages": stages, "plots": PLOTS}


def render_dvc_yaml() -> str:
    header = "# Rendered from flows/graph.py by `python -m flows.graph`; edit the graph, not this file.\n"
    return header + yaml.safe_dump(dvc_yaml(), sort_keys=False)


def stale_deps(on_disk: dict) -> list[str]:
    """One line per dependency the graph gives a stage that `on_disk` (a loaded dvc.yaml) lacks."""
    stages = on_disk.get("stages") or {}
    return [f"{stage.name}: {dep}" for stage in STAGES
            for dep in stage.deps if dep not in (stages.get(stage.name) or {}).get("deps", [])]


def check(path: Path) -> int:
    """0 when `path` is exactly the rendered graph; else 1, naming the missing deps."""
    rendered = render_dvc_yaml()
    on_disk = path.read_text() if path.exists() else ""
    if on_disk == rendered:
        return 0
    missing = stale_deps(yaml.safe_load(on_disk) or {})
    print(f"{path} is stale: run `python -m flows.graph`", file=sys.stderr)
    for line in missing:
        print(f"  missing dependency {line}", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render dvc.yaml from the stage graph.")
    parser.add_argument("--check", action="store_true", help="exit 1 if dvc.yaml differs instead of writing it")
    parser.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"), help="the file (default: dvc.yaml)")
    args = parser.parse_args(argv)
    if args.check:
        return check(args.dvc_yaml)
    args.dvc_yaml.write_text(render_dvc_yaml())
    print(f"wrote {args.dvc_yaml} with stages: {', '.join(s.name for s in STAGES)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
