"""The typed interface every unified-model backend implements, and the values it passes around.

Images are float tensors (B, 3, H, W) in [0, 1]; every method is batched over B.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from pydantic import Field, model_validator
from torch import Tensor, nn

from r3.config import Config
from r3.models.sampling import SdeSteps, StepDistribution

TextTask = Literal["reason", "reflect", "answer", "judge", "caption"]
"""What a text query asks: reason (prompt -> layout text), reflect (image + prompt -> stop or edit instruction),
answer (image + question -> answer), judge (image + prompt -> yes/no), caption (image -> prompt)."""

TASKS_WITH_IMAGE: frozenset[str] = frozenset({"reflect", "answer", "judge", "caption"})


class SamplingConfig(Config):
    """How text and images are sampled."""

    steps: int = Field(16, ge=1)
    """Number of flow-integration steps from noise to image (16 keeps CPU sampling fast at 32x32)."""
    timestep_shift: float = Field(1.0, gt=0)
    """SD3 time shift of the schedule; > 1 spends more steps near noise, 1 is a uniform grid."""
    cfg_scale: float = Field(3.0, ge=0)
    """Classifier-free guidance scale; 1 disables guidance (one head pass per step instead of two)."""
    eta_a: float = Field(0.7, gt=0)
    """SDE noise scale `a` in eta = a * sqrt(t / (1 - min(t, 0.95))); RL: 0.7 reason, 1.0 refine."""
    sde_steps: tuple[int, ...] = ()
    """Indices of the steps sampled with the SDE (and recorded for RL); empty = pure ODE sampling."""
    temperature: float = Field(1.0, ge=0)
    """Text sampling temperature; 0 is greedy decoding (log-probs then use temperature 1)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling: keep the smallest set of tokens whose probability reaches top_p."""
    max_new_tokens: int = Field(32, ge=1)
    """Longest text a sampling call writes (the end token included)."""

    @model_validator(mode="after")
    def _sde_steps_in_schedule(self) -> "SamplingConfig":
        if any(not 0 <= i < self.steps for i in self.sde_steps):
            raise ValueError(f"sde_steps {self.sde_steps} must lie in [0, {self.steps}) (steps={self.steps})")
        return self


HELDOUT_SAMPLING = SamplingConfig(steps=4, cfg_scale=3.0)
"""ODE sampling of the embedded default's held-out image metrics (sft.sampling, rl.eval_sampling, evaluate.sampling).
The exact codec snaps a nearly right latent to the exact render, so 4 steps with guidance 3 (8 head passes per image,
against 32 at 16 steps) give the SFT checkpoint the same render fidelity, generation and editing, error kind by error
kind, on 140 rows of the train split; without guidance editing falls 0.679 -> 0.643 (bench/eval_sampling.py,
docs/measured.md). Real models set their own (docs/real-models.md)."""


class FlowTrainingConfig(Config):
    """The flow-matching training settings every backend's model config carries (read by r3.models.losses)."""

    cfg_dropout: float = Field(0.1, ge=0, lt=1)
    """Probability of training the flow model on the empty (unconditional) condition, for CFG."""
    timestep_sampling: Literal["uniform", "logit_normal"] = "logit_normal"
    """Flow-matching training time distribution: uniform on (0, 1) or sigmoid(N(0, 1)) as in SD3."""


@dataclass(frozen=True)
class TextQuery:
    """The input of a text task: one context string per example and, for image tasks, the images."""

    task: TextTask
    contexts: list[str]
    images: Tensor | None = None

    def __post_init__(self) -> None:
        needs_image = self.task in TASKS_WITH_IMAGE
        if needs_image != (self.images is not None):
            raise ValueError(f"text task {self.task!r} {'needs' if needs_image else 'takes no'} images")
        if self.images is not None and self.images.shape[0] != len(self.contexts):
            raise ValueError(f"{self.images.shape[0]} images for {len(self.contexts)} contexts in task {self.task!r}")


@dataclass(frozen=True)
class ImageCondition:
    """What an image is generated from: a prompt (+ reasoning), or a source image + an edit instruction."""

    prompts: list[str]
    """Generation prompts, or edit instructions when `sources` is given."""
    reasoning: list[str] | None = None
    """Generation only: the reasoning text written for each prompt."""
    sources: Tensor | None = None
    """Editing only: (B, 3, H, W) images in [0, 1] to edit."""

    def __post_init__(self) -> None:
        if self.reasoning is not None and self.sources is not None:
            raise ValueError("an ImageCondition has either reasoning (generation) or sources (editing), not both")
        if self.reasoning is not None and len(self.reasoning) != len(self.prompts):
            raise ValueError(f"ImageCondition has {len(self.reasoning)} reasoning texts, {len(self.prompts)} prompts")
        if self.sources is not None and self.sources.shape[0] != len(self.prompts):
            raise ValueError(f"ImageCondition has {self.sources.shape[0]} sources for {len(self.prompts)} instructions")

    @property
    def is_edit(self) -> bool:
        return self.sources is not None

    def unconditional(self) -> "ImageCondition":
        """The condition classifier-free guidance contrasts with: all texts empty, edit sources kept."""
        empty = [""] * len(self.prompts)
        return ImageCondition(empty, None if self.reasoning is None else empty, self.sources)


