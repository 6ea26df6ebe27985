"""The text half of `hf-composite`: a Qwen-VL-class vision-language model writes and scores every text task.

Each query is one user chat turn built with the tokenizer's chat template: the image (image tasks) and the
task's instruction from TASK_PROMPTS; the answer is the assistant turn, ended by the template's end-of-turn
token. The image placeholder is expanded to as many vision tokens as the image processor's grid gives, which
is what the model's own processor does; doing it here needs only the tokenizer and the image processor (the
processor class also wants a video processor, and that needs torchvision).

Positions are the model's multimodal RoPE indices (`get_rope_index`), passed explicitly for prompts, sampled
tokens and recomputed continuations alike, so KV-cached sampling and the full forward of the loss agree.
Like the tiny model, texts are sampled and scored over the vocabulary minus special tokens (the end token
excepted), with the same mask everywhere so behaviour and recomputed log-probs match.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

from r3.models.interface import SamplingConfig, TextQuery, TextSample, TextTask
from r3.models.sampling import decode_tokens
from r3.models.tiny import right_pad
from r3.world.edits import STOP_ANSWER

TASK_PROMPTS: dict[TextTask, str] = {
    "reason": "Rewrite this image prompt as an explicit layout: every object with its class, colour, size and "
    "position.\nPrompt: {context}",
    "reflect": "This image was generated for the prompt: {context}\nIf the image matches the prompt, answer exactly "
    f'"{STOP_ANSWER}"; otherwise write one edit instruction that fixes it.',
    "answer": "{context}\nAnswer with a single word or number.",
    "judge": "Does this image match the prompt: {context}\nAnswer yes or no.",
    "caption": "Write the prompt this image was generated from.",
}
"""User-turn text of each task; `{context}` is the query's context (caption has none)."""

JUDGE_WORDS = ("yes", "no")
"""The judge task's answers; each must be one token of the VLM's tokenizer."""


@dataclass(frozen=True)
class VlmPrompt:
    """A left-padded batch of chat prompts with their images."""

    input_ids: Tensor
    """(B, L) token ids, vision placeholders expanded."""
    attention_mask: Tensor
    """(B, L) int, 0 on the left padding."""
    pixel_values: Tensor | None
    """(P, D) patches of every image, as the image processor flattens them; None for text-only tasks."""
    image_grid_thw: Tensor | None
    """(B, 3) patch grid (time, height, width) of each image."""


