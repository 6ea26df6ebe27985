"""Which SFT skills are limited by updates: train some SFT tasks alone on the synth tables, report held-out curves.

An untrained default tiny model (or, with `--init DIR`, a saved checkpoint such as models/base) is trained on
the chosen tasks only (each task's batch every step, AdamW at the
SFT learning rate unless `--lr`, with 50 warm-up steps), and every `--every` steps the held-out metrics of those
tasks are measured on `--rows` rows (`generate`: render fidelity, images from the ground-truth layouts; `edit`:
editing success). Needs the synth stage's output (`dvc repro synth`). Usage:
`python bench/sft_probe.py --tasks reason --steps 1500` or `--tasks answer,judge --steps 1000`; each line printed
is one JSON object, one point of the curve.
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from r3.evals import heldout
from r3.models.interface import SamplingConfig
from r3.models.registry import build_model, load_checkpoint
from r3.models.tiny import TinyConfig
from r3.train.data import SynthSplit, task_loss
from r3.train.sft import SftConfig, param_groups


PROBED = ("answer", "judge", "reason", "reflect", "generate", "edit")


def probe_metrics(model, held: SynthSplit, tasks: list[str], canvas: int, rows: int) -> dict[str, float]:
    """Held-out metrics of the probed tasks (greedy decoding, ODE sampling as in SFT's evaluation)."""
    metrics, sampling = {}, SftConfig().sampling
    if "answer" in tasks:
        vqa = heldout.vqa_accuracy(model, held.vqa, limit=rows)
        metrics.update({"vqa": vqa["overall"], **{f"vqa/{c}": v for c, v in vqa["per_category"].items()}})
    if "judge" in tasks:
        metrics["ita"] = heldout.ita_accuracy(model, held.ita, limit=rows)["overall"]
    if "reason" in tasks:
        metrics["reasoning_validity"] = heldout.reasoning_validity(model, held.enrichment, canvas, limit=rows)["overall"]
    if "reflect" in tasks:
        metrics["reflection"] = heldout.reflection_accuracy(model, held.reflection, limit=rows)["overall"]
    if "generate" in tasks:
        fidelity = heldout.generation_accuracy(model, held.enrichment, sampling, canvas, 0, limit=rows, true_layouts=True)
        metrics.update({f"render_fidelity/{s}": v for s, v in fidelity["strict"]["overall"].items()})
    if "edit" in tasks:
        metrics["editing"] = heldout.editing_success(model, held.editing, sampling, canvas, 0, limit=rows)["overall"]
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="reason", help=f"comma-separated, of: {', '.join(PROBED)}")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--synth", type=Path, default=Path("data/synth"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lr", type=float, default=SftConfig().lr, help="peak AdamW learning rate of the LM")
    parser.add_argument("--head-lr", type=float, default=None, help="peak learning rate of the image head (default: --lr)")
    parser.add_argument("--init", type=Path, default=None, help="checkpoint to start from (default: untrained)")
    parser.add_argument("--grounding", default=TinyConfig().grounding, help="grounding of an untrained model")
    parser.add_argument("--image-input", default=TinyConfig().image_input, help="image input of an untrained model")
    args = parser.parse_args()
    tasks = args.tasks.split(",")
    unknown = [t for t in tasks if t not in PROBED]
    if unknown:
        parser.error(f"--tasks: {unknown} are not probed tasks ({', '.join(PROBED)})")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    train, held = SynthSplit.load(args.synth / "train"), SynthSplit.load(args.synth / "heldout")
    untrained = TinyConfig(grounding=args.grounding, image_input=args.image_input)
    model = build_model(untrained) if args.init is None else load_checkpoint(args.init)
    config = model.config
    cfg = SftConfig(lr=args.lr, head_lr=args.head_lr, model=config)
    optimizer = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.95))
    peaks = [group["lr"] for group in optimizer.param_groups]
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    started = time.perf_counter()
    for step in range(args.steps):
        for group, peak in zip(optimizer.param_groups, peaks, strict=True):
            group["lr"] = peak * min(1.0, (step + 1) / 50)
        loss = sum(task_loss(model, train, t, rng, args.batch, generator) for t in tasks)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if (step + 1) % args.every == 0 or step + 1 == args.steps:
            model.eval()
            point = {"tasks": tasks, "step": step + 1, "seconds": round(time.perf_counter() - started, 1),
                     **probe_metrics(model, held, tasks, config.canvas, args.rows)}
            model.train()
            print(json.dumps(point), flush=True)


if __name__ == "__main__":
    main()