@dataclass(frozen=True)
class TextSample:
    """Sampled texts with what PPO needs: token ids, behaviour log-probs and the query to recompute them."""

    texts: list[str]
    token_ids: Tensor
    """(B, T) sampled ids, end token included, padding after it."""
    logprobs: Tensor
    """(B, T) log-prob of each sampled token at `temperature`; 0 on padding."""
    mask: Tensor
    """(B, T) bool, True on sampled tokens (end token included)."""
    query: TextQuery
    temperature: float
    """Temperature the log-probs were computed at (1 for greedy decoding)."""


@dataclass(frozen=True)
class SdeTransitions:
    """The stochastic sampling steps of a batch of images and the inputs that produced them."""

    steps: SdeSteps
    condition: ImageCondition
    cfg_scale: float


@dataclass(frozen=True)
class ImageSample:
    images: Tensor
    """(B, 3, H, W) in [0, 1]."""
    transitions: SdeTransitions | None
    """Recorded SDE steps when sampling asked for any (`SamplingConfig.sde_steps`), else None."""


class UnifiedModel(Protocol):
    """One model that understands and generates images; every stage talks to backends through this."""

    def reason(
        self, prompts: Sequence[str], sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        """Write the reasoning (explicit layout) text for each prompt."""
        ...

    def generate(
        self,
        prompts: Sequence[str],
        reasoning: Sequence[str] | None,
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        """Images for the prompts (+ reasoning); `noise` (B, 3, H, W) fixes the start, else drawn from `generator`."""
        ...

    def reflect(
        self, images: Tensor, prompts: Sequence[str], sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        """For each (image, prompt): the stop answer or one edit instruction."""
        ...

    def edit(
        self,
        images: Tensor,
        instructions: Sequence[str],
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        """Apply one edit instruction to each image."""
        ...

    def answer(self, images: Tensor, questions: Sequence[str], max_new_tokens: int = 16) -> TextSample:
        """Greedy answer to a question about each image (VQA)."""
        ...

    def judge(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """(B,) probability that each image matches its prompt (ITA; aligned when > 0.5)."""
        ...

    def prompt_likelihood(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        """(B,) exp of the mean log-prob of the prompt's tokens given the image (GvU intrinsic reward), in (0, 1]."""
        ...

    def text_logprobs(self, query: TextQuery, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
        """(B, T) log-probs (with grad) of given continuations of `query`; 0 on padding."""
        ...

    def transition_distribution(self, transitions: SdeTransitions) -> StepDistribution:
        """Mean, std and log-prob (with grad) of recorded SDE steps under the current weights, CFG re-applied."""
        ...


class ModelSettings(Protocol):
    """What the stages and the supervised losses read from a backend's config, whatever the backend."""

    @property
    def canvas(self) -> int:
        """Side of the square images the model reads and writes, in pixels."""
        ...

    @property
    def cfg_dropout(self) -> float:
        """Probability of training on the empty condition (for classifier-free guidance)."""
        ...

    @property
    def timestep_sampling(self) -> Literal["uniform", "logit_normal"]:
        """Flow-matching training time distribution."""
        ...


class TrainableUnifiedModel(UnifiedModel, Protocol):
    """A `UnifiedModel` the SFT and RL stages can train: the hooks of r3.models.losses and the torch module API.

    The flow-matching hooks work in the backend's own image space ("latents"): pixels in [-1, 1] for `tiny`,
    scaled VAE latents for `hf-composite`.
    """

    config: ModelSettings
    pad_id: int
    """Id that right-pads `encode_targets` rows (masked out of every text loss)."""

    @property
    def device(self) -> torch.device: ...

    def encode_targets(self, targets: Sequence[str], end: bool = True) -> Tensor:
        """(B, T) ids of target texts (+ the end token when `end`), right-padded with `pad_id`."""
        ...

    def encode_condition(self, condition: ImageCondition) -> Any:
        """The backend's encoding of an image condition, passed back to `velocity`."""
        ...

    def velocity(self, condition: Any, x_t: Tensor, t: Tensor) -> Tensor:
        """Velocity (noise - data) at latents x_t (B, C, h, w) and times t (B,) in [0, 1]."""
        ...

    def to_latents(self, images: Tensor, edit: bool = False) -> Tensor:
        """(B, C, h, w) flow-space data of images (B, 3, H, W) in [0, 1] (`edit`: the editing model's space)."""
        ...

    def save_pretrained(self, directory: str | Path) -> None: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...

    def requires_grad_(self, requires_grad: bool = True) -> Any: ...