def single_token(tokenizer, word: str) -> int:
    ids = tokenizer(word, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise ValueError(f"hf-composite: the VLM tokenizer splits {word!r} into {len(ids)} tokens; the judge needs one")
    return ids[0]


class VlmText(nn.Module):
    """A vision-language model with its tokenizer and image processor, as the text tasks of UnifiedModel need."""

    def __init__(self, vlm: PreTrainedModel, tokenizer, image_processor, max_new_tokens: int) -> None:
        super().__init__()
        self.model, self.tokenizer, self.image_processor = vlm, tokenizer, image_processor
        self.max_new_tokens = max_new_tokens
        if not hasattr(getattr(vlm, "model", None), "get_rope_index"):
            raise ValueError(f"hf-composite: vlm {type(vlm).__name__} is not a Qwen-VL-class model (no get_rope_index)")
        if tokenizer.chat_template is None:
            raise ValueError("hf-composite: the VLM tokenizer has no chat template")
        tokenizer.padding_side = "left"
        # the chat's end-of-turn token (generation config's first eos): ends every target and every sampled text
        ends = vlm.generation_config.eos_token_id if vlm.generation_config is not None else None
        ends = ends if ends is not None else tokenizer.eos_token_id
        self.end_id = int(ends[0] if isinstance(ends, list) else ends)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.image_token = tokenizer.convert_ids_to_tokens(vlm.config.image_token_id)
        self.yes_id, self.no_id = (single_token(tokenizer, w) for w in JUDGE_WORDS)
        vocab = vlm.get_output_embeddings().out_features
        special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special} | set(tokenizer.all_special_ids)
        forbidden = torch.zeros(vocab, dtype=torch.bool)
        forbidden[sorted(i for i in special if i != self.end_id and i < vocab)] = True
        forbidden[len(tokenizer) :] = True  # rows padding the embedding matrix beyond the tokenizer
        self.register_buffer("forbidden", forbidden, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.forbidden.device

    # ----- prompts -----

    def prompt(self, query: TextQuery) -> VlmPrompt:
        template = TASK_PROMPTS[query.task]
        image = [{"type": "image"}] if query.images is not None else []
        texts = [
            self.tokenizer.apply_chat_template(
                [{"role": "user", "content": [*image, {"type": "text", "text": template.format(context=context)}]}],
                add_generation_prompt=True, tokenize=False,
            )
            for context in query.contexts
        ]
        pixel_values = grid = None
        if query.images is not None:
            processed = self.image_processor(
                images=list(query.images.float().clamp(0, 1).cpu()), do_rescale=False, return_tensors="pt"
            )
            pixel_values, grid = processed["pixel_values"], processed["image_grid_thw"]  # (P, D), (B, 3)
            tokens_per_image = (grid.prod(-1) // self.image_processor.merge_size**2).tolist()  # (B,)
            if any(self.image_token not in text for text in texts):
                raise ValueError(f"hf-composite: the VLM chat template placed no {self.image_token} for the image")
            texts = [
                text.replace(self.image_token, self.image_token * n, 1)
                for text, n in zip(texts, tokens_per_image, strict=True)
            ]
            pixel_values, grid = pixel_values.to(self.device, self.model.dtype), grid.to(self.device)
        encoded = self.tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
        return VlmPrompt(encoded.input_ids.to(self.device), encoded.attention_mask.to(self.device), pixel_values, grid)

    def positions(self, input_ids: Tensor, attention_mask: Tensor, grid: Tensor | None) -> Tensor:
        """(3, B, L) multimodal RoPE positions (time, height, width) of the unmasked tokens; 0 on padding."""
        is_image = (input_ids == self.model.config.image_token_id).int()  # (B, L)
        positions, _ = self.model.model.get_rope_index(input_ids, is_image, grid, attention_mask=attention_mask)
        return positions

    def _logits(self, logits: Tensor) -> Tensor:
        """(..., V) float logits with special tokens (but the end token) excluded."""
        return logits.float().masked_fill(self.forbidden, float("-inf"))

    # ----- scoring -----

    def encode_targets(self, targets: Sequence[str], end: bool = True) -> Tensor:
        """(B, T) ids of target texts (+ the end-of-turn token when `end`), right-padded with `pad_id`."""
        rows = [
            self.tokenizer(text, add_special_tokens=False).input_ids + ([self.end_id] if end else [])
            for text in targets
        ]
        return right_pad(rows, self.pad_id)

    def text_logprobs(self, query: TextQuery, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
        """(B, T) log-probs (with grad) of continuations `token_ids` (right-padded with `pad_id`) of `query`."""
        prompt = self.prompt(query)
        token_ids = token_ids.to(self.device)
        mask = token_ids != self.pad_id  # (B, T)
        input_ids = torch.cat([prompt.input_ids, token_ids], dim=1)  # (B, L + T)
        attention_mask = torch.cat([prompt.attention_mask, mask.long()], dim=1)  # (B, L + T)
        logits = self.model(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=self.positions(input_ids, attention_mask, prompt.image_grid_thw),
            pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw,
            logits_to_keep=token_ids.shape[1] + 1,  # the last prompt position predicts the first token
        ).logits[:, :-1]  # (B, T, V)
        logits = self._logits(logits) / temperature
        safe_ids = torch.where(mask, token_ids, self.end_id)  # (B, T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, safe_ids[..., None])[..., 0]  # (B, T)
        return torch.where(mask, logp, 0.0)

    @torch.no_grad()
    def next_token_probs(self, query: TextQuery) -> Tensor:
        """(B, V) distribution of the first answer token (special tokens excluded)."""
        prompt = self.prompt(query)
        logits = self.model(
            input_ids=prompt.input_ids, attention_mask=prompt.attention_mask,
            position_ids=self.positions(prompt.input_ids, prompt.attention_mask, prompt.image_grid_thw),
            pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw, logits_to_keep=1,
        ).logits[:, -1]  # (B, V)
        return torch.softmax(self._logits(logits), dim=-1)

    # ----- sampling -----

    @torch.no_grad()
    def sample(
        self, query: TextQuery, sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        """Sample a continuation of each query with temperature / top-p (greedy at temperature 0), KV-cached."""
        prompt = self.prompt(query)
        mask = prompt.attention_mask  # (B, L)
        positions = self.positions(prompt.input_ids, mask, prompt.image_grid_thw)  # (3, B, L)
        out = self.model(
            input_ids=prompt.input_ids, attention_mask=mask, position_ids=positions,
            pixel_values=prompt.pixel_values, image_grid_thw=prompt.image_grid_thw, use_cache=True, logits_to_keep=1,
        )
        next_position = positions.amax(dim=(0, 2))[None, :, None] + 1  # (1, B, 1): text continues after the prompt

        def next_logits(token: Tensor) -> Tensor:
            nonlocal out, mask, next_position
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, L + 1)
            out = self.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=next_position.expand(3, -1, -1),
                past_key_values=out.past_key_values, use_cache=True,
            )
            next_position = next_position + 1
            return self._logits(out.logits[:, -1])  # (B, V)

        token_ids, logprobs, scoring_temperature = decode_tokens(
            self._logits(out.logits[:, -1]), next_logits, min(sampling.max_new_tokens, self.max_new_tokens),
            sampling.temperature, sampling.top_p, generator, self.pad_id, self.end_id,
        )  # (B, T) each
        texts = [
            self.tokenizer.decode([i for i in row if i not in (self.pad_id, self.end_id)], skip_special_tokens=True)
            .strip()
            for row in token_ids.tolist()
        ]
        return TextSample(texts, token_ids, logprobs, token_ids != self.pad_id, query, scoring_temperature)
