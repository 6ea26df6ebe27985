"""Where a stage's time goes: a few steps of `sft` or `rl`, or a few prompts of `evaluate`, run with the stage's
own functions and params, each part's wall time (exclusive of the parts inside it) beside its floating-point work
and the time that work would take at this machine's measured matmul peak (the FLOP-bound time).

    python -m bench.stage_profile sft [--steps 5] [-S sft.batch_size=16 ...]
    python -m bench.stage_profile rl [--steps 4]          # one reason and one reflect-refine step per two
    python -m bench.stage_profile evaluate [--prompts 16] # the SFT checkpoint on the looped suite: loop + best-of-N

Reads data/synth, models/base and data/sft/checkpoint (run the stages first). Two passes over the same work: one
timed, one counting FLOPs (torch.utils.flop_counter, whose dispatch overhead would spoil the timing). A part's
ratio (wall / FLOP-bound) says how far it runs from the hardware limit: near 1 only less work helps, far above 1
overhead or memory traffic dominates. The last line printed is one JSON object.
"""

import argparse
import copy
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from r3 import paths
from r3.config import BaseConfig
from r3.data.table import Table
from r3.evals import evaluate as evaluate_module
from r3.evals.evaluate import EvaluateConfig, Shard
from r3.machine import machine_facts
from r3.models.registry import load_checkpoint
from r3.models.tiny import TinyUnifiedModel
from r3.params import apply_overrides, read_params, section
from r3.rewards.base import build_reward
from r3.rl import train as rl_train
from r3.rl.checkpoint import fresh_state
from r3.rl.config import RlConfig
from r3.train import data as train_data
from r3.train.data import SynthSplit
from r3.train.distributed import Learner, make_accelerator
from r3.train.ema import ema_update
from r3.train.sft import SftConfig, initial_model, param_groups, step_losses, tasks_for_step

PARTS: list[tuple[Any, str, str]] = [
    (TinyUnifiedModel, "velocity", "image head (velocity)"),
    (TinyUnifiedModel, "encode_condition", "image condition (LM + grounding)"),
    (TinyUnifiedModel, "sample_text", "text sampling"),
    (TinyUnifiedModel, "text_logprobs", "text log-probs"),
    (TinyUnifiedModel, "_hidden", "LM forward"),
    (torch.Tensor, "backward", "backward"),
    (torch.optim.AdamW, "step", "optimizer"),
    (torch.nn.utils, "clip_grad_norm_", "grad clip"),
    (SynthSplit, "batch", "data (batches)"),
    (Table, "pixels", "data (image decode)"),
    (rl_train, "quick_eval", "evaluation"),
    (evaluate_module, "sample_best_of_n", "best-of-N sampling"),
]
"""(owner, attribute, part name): the calls timed as parts. Parts nest (the LM forward inside text sampling):
each part's time excludes the parts inside it; the rest of the step is `other`."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


class PartClock:
    """Exclusive wall time, FLOPs and calls per part, read while the wrapped calls run."""

    def __init__(self, flops: Callable[[], int]) -> None:
        self.flops = flops
        self.seconds: dict[str, float] = defaultdict(float)
        self.work: dict[str, int] = defaultdict(int)
        self.calls: dict[str, int] = defaultdict(int)
        self.stack: list[list[float]] = []  # per open part: [inner seconds, inner flops]

    def wrap(self, fn: Callable, name: str) -> Callable:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.stack.append([0.0, 0])
            start, flops0 = time.perf_counter(), self.flops()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds, work = time.perf_counter() - start, self.flops() - flops0
                inner_seconds, inner_work = self.stack.pop()
                self.seconds[name] += seconds - inner_seconds
                self.work[name] += work - inner_work
                self.calls[name] += 1
                if self.stack:
                    self.stack[-1][0] += seconds
                    self.stack[-1][1] += work

        return timed


def timed_parts(run: Callable[[], None], counter: FlopCounterMode | None) -> tuple[PartClock, float, int]:
    """Run `run` with every part of PARTS wrapped; (clock, wall seconds, total FLOPs)."""
    clock = PartClock((lambda: counter.get_total_flops()) if counter is not None else (lambda: 0))
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in PARTS]
    for owner, attr, name in PARTS:
        setattr(owner, attr, clock.wrap(getattr(owner, attr), name))
    try:
        start = time.perf_counter()
        if counter is None:
            run()
        else:
            with counter:
                run()
        wall = time.perf_counter() - start
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)
    return clock, wall, counter.get_total_flops() if counter is not None else 0


def matmul_peak(threads: int) -> float:
    """FLOP/s of a 1024^3 fp32 matmul on `threads` threads: this machine's attainable peak."""
    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    start, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    return reps * 2 * 1024**3 / (time.perf_counter() - start)


def sft_work(params: dict, steps: int) -> Callable[[], Callable[[], None]]:
    """A fresh SFT trainer per pass (same seeds), and `steps` of its steps."""
    base, cfg = section(params, "base", BaseConfig), section(params, "sft", SftConfig)
    train = SynthSplit.load(paths.SYNTH_TRAIN)

    def prepare() -> Callable[[], None]:
        torch.manual_seed(base.seed)
        model = initial_model(cfg, paths.BASE_MODEL)
        ema = copy.deepcopy(model).requires_grad_(False)
        learner = Learner(make_accelerator(), model, torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.95)))
        rng, generator = np.random.default_rng([base.seed, 3]), torch.Generator().manual_seed(base.seed)

        def run() -> None:
            for step in range(steps):
                tasks = tasks_for_step(step, cfg)
                learner.step(lambda m: step_losses(m, train, tasks, cfg, rng, generator), cfg.grad_clip)
                ema_update(ema, model, step, cfg.ema_decay)

        return run

    return prepare


