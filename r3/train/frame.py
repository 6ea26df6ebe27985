"""What the two training stages (r3.train.sft, r3.rl.train) share around their own `for step` loop: the result,
the history file that feeds the MLflow logger, and the tail (final held-out evaluation -> sample grids -> saved
checkpoint -> metrics.json)."""

import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from r3.machine import machine_facts
from r3.models.interface import SamplingConfig, TrainableUnifiedModel
from r3.train.data import SynthSplit
from r3.train.heldout_view import evaluate_heldout, sample_grids, skill_headline

MetricLogger = Callable[[dict[str, float], int], None]
"""Receives each recorded (metrics, step): the stage's MLflow run, or nothing."""
Recorder = Callable[[dict[str, float], int], None]
"""Writes one (metrics, step) line to the history and passes it to the MetricLogger."""


@dataclass(frozen=True)
class TrainResult:
    """What a training stage wrote: out_dir/{checkpoint/, metrics.json, history.jsonl, samples/*.png}."""

    checkpoint: Path
    metrics: dict
    history: Path
    samples: list[Path]


def other_process_result(out_dir: Path) -> TrainResult:
    """The result of a non-main process of a multi-process launch, which writes nothing: an empty headline and
    paths that do not exist."""
    return TrainResult(out_dir / "checkpoint", {"headline": {}}, out_dir / "history.jsonl", [])


@contextmanager
def history_file(out_dir: Path, main: bool, log: MetricLogger, lines: list[str]) -> Iterator[Recorder]:
    """out_dir/history.jsonl, opened for the run, starting with `lines` (a resumed run's history), and its
    recorder: each record is a flushed JSON line {"step": s, **metrics}, appended to `lines` too (so a resume
    checkpoint holds it) and passed to `log`. Only the main process writes a file."""
    with open(out_dir / "history.jsonl" if main else os.devnull, "w") as history:
        history.writelines(lines)

        def record(metrics: dict[str, float], step: int) -> None:
            line = json.dumps({"step": step, **metrics}) + "\n"
            history.write(line)
            history.flush()
            lines.append(line)
            log(metrics, step)

        yield record


def finish(model: TrainableUnifiedModel, held: SynthSplit, sampling: SamplingConfig, seed: int, out_dir: Path,
           record: Recorder, steps: int, extra: dict, started: float) -> TrainResult:
    """The tail of a training stage, on the main process: every held-out metric of `model` (recorded as the
    headline at step `steps`), the final sample grids, the checkpoint, and metrics.json = the held-out metrics,
    their headline, `extra`, the machine (r3.machine) and the seconds since `started`."""
    final = evaluate_heldout(model, held, sampling, model.config.canvas, seed)
    headline = skill_headline(final)
    record({f"heldout/{k}": v for k, v in headline.items()}, steps)
    samples_dir = out_dir / "samples"
    sample_grids(model, held, sampling, model.config.canvas, seed, samples_dir, "final")
    checkpoint = out_dir / "checkpoint"
    model.save_pretrained(checkpoint)
    metrics = {"headline": headline, **final, **extra, "machine": machine_facts(),
               "total_seconds": time.perf_counter() - started}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    return TrainResult(checkpoint, metrics, out_dir / "history.jsonl", sorted(samples_dir.glob("*.png")))
