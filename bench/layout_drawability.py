"""Where a checkpoint's generation errors come from: the planner's layouts or the renderer that draws them.

    python bench/layout_drawability.py [--checkpoint data/sft/checkpoint] [--rows 8] [--samples 8]

For `rows` held-out prompts of every GenEval++ tag it samples `samples` layouts at temperature 1 (as RL rollouts
do), draws each with ODE sampling, and counts per tag: layouts whose objects satisfy the prompt (the verifier's
check on the parsed objects), the share of those that are also drawable (every object inside the canvas and apart
from the others: r3.world.layout.drawable), and how often the model's image is exact given a drawable satisfying
layout. The last line printed is one JSON object.
"""

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from r3.evals.heldout import to_uint8
from r3.models.interface import SamplingConfig
from r3.models.registry import load_checkpoint
from r3.train.data import SynthSplit
from r3.world.layout import drawable, parse_layout
from r3.world.verifier import check, verify


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("data/sft/checkpoint"))
    parser.add_argument("--synth", type=Path, default=Path("data/synth"))
    parser.add_argument("--rows", type=int, default=8, help="held-out prompts per tag")
    parser.add_argument("--samples", type=int, default=8, help="layouts sampled per prompt")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = load_checkpoint(args.checkpoint).eval()
    canvas = model.config.canvas
    table = SynthSplit.load(args.synth / "heldout").enrichment
    tags, in_suite = table.frame["tag"].to_numpy(), table.frame["suite"].to_numpy() == "geneval_pp"
    generator = torch.Generator().manual_seed(args.seed)
    result = {}
    for tag in sorted(set(tags[in_suite])):
        index = np.flatnonzero(in_suite & (tags == tag))[: args.rows]
        records = [r for r in table.records(index) for _ in range(args.samples)]
        prompts = [str(r["prompt"]) for r in records]
        with torch.no_grad():
            layouts = model.reason(prompts, SamplingConfig(temperature=1.0), generator).texts
            images = to_uint8(model.generate(prompts, layouts, SamplingConfig(), generator=generator).images)
        satisfies = drawn = exact = 0
        for layout, record, image in zip(layouts, records, images, strict=True):
            scene = parse_layout(layout, canvas)
            if scene is None or check(scene.objects, record, canvas=canvas).strict != 1:
                continue
            satisfies += 1
            if drawable(scene):
                drawn += 1
                exact += verify(image, record).strict == 1
        result[tag] = {"layouts": len(records), "satisfy": satisfies / len(records),  # ratios: None when 0 / 0
                       "drawable_given_satisfy": drawn / satisfies if satisfies else None,
                       "exact_given_drawable": exact / drawn if drawn else None}
        print(tag, json.dumps(result[tag]), flush=True)
    print(json.dumps({"checkpoint": str(args.checkpoint), "per_tag": result}))


if __name__ == "__main__":
    main()