def rl_work(params: dict, steps: int) -> Callable[[], Callable[[], None]]:
    """A fresh Tree-RL trainer from the SFT checkpoint per pass, and `steps` of its steps."""
    base, cfg = section(params, "base", BaseConfig), section(params, "rl", RlConfig)
    prompts = Table.load(paths.SYNTH_TRAIN / "prompts.parquet")
    reward = build_reward(cfg.reward)

    def prepare() -> Callable[[], None]:
        reference = load_checkpoint(paths.SFT_CHECKPOINT).eval().requires_grad_(False)
        state = fresh_state(base, cfg, paths.SFT_CHECKPOINT)
        learner = Learner(make_accelerator(), state.policy, state.optimizer, sampling_copy=True)

        def run() -> None:
            for _ in range(steps):
                rl_train.train_step(state, reference, reward, prompts, cfg, learner)
                state.step += 1

        return run

    return prepare


def evaluate_work(params: dict, prompts: int) -> Callable[[], Callable[[], None]]:
    """The SFT checkpoint's shard of the looped suite (R3 loop and best-of-N) on `prompts` prompts per tag."""
    base, cfg = section(params, "base", BaseConfig), section(params, "evaluate", EvaluateConfig)
    cfg = cfg.model_copy(update={"per_tag": prompts})
    model_config = load_checkpoint(paths.SFT_CHECKPOINT).config
    shard = Shard("sft", str(paths.SFT_CHECKPOINT), cfg.scaling_suite)

    def prepare() -> Callable[[], None]:
        return lambda: evaluate_module.evaluate_shard(base, cfg, model_config, paths.SYNTH, shard,
                                                       Path("/tmp/r3flow-profile"))

    return prepare


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stage_profile", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("sft", "rl", "evaluate"))
    parser.add_argument("--steps", type=int, default=None, help="training steps (sft 5, rl 4)")
    parser.add_argument("--prompts", type=int, default=4, help="evaluate: prompts per tag of the looped suite")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args()
    needed = {"sft": [paths.SYNTH_TRAIN, paths.BASE_MODEL], "rl": [paths.SYNTH_TRAIN, paths.SFT_CHECKPOINT],
              "evaluate": [paths.SYNTH_HELDOUT, paths.SFT_CHECKPOINT]}[args.stage]
    missing = [str(p) for p in needed if not p.exists()]
    if missing:
        fail(f"{missing[0]} not found: run `dvc repro` (or the stages before {args.stage}) first")
    params = apply_overrides(read_params(args.params), args.overrides)
    base = section(params, "base", BaseConfig)
    steps = args.steps or {"sft": 5, "rl": 4, "evaluate": 1}[args.stage]
    prepare = {"sft": lambda: sft_work(params, steps), "rl": lambda: rl_work(params, steps),
               "evaluate": lambda: evaluate_work(params, args.prompts)}[args.stage]()
    peak = matmul_peak(base.num_threads)
    torch.set_num_threads(base.num_threads)
    clock, wall, _ = timed_parts(prepare(), None)
    counted, _, total_flops = timed_parts(prepare(), FlopCounterMode(display=False))
    rows = []
    names = sorted(clock.seconds, key=lambda n: -clock.seconds[n])
    other = wall - sum(clock.seconds.values())
    print(f"{args.stage}: {wall:.2f} s wall for {steps if args.stage != 'evaluate' else args.prompts} "
          f"{'steps' if args.stage != 'evaluate' else 'prompts per tag'}; matmul peak {peak / 1e9:.1f} GFLOP/s "
          f"on {base.num_threads} threads")
    print(f"{'part':<34} {'wall s':>8} {'share':>6} {'calls':>6} {'GFLOP':>8} {'bound s':>8} {'ratio':>6}")
    for name in [*names, "other"]:
        seconds = other if name == "other" else clock.seconds[name]
        work = total_flops - sum(counted.work.values()) if name == "other" else counted.work[name]
        bound = work / peak
        rows.append({"part": name, "seconds": round(seconds, 3), "share": round(seconds / wall, 3),
                     "calls": clock.calls.get(name, 0), "gflop": round(work / 1e9, 3), "bound_s": round(bound, 3)})
        ratio = f"{seconds / bound:6.1f}" if bound > 0 else "     -"
        print(f"{name:<34} {seconds:8.2f} {seconds / wall:6.1%} {clock.calls.get(name, 0):6d} {work / 1e9:8.2f} "
              f"{bound:8.2f} {ratio}")
    bound_total = total_flops / peak
    print(f"{'total':<34} {wall:8.2f} {1:6.1%} {'':>6} {total_flops / 1e9:8.2f} {bound_total:8.2f} "
          f"{wall / bound_total:6.1f}")
    print(json.dumps({"stage": args.stage, "steps": steps, "wall_s": round(wall, 3), "gflop": round(total_flops / 1e9, 3),
                      "bound_s": round(bound_total, 3), "peak_gflops": round(peak / 1e9, 1), "parts": rows,
                      "machine": machine_facts(base.num_threads)}))


if __name__ == "__main__":
    main()
