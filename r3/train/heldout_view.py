"""The held-out view both training stages log: every skill metric on the synth held-out split, its flat
headline numbers, and sample grids."""

from pathlib import Path

import numpy as np
import torch

from r3.data.grid import image_grid
from r3.evals import heldout
from r3.models.interface import SamplingConfig, TrainableUnifiedModel
from r3.train.data import SynthSplit


def evaluate_heldout(model: TrainableUnifiedModel, data: SynthSplit, sampling: SamplingConfig, canvas: int,
                     seed: int) -> dict:
    """Every held-out skill metric on every row of `data` (the quick mid-run curves pass `SynthSplit.spread`'s
    rows); images sampled with `sampling` on a `canvas`-pixel canvas from noise seeded by `seed`."""
    model.eval()
    metrics = {
        "vqa": heldout.vqa_accuracy(model, data.vqa),
        "ita": heldout.ita_accuracy(model, data.ita),
        "reasoning_validity": heldout.reasoning_validity(model, data.enrichment, canvas),
        "reflection": heldout.reflection_accuracy(model, data.reflection),
        "generation": heldout.generation_accuracy(model, data.enrichment, sampling, canvas, seed),
        "render_fidelity": heldout.generation_accuracy(model, data.enrichment, sampling, canvas, seed,
                                                       true_layouts=True),
        "editing": heldout.editing_success(model, data.editing, sampling, canvas, seed),
    }
    model.train()
    return metrics


def skill_headline(metrics: dict) -> dict[str, float]:
    """The flat numbers of `evaluate_heldout`'s metrics that a curve or a table shows."""
    gen = metrics["generation"]
    return {
        "vqa": metrics["vqa"]["overall"],
        "ita": metrics["ita"]["overall"],
        "reasoning_validity": metrics["reasoning_validity"]["overall"],
        "reflection": metrics["reflection"]["overall"],
        "editing": metrics["editing"]["overall"],
        "render_fidelity": float(np.mean(list(metrics["render_fidelity"]["strict"]["overall"].values()))),
        **{f"generation_strict/{s}": v for s, v in gen["strict"]["overall"].items()},
        **{f"generation_partial/{s}": v for s, v in gen["partial"]["overall"].items()},
    }


@torch.no_grad()
def sample_grids(model: TrainableUnifiedModel, data: SynthSplit, sampling: SamplingConfig, canvas: int, seed: int,
                 out_dir: Path, tag: str, n: int = 8) -> list[Path]:
    """Generation (prompt -> reasoning -> image), rendering (target beside the image generated from its true
    layout) and editing (source -> edited) sample grids."""
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    index = np.linspace(0, len(data.enrichment) - 1, n).astype(int)
    prompts = data.enrichment.texts("prompt", index)
    reasoning = model.reason(prompts, heldout.GREEDY).texts
    generated = model.generate(prompts, reasoning, sampling, noise=heldout.noise_for(index, canvas, seed))
    layouts = data.enrichment.texts("reasoning", index)
    rendered = model.generate(prompts, layouts, sampling, noise=heldout.noise_for(index, canvas, seed))
    edit_index = np.linspace(0, len(data.editing) - 1, n // 2).astype(int)
    sources = data.editing.pixels("source_image", edit_index)
    instructions = data.editing.texts("instruction", edit_index)
    edited = model.edit(sources, instructions, sampling, noise=heldout.noise_for(edit_index, canvas, seed))
    model.train()
    gen_path, edit_path = out_dir / f"generation_{tag}.png", out_dir / f"editing_{tag}.png"
    render_path = out_dir / f"rendering_{tag}.png"
    image_grid(list(heldout.to_uint8(generated.images)), prompts).save(gen_path)
    targets = heldout.to_uint8(data.enrichment.pixels("image", index))
    pairs = [img for pair in zip(targets, heldout.to_uint8(rendered.images), strict=True) for img in pair]
    image_grid(pairs, [c for layout in layouts for c in (f"target: {layout}", "generated")]).save(render_path)
    pairs = [img for pair in zip(heldout.to_uint8(sources), heldout.to_uint8(edited.images), strict=True) for img in pair]
    captions = [c for i in instructions for c in (f"source: {i}", "edited")]
    image_grid(pairs, captions).save(edit_path)
    return [gen_path, render_path, edit_path]
