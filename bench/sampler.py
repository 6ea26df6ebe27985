"""Sampling speed of the tiny model: images/s with the ODE and with the SDE sampler, and the SDE's overhead.

Untrained model of the default TinyConfig, default SamplingConfig; the SDE run makes one step stochastic, as
a Tree-RL rollout does. Also times one SFT-style training step (flow matching on a generation batch + CE on a
VQA text batch, backward, AdamW). Usage: `python bench/sampler.py [--batch 32] [--repeats 3]`; the last line
printed is one JSON object.
"""

import argparse
import json
import time

import torch

from r3.models.interface import ImageCondition, SamplingConfig, TextQuery
from r3.models.losses import ImageBatch, TextBatch, flow_matching_loss, text_loss
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer

WORDS = "a one two three four red green blue yellow purple orange circle square triangle star cross diamond".split()
WORDS += "circles squares triangles stars crosses diamonds small large left right above below".split()
WORDS += "of and at top bottom center how many ,".split()
PROMPT = "two red circles left of a blue square and one green triangle"
REASONING = (
    "red circle small at left top , red circle large at left bottom , "
    "blue square small at center , green triangle large at right top"
)


def images_per_second(model: TinyUnifiedModel, sampling: SamplingConfig, batch: int, repeats: int) -> float:
    """Best of `repeats` timed calls (after one warm-up) of generate on `batch` prompts."""
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        model.generate([PROMPT] * batch, [REASONING] * batch, sampling, generator=torch.Generator().manual_seed(i))
        times.append(time.perf_counter() - start)
    return batch / min(times[1:])


def train_step_ms(model: TinyUnifiedModel, batch: int, repeats: int) -> float:
    """Best of `repeats` timed training steps (after one warm-up) on a generation and a text batch of `batch`."""
    images = torch.rand(batch, 3, model.config.canvas, model.config.canvas)
    generation = ImageBatch(ImageCondition([PROMPT] * batch, [REASONING] * batch), images)
    answers = TextBatch(TextQuery("answer", ["how many red circles"] * batch, images), ["two"] * batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95))
    times = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        loss = flow_matching_loss(model, generation, torch.Generator().manual_seed(i)) + text_loss(model, answers)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        times.append(time.perf_counter() - start)
    return 1000 * min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (best one counts)")
    args = parser.parse_args()
    torch.manual_seed(0)
    model = TinyUnifiedModel(TinyConfig(), build_tokenizer(WORDS)).eval()
    ode = SamplingConfig()
    sde = ode.model_copy(update={"sde_steps": (ode.steps // 2,)})
    ode_rate = images_per_second(model, ode, args.batch, args.repeats)
    sde_rate = images_per_second(model, sde, args.batch, args.repeats)
    step_ms = train_step_ms(model.train(), args.batch, args.repeats)
    print(f"ODE {ode_rate:.1f} images/s, SDE {sde_rate:.1f} images/s ({ode.steps} steps, batch {args.batch})")
    print(f"training step (generation + text batch of {args.batch}): {step_ms:.0f} ms")
    result = {
        "batch": args.batch,
        "steps": ode.steps,
        "cfg_scale": ode.cfg_scale,
        "threads": torch.get_num_threads(),
        "ode_images_per_s": round(ode_rate, 2),
        "sde_images_per_s": round(sde_rate, 2),
        "sde_overhead_pct": round(100 * (ode_rate / sde_rate - 1), 2),
        "train_step_ms": round(step_ms, 1),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
