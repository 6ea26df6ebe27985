"""How many ODE steps and how much guidance the held-out image metrics need: render fidelity (images from the true
layouts), generation accuracy (greedy reasoning, then the image) and editing success of a checkpoint at each
(steps, cfg_scale), with the wall time of each setting. Measured on rows of the synth *train* split (evenly spread
over every tag), so that choosing a setting never reads the held-out split the stages report.

    python bench/eval_sampling.py [--checkpoint data/sft/checkpoint] [--rows 280] [--settings 16:3 8:3 8:1 4:1]

The last line printed is one JSON object.
"""

import argparse
import json
import sys
import time

import torch

from r3 import paths
from r3.data.table import spread_rows
from r3.evals import heldout
from r3.machine import machine_facts
from r3.models.interface import SamplingConfig
from r3.models.registry import load_checkpoint
from r3.train.data import SynthSplit


def setting(text: str) -> SamplingConfig:
    steps, cfg_scale = text.split(":")
    return SamplingConfig(steps=int(steps), cfg_scale=float(cfg_scale))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(paths.SFT_CHECKPOINT))
    parser.add_argument("--rows", type=int, default=280, help="rows of each train table, spread over its tags")
    parser.add_argument("--settings", nargs="+", default=["16:3", "8:3", "8:1", "4:1"], metavar="STEPS:CFG")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not paths.SYNTH_TRAIN.exists():
        print(f"error: {paths.SYNTH_TRAIN} not found: run `dvc repro synth` first", file=sys.stderr)
        sys.exit(2)
    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.checkpoint).eval()
    train = SynthSplit.load(paths.SYNTH_TRAIN)
    enrichment, editing = spread_rows(train.enrichment, args.rows), spread_rows(train.editing, args.rows)
    canvas = model.config.canvas
    rows = []
    for text in args.settings:
        sampling = setting(text)
        start = time.perf_counter()
        fidelity = heldout.generation_accuracy(model, enrichment, sampling, canvas, args.seed, true_layouts=True)
        generation = heldout.generation_accuracy(model, enrichment, sampling, canvas, args.seed)
        edits = heldout.editing_success(model, editing, sampling, canvas, args.seed)
        row = {"steps": sampling.steps, "cfg_scale": sampling.cfg_scale, "seconds": round(time.perf_counter() - start, 1),
               "render_fidelity": fidelity["strict"]["overall"], "generation_strict": generation["strict"]["overall"],
               "editing": edits["overall"], "editing_per_error": edits["per_error"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(json.dumps({"checkpoint": args.checkpoint, "rows": args.rows, "settings": rows,
                      "machine": machine_facts(args.threads)}))


if __name__ == "__main__":
    main()
