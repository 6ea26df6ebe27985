"""The text-task methods every backend shares, given how it samples and scores continuations of a text query.

A backend supplies `sample_text(query, sampling, generator)`, `text_logprobs`, `encode_targets`, `pad_id` and a
`config.canvas`; reason / reflect / answer and the prompt likelihood of the GvU reward are then the same code for
all of them (judge is not: each backend reads its yes/no tokens its own way).
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from r3.models.interface import SamplingConfig, TextQuery, TextSample


class TextTaskMethods:
    """reason / reflect / answer / prompt_likelihood of `UnifiedModel` on top of the backend's text model."""

    def _check_images(self, images: Tensor) -> Tensor:
        """`images` if they are (B, 3, canvas, canvas), else a one-line ValueError."""
        size = self.config.canvas
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, size, size):
            raise ValueError(f"images must have shape (B, 3, {size}, {size}), got {tuple(images.shape)}")
        return images

    def reason(
        self, prompts: Sequence[str], sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        return self.sample_text(TextQuery("reason", list(prompts)), sampling, generator)

    def reflect(
        self, images: Tensor, prompts: Sequence[str], sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        return self.sample_text(TextQuery("reflect", list(prompts), self._check_images(images)), sampling, generator)

    def answer(self, images: Tensor, questions: Sequence[str], max_new_tokens: int = 16) -> TextSample:
        greedy = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
        return self.sample_text(TextQuery("answer", list(questions), self._check_images(images)), greedy)

    @torch.no_grad()
    def prompt_likelihood(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        if any(not p.strip() for p in prompts):
            raise ValueError("prompt_likelihood got an empty prompt")
        targets = self.encode_targets(prompts, end=False)  # (B, T)
        query = TextQuery("caption", [""] * len(prompts), self._check_images(images))
        logp = self.text_logprobs(query, targets)  # (B, T)
        count = (targets != self.pad_id).sum(dim=1).to(logp.device)  # (B,)
        return torch.exp(logp.sum(dim=1) / count)
