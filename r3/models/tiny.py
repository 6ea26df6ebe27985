"""The embedded unified model `tiny`: a small Llama LM that reads text and images, and an SD3 image head
conditioned on the LM's hidden states, so understanding and generation share the LM's parameters.

Images live in the exact ShapeWorld codec's latent space (r3.world.codec, the tiny model's "VAE"): the head
generates and edits CHANNELS x 8 x 8 latents at patch 1, and images leave the model only as decoded renders.

Sequence layout (left-padded; `<patch>` positions carry linear embeddings of the image's 8 x 8 codec cells, or of
its pixel patches with `image_input: pixels`, plus fixed 2D sin-cos positions, instead of token embeddings):

    <bos> [<image> <patch> x N] <task> context words <sep> target words <eos>

Text tasks train and sample the target span. Generation conditions the head on the hidden states of
`<bos> <generate> prompt <sep> reasoning <eos>`; editing on `<bos> <image> patches <edit> instruction <sep> <eos>`
minus the patch positions (their content reaches the kept text positions through causal attention, and the
source latent is also channel-concatenated to the head's noisy input). Clauses that name a grid cell get that
cell's position features added to their conditioning states (r3.models.grounding).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from r3.models.grounding import add_grounding, grid_sincos, grounding_index
from r3.models.guided_flow import GuidedFlowMethods
from r3.models.image_head import build_image_head
from r3.models.interface import (
    FlowTrainingConfig,
    ImageCondition,
    ImageSample,
    SamplingConfig,
    SdeTransitions,
    TextQuery,
    TextSample,
)
from r3.models.sampling import decode_tokens, sample_images, starting_latents, timesteps
from r3.models.text_tasks import TextTaskMethods
from r3.models.tokenizer import (
    BOS,
    EOS,
    IMAGE,
    NO,
    PATCH,
    SEP,
    SPECIAL_TOKENS,
    TASK_TOKENS,
    YES,
    build_tokenizer,
    encode_words,
)
from r3.world import codec
from r3.world.scene import GRID, MIN_CANVAS, cell_of, check_canvas

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"

OBJECT_POSITION_SCALE = 0.02
"""Scale of an object token's cell features: the LM's embedding init std, so position and attributes start at
one scale (unscaled sin-cos would drown the word embeddings)."""


class TinyConfig(FlowTrainingConfig):
    """Sizes of the tiny unified model (the vocabulary comes from the tokenizer saved beside it)."""

    backend: Literal["tiny"] = "tiny"
    """Which backend this config builds (the key of r3.models.registry.ModelConfig); checkpoints written before
    the key existed load as tiny."""
    canvas: int = Field(32, ge=MIN_CANVAS)
    """Image side in pixels (square RGB images; a ShapeWorld canvas: a multiple of 8, at least 32)."""
    image_input: Literal["objects", "cells", "pixels"] = "objects"
    """What the LM reads of an image: one token per codec object (the sum of its size, colour and shape word
    embeddings plus its cell's 2D sin-cos features), the 8 x 8 codec cells as 64 embedded tokens, or pixel
    patches of side `patch`."""
    patch: int = Field(4, ge=1)
    """Patch side in pixels of the LM's pixel-patch input (`image_input: pixels`)."""
    grounding: Literal["sincos", "learned", "none"] = "sincos"
    """Position features added to the conditioning states of clauses that name a cell: the head's own 2D
    sin-cos function, one learned vector per cell, or none."""
    lm_dim: int = Field(128, ge=8)
    """Hidden size of the causal LM."""
    lm_layers: int = Field(2, ge=1)
    """Number of LM decoder layers."""
    lm_heads: int = Field(4, ge=1)
    """Attention heads per LM layer."""
    lm_mlp: int = Field(384, ge=8)
    """Intermediate size of the LM's SwiGLU MLP."""
    max_positions: int = Field(256, ge=16)
    """Longest LM sequence (image patches included)."""
    head_width: int = Field(128, ge=8)
    """Inner width of the SD3 image head."""
    head_layers: int = Field(4, ge=1)
    """Number of joint transformer blocks in the image head."""
    head_heads: int = Field(4, ge=1)
    """Attention heads per image-head block."""

    @model_validator(mode="after")
    def _divisible(self) -> "TinyConfig":
        check_canvas(self.canvas)
        if self.canvas % self.patch:
            raise ValueError(f"canvas {self.canvas} is not divisible by patch {self.patch}")
        if self.lm_dim % self.lm_heads:
            raise ValueError(f"lm_dim {self.lm_dim} is not divisible by lm_heads {self.lm_heads}")
        if self.head_width % self.head_heads:
            raise ValueError(f"head_width {self.head_width} is not divisible by head_heads {self.head_heads}")
        return self

    @property
    def image_side(self) -> int:
        """Side of the LM's grid of image tokens."""
        return GRID if self.image_input == "cells" else self.canvas // self.patch

    @property
    def image_features(self) -> int:
        """Input features per image token."""
        return codec.CHANNELS if self.image_input == "cells" else 3 * self.patch**2


@dataclass(frozen=True)
class Layout:
    """A left-padded batch of token sequences."""

    input_ids: Tensor
    """(B, L) token ids, `<patch>` where image patches go, `<pad>` on the left."""
    attention_mask: Tensor
    """(B, L) bool, False on padding."""


@dataclass(frozen=True)
class ImageTokens:
    """How the LM reads a batch of images."""

    ids: list[list[int]]
    """Per image, `<image>` then one `<patch>` slot per image token (`[[]]` without images)."""
    embeds: Tensor | None
    """(K, D) embeddings filling the slots, image after image."""
    cells: Tensor | None = None
    """(K,) cell (row * 8 + col) of each object token; None for embedded cells or patches."""


@dataclass(frozen=True)
class EncodedCondition:
    """LM hidden states an image is generated from."""

    states: Tensor
    """(B, Lc) + (D,) hidden states of the conditioning span, left-aligned, padded."""
    mask: Tensor
    """(B, Lc) bool, True on real conditioning tokens."""
    pooled: Tensor
    """(B, D) mean of the real conditioning states."""
    sources: Tensor | None
    """(B, CHANNELS, 8, 8) codec latents of the edit sources, or None for generation."""


def patchify(images: Tensor, patch: int) -> Tensor:
    """(B, C, H, W) -> (B, N, C * patch * patch) in raster order."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch)
    return x.permute(0, 2, 4, 1, 3, 5).reshape(b, (h // patch) * (w // patch), c * patch * patch)


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> Layout:
    """Left-padded batch of non-empty rows (so every row ends at the last position)."""
    length = max(len(r) for r in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = True
    return Layout(ids, mask)


def right_pad(rows: Sequence[Sequence[int]], pad_id: int) -> Tensor:
    """(B, T) ids, padding on the right."""
    length = max(1, max(len(r) for r in rows))
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return ids


class TinyUnifiedModel(nn.Module, GuidedFlowMethods, TextTaskMethods):
    """The `tiny` backend of `UnifiedModel`."""

    def __init__(self, config: TinyConfig, tokenizer: PreTrainedTokenizerFast) -> None:
        super().__init__()
        self.config, self.tokenizer = config, tokenizer
        missing = [t for t in [*SPECIAL_TOKENS, YES, NO] if t not in tokenizer.get_vocab()]
        if missing:
            raise ValueError(f"tokenizer lacks the tiny model's tokens {missing}; build it with build_tokenizer")
        token = tokenizer.convert_tokens_to_ids
        self.pad_id, self.bos_id, self.eos_id, self.sep_id = tokenizer.pad_token_id, token(BOS), token(EOS), token(SEP)
        self.image_id, self.patch_id = token(IMAGE), token(PATCH)
        self.task_ids = {task: token(t) for task, t in TASK_TOKENS.items()}
        self.yes_id, self.no_id = token(YES), token(NO)
        vocab = len(tokenizer)
        self.lm = LlamaForCausalLM(
            LlamaConfig(
                vocab_size=vocab,
                hidden_size=config.lm_dim,
                intermediate_size=config.lm_mlp,
                num_hidden_layers=config.lm_layers,
                num_attention_heads=config.lm_heads,
                num_key_value_heads=config.lm_heads,
                max_position_embeddings=config.max_positions,
                tie_word_embeddings=False,
                pad_token_id=self.pad_id,
                bos_token_id=self.bos_id,
                eos_token_id=self.eos_id,
                attn_implementation="sdpa",
            )
        )
        embedded = config.image_input != "objects"  # object tokens are sums of word embeddings
        self.patch_embed = nn.Linear(config.image_features, config.lm_dim) if embedded else None
        self.register_buffer(
            "patch_position", grid_sincos(config.lm_dim, config.image_side) if embedded else None, persistent=False
        )
        self.cell_features = (
            nn.Parameter(torch.zeros(GRID * GRID, config.lm_dim)) if config.grounding == "learned" else None
        )
        self.register_buffer("cell_sincos", grid_sincos(config.lm_dim), persistent=False)
        self.id_tokens = tokenizer.convert_ids_to_tokens(list(range(vocab)))
        self.image_head = build_image_head(
            codec.CHANNELS, GRID, config.head_width, config.head_layers, config.head_heads, config.lm_dim
        )
        # Texts are sampled and scored over words + <eos> only; the same mask everywhere keeps log-probs consistent.
        special = [t for t in tokenizer.all_special_tokens if t != EOS]
        forbidden = torch.zeros(vocab, dtype=torch.bool)
        forbidden[tokenizer.convert_tokens_to_ids(special)] = True
        self.register_buffer("forbidden", forbidden, persistent=False)

    @property
    def device(self) -> torch.device:
        return self.lm.lm_head.weight.device

    # ----- sequences and the LM -----

    def _image_part(self, images: Tensor | None, latents: Tensor | None = None) -> ImageTokens:
        """Per image, its tokens (`<image>` then one `<patch>` slot per image token), the (K, D) embeddings that
        fill the slots and, for object tokens, their (K,) cells, image after image. `latents` are the images'
        codec latents when the caller has them."""
        if images is None:
            return ImageTokens([[]], None, None)
        images = self._check_images(images)
        if self.config.image_input == "pixels":
            features = patchify(images * 2 - 1, self.config.patch)  # (B, N, 3 p p)
        else:
            latents = self.to_latents(images) if latents is None else latents  # (B, C, 8, 8)
            features = latents.flatten(2).transpose(1, 2)  # (B, 64, C), row-major cells
        if self.config.image_input != "objects":
            embeds = self.patch_embed(features) + self.patch_position  # (B, N, D)
            return ImageTokens([[self.image_id] + [self.patch_id] * embeds.shape[1]] * len(images), embeds.flatten(0, 1))
        scenes = [codec.latent_scene(latent, self.config.canvas) for latent in latents.cpu().numpy()]
        objects = [o for scene in scenes for o in scene.objects]
        words = torch.tensor([self.tokenizer.convert_tokens_to_ids([o.size, o.color, o.shape]) for o in objects],
                             dtype=torch.long, device=self.device).reshape(-1, 3)  # (K, 3)
        cells = torch.tensor([row * GRID + col for o in objects for col, row in [cell_of(o.x, o.y, self.config.canvas)]],
                             dtype=torch.long, device=self.device)  # (K,)
        embeds = self.lm.get_input_embeddings()(words).sum(1) + OBJECT_POSITION_SCALE * self.cell_sincos[cells]  # (K, D)
        ids = [[self.image_id] + [self.patch_id] * len(scene.objects) for scene in scenes]
        return ImageTokens(ids, embeds, cells)

    def _rows(
        self, task_id: int, contexts: Sequence[str], images: list[list[int]], targets: Sequence[list[int]], end: bool
    ) -> Layout:
        """Left-padded `<bos> image task context <sep> target [<eos>]` rows; `images` holds one image's tokens per
        row, or one empty list for text-only rows."""
        images = images * len(contexts) if len(images) == 1 else images
        rows = [
            [self.bos_id, *image, task_id, *ctx, self.sep_id, *tgt, *([self.eos_id] if end else [])]
            for image, ctx, tgt in zip(images, encode_words(self.tokenizer, contexts), targets, strict=True)
        ]
        longest = max(len(r) for r in rows)
        if longest > self.config.max_positions:
            raise ValueError(f"a sequence of {longest} tokens exceeds max_positions={self.config.max_positions}")
        layout = left_pad(rows, self.pad_id)
        return Layout(layout.input_ids.to(self.device), layout.attention_mask.to(self.device))

    def _check_images(self, images: Tensor) -> Tensor:
        # tiny's image readers (patch embedding, codec) take float32 on the model's device
        return super()._check_images(images).to(self.device, torch.float32)

    def _embed(self, layout: Layout, image_embeds: Tensor | None) -> Tensor:
        """(B, L, D) token embeddings, the `<patch>` slots filled with `image_embeds` (K, D) in order."""
        embeds = self.lm.get_input_embeddings()(layout.input_ids)  # (B, L, D)
        if image_embeds is None:
            return embeds
        return embeds.masked_scatter((layout.input_ids == self.patch_id)[..., None], image_embeds)

    def _hidden(self, layout: Layout, image_embeds: Tensor | None) -> Tensor:
        """(B, L, D) last hidden states of the LM."""
        positions = (layout.attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (B, L)
        embeds = self._embed(layout, image_embeds)  # (B, L, D)
        out = self.lm.model(inputs_embeds=embeds, attention_mask=layout.attention_mask.long(), position_ids=positions)
        return out.last_hidden_state

    def _logits(self, hidden: Tensor) -> Tensor:
        """(..., V) next-token logits with special tokens (but <eos>) excluded."""
        return self.lm.lm_head(hidden).float().masked_fill(self.forbidden, float("-inf"))

    # ----- text -----

    def _query_inputs(self, query: TextQuery) -> tuple[Layout, Tensor | None]:
        """The query's rows up to `<sep>`, and the embeddings of its image tokens."""
        image = self._image_part(query.images)
        no_targets = [[]] * len(query.contexts)
        return self._rows(self.task_ids[query.task], query.contexts, image.ids, no_targets, end=False), image.embeds

    def text_logprobs(self, query: TextQuery, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
        """(B, T) log-probs (with grad) of continuations `token_ids` (right-padded with <pad>) of `query`."""
        prompt, image_embeds = self._query_inputs(query)
        token_ids = token_ids.to(self.device)
        mask = token_ids != self.pad_id  # (B, T)
        layout = Layout(torch.cat([prompt.input_ids, token_ids], 1), torch.cat([prompt.attention_mask, mask], 1))
        hidden = self._hidden(layout, image_embeds)  # (B, Lp + T, D)
        start = prompt.input_ids.shape[1] - 1
        logits = self._logits(hidden[:, start : start + token_ids.shape[1]]) / temperature  # (B, T, V)
        safe_ids = torch.where(mask, token_ids, self.eos_id)  # (B, T)
        logp = torch.log_softmax(logits, dim=-1).gather(-1, safe_ids[..., None])[..., 0]  # (B, T)
        return torch.where(mask, logp, 0.0)

    def encode_targets(self, targets: Sequence[str], end: bool = True) -> Tensor:
        """(B, T) ids of target texts (+ <eos> when `end`), right-padded with <pad>."""
        rows = [ids + ([self.eos_id] if end else []) for ids in encode_words(self.tokenizer, targets)]
        return right_pad(rows, self.pad_id)

    @torch.no_grad()
    def sample_text(
        self, query: TextQuery, sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        """Sample a continuation of each query with temperature / top-p (greedy at temperature 0), KV-cached."""
        layout, image_embeds = self._query_inputs(query)
        mask = layout.attention_mask.long()  # (B, L)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # (B, L)
        cache = DynamicCache(config=self.lm.config)
        out = self.lm.model(
            inputs_embeds=self._embed(layout, image_embeds), attention_mask=mask, position_ids=positions,
            past_key_values=cache, use_cache=True,
        )
        next_position = positions[:, -1:] + 1  # (B, 1)

        def next_logits(token: Tensor) -> Tensor:
            nonlocal out, mask, next_position
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)  # (B, L + 1)
            out = self.lm.model(
                input_ids=token[:, None], attention_mask=mask, position_ids=next_position,
                past_key_values=out.past_key_values, use_cache=True,
            )
            next_position = next_position + 1
            return self._logits(out.last_hidden_state[:, -1])  # (B, V)

        token_ids, logprobs, scoring_temperature = decode_tokens(
            self._logits(out.last_hidden_state[:, -1]), next_logits, sampling.max_new_tokens, sampling.temperature,
            sampling.top_p, generator, self.pad_id, self.eos_id,
        )  # (B, T) each
        texts = [
            self.tokenizer.decode([i for i in row if i not in (self.pad_id, self.eos_id)]) for row in token_ids.tolist()
        ]
        return TextSample(texts, token_ids, logprobs, token_ids != self.pad_id, query, scoring_temperature)

    @torch.no_grad()
    def judge(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        layout, image_embeds = self._query_inputs(TextQuery("judge", list(prompts), images))
        logits = self._logits(self._hidden(layout, image_embeds)[:, -1])  # (B, V)
        return torch.softmax(logits[:, [self.yes_id, self.no_id]], dim=-1)[:, 0]

    # ----- images -----

    def encode_condition(self, condition: ImageCondition) -> EncodedCondition:
        """LM hidden states of the conditioning span (with grad, so the flow loss trains the LM too)."""
        n = len(condition.prompts)
        if condition.is_edit:
            sources = self._check_images(condition.sources)
            latents = self.to_latents(sources)  # (B, C, 8, 8)
            image = self._image_part(sources, latents)
            layout = self._rows(self.task_ids["edit"], condition.prompts, image.ids, [[]] * n, end=True)
        else:
            latents, image = None, self._image_part(None)
            reasoning = [[]] * n if condition.reasoning is None else encode_words(self.tokenizer, condition.reasoning)
            layout = self._rows(self.task_ids["generate"], condition.prompts, [[]], reasoning, end=True)
        hidden = self._grounded(layout, self._hidden(layout, image.embeds), image.cells)  # (B, L, D)
        span = layout.attention_mask  # (B, L)
        if image.cells is None:  # embedded cells or patches stay out of the condition (the head has the latent)
            span = span & (layout.input_ids != self.patch_id)
        order = torch.sort((~span).int(), dim=1, stable=True).indices[:, : int(span.sum(1).max())]  # (B, Lc)
        states = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, Lc, D)
        mask = span.gather(1, order)  # (B, Lc)
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)  # (B, D)
        return EncodedCondition(states, mask, pooled, latents)

    def _grounded(self, layout: Layout, hidden: Tensor, slot_cells: Tensor | None = None) -> Tensor:
        """(B, L, D) hidden states plus the cell features of every clause that names a cell and, given
        `slot_cells` (K,), of every object token (the head reads which object stands where)."""
        if self.config.grounding == "none":
            return hidden
        index = grounding_index([[self.id_tokens[i] for i in row] for row in layout.input_ids.tolist()])  # (B, L)
        if slot_cells is not None:
            index[layout.input_ids.cpu() == self.patch_id] = slot_cells.cpu()
        features = self.cell_sincos if self.cell_features is None else self.cell_features  # (64, D)
        return add_grounding(hidden, index.to(self.device), features)

    def to_latents(self, images: Tensor, edit: bool = False) -> Tensor:
        """The head's flow space is the exact codec's: (B, 3, H, W) renders in [0, 1] -> (B, C, 8, 8) latents."""
        pixels = self._check_images(images).permute(0, 2, 3, 1).cpu().numpy()  # (B, H, W, 3)
        return torch.from_numpy(codec.encode(pixels)).to(self.device)

    def from_latents(self, latents: Tensor) -> Tensor:
        """(B, C, 8, 8) latents -> (B, 3, H, W) decoded renders in [0, 1]."""
        renders = codec.decode(latents.detach().float().cpu().numpy(), self.config.canvas)  # (B, H, W, 3) uint8
        return torch.from_numpy(renders).permute(0, 3, 1, 2).float().div(255).to(self.device)

    def velocity(self, condition: EncodedCondition, x_t: Tensor, t: Tensor) -> Tensor:
        """(B, C, 8, 8) velocity (noise - data) at latents x_t (B, C, 8, 8) and times t (B,)."""
        source = condition.sources if condition.sources is not None else torch.zeros_like(x_t)
        num_image = GRID * GRID
        attend = torch.cat([condition.mask.new_ones(x_t.shape[0], num_image), condition.mask], dim=1)  # (B, N + Lc)
        return self.image_head(
            hidden_states=torch.cat([x_t, source], dim=1),  # (B, 2C, 8, 8)
            encoder_hidden_states=condition.states,
            pooled_projections=condition.pooled,
            timestep=t * 1000,  # SD3's sinusoidal time embedding expects the 0..1000 scale
            joint_attention_kwargs={"attention_mask": attend[:, None, None, :]},
            return_dict=False,
        )[0]

    @torch.no_grad()
    def sample_images(
        self,
        condition: ImageCondition,
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        """Integrate the guided flow from noise; records the SDE steps listed in `sampling.sde_steps`."""
        shape = (len(condition.prompts), codec.CHANNELS, GRID, GRID)
        noise = starting_latents(noise, shape, self.config.canvas, generator)  # (B, C, 8, 8)
        velocity_fn = self.guided_velocity(condition, sampling.cfg_scale)
        schedule = timesteps(sampling.steps, sampling.timestep_shift).to(self.device)
        noise = noise.to(self.device)
        x0, steps = sample_images(velocity_fn, noise, schedule, sampling.sde_steps, sampling.eta_a, generator)
        images = self.from_latents(x0)  # (B, 3, H, W)
        transitions = SdeTransitions(steps, condition, sampling.cfg_scale) if sampling.sde_steps else None
        return ImageSample(images, transitions)

    # ----- save / load -----

    def save_pretrained(self, directory: str | Path) -> None:
        """Write config.json, model.safetensors and the tokenizer files into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2) + "\n")
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, directory / WEIGHTS_FILE)
        self.tokenizer.save_pretrained(directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path, expected: TinyConfig | None = None) -> "TinyUnifiedModel":
        """Load a saved model; with `expected`, a checkpoint of any other config raises ValueError."""
        directory = Path(directory)
        try:
            config = TinyConfig.model_validate_json((directory / CONFIG_FILE).read_text())
        except ValidationError as error:
            message = error.errors()[0]["msg"]
            raise ValueError(f"{directory / CONFIG_FILE} is not a valid TinyConfig: {message}") from None
        if expected is not None and config != expected:
            saved, wanted = config.model_dump(), expected.model_dump()
            diff = ", ".join(
                f"{k}: checkpoint {v!r} != expected {wanted[k]!r}" for k, v in saved.items() if v != wanted[k]
            )
            raise ValueError(f"checkpoint {directory} has a different TinyConfig ({diff})")
        model = cls(config, PreTrainedTokenizerFast.from_pretrained(directory))
        state = load_file(directory / WEIGHTS_FILE)
        own = model.state_dict()
        wrong = sorted(set(state) ^ set(own)) + [k for k in state if k in own and state[k].shape != own[k].shape]
        if wrong:
            raise ValueError(f"weights in {directory} do not fit its config/tokenizer (mismatching: {wrong[:3]})")
        model.load_state_dict(state)
        return model

    def with_vocabulary(self, words: Sequence[str]) -> "TinyUnifiedModel":
        """This model over build_tokenizer(words), a vocabulary that extends its own at the end (for a checkpoint
        saved before words were added, like models/base): known words keep their ids and weights, new words get
        freshly initialised embedding and output rows. ValueError if `words` would renumber a known word."""
        tokenizer = build_tokenizer(words)
        known, extended = self.tokenizer.get_vocab(), tokenizer.get_vocab()
        renumbered = sorted(w for w, i in known.items() if extended.get(w) != i)
        if renumbered:
            raise ValueError(f"the vocabulary does not extend the model's at its end (it renumbers {renumbered[:3]})")
        if len(extended) == len(known):
            return self
        grown = TinyUnifiedModel(self.config, tokenizer).to(self.device)
        state, fresh = self.state_dict(), grown.state_dict()
        for name in ("lm.model.embed_tokens.weight", "lm.lm_head.weight"):
            state[name] = torch.cat([state[name], fresh[name][len(known) :]])  # (V_new, D)
        grown.load_state_dict(state)
        return grown

