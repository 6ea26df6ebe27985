"""GvU intrinsic reward: the model's own understanding scores its image.

score_i = exp(mean_j log p(prompt_ij | image_i, prompt_i<j)), the geometric mean of the
per-token probabilities of the prompt given the image, in (0, 1].
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

import numpy as np
import torch

from r3.rewards.inputs import check_batch


class IntrinsicReward:
    """Prompt likelihood under ctx[model_ref].prompt_likelihood(images, prompts) -> Tensor (N,).

    model_ref "reference" (default) scores with the frozen reference model: a policy that
    scores its own images can raise the reward by shifting its understanding instead of its
    images (self-reward hacking). "policy" is the GvU setting, where understanding and
    generation improve together; use it as an ablation.
    Images reach the model as a float CPU tensor (N, 3, H, W) in [0, 1] (the ImageSample
    convention of r3.models); the model moves them to its own device.
    """

    def __init__(self, model_ref: Literal["policy", "reference"] = "reference") -> None:
        if model_ref not in ("policy", "reference"):
            raise ValueError(f"IntrinsicReward: model_ref must be 'policy' or 'reference', got {model_ref!r}")
        self.model_ref = model_ref
        self.name = f"intrinsic_{model_ref}"

    def __call__(self, images: np.ndarray, records: Sequence[dict[str, Any]], **ctx: Any) -> np.ndarray:
        n = check_batch(images, records, self.name)
        if self.model_ref not in ctx:
            raise ValueError(
                f"{self.name}: pass the model as ctx['{self.model_ref}'] (got ctx keys {sorted(ctx)})"
            )
        if n == 0:
            return np.zeros(0)
        model = ctx[self.model_ref]
        pixels = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0  # (N, 3, H, W)
        prompts = [str(record["prompt"]) for record in records]
        with torch.no_grad():
            scores = model.prompt_likelihood(pixels, prompts)  # (N,)
        if tuple(scores.shape) != (n,):
            raise ValueError(f"{self.name}: prompt_likelihood returned shape {tuple(scores.shape)}, expected ({n},)")
        return scores.detach().float().cpu().numpy().astype(np.float64).clip(0.0, 1.0)
