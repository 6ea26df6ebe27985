"""The `hf-composite` backend: Hugging Face models behind the same `UnifiedModel` interface as `tiny`.

What runs where:
  * understanding (reason, reflect, answer, judge, prompt_likelihood, and their training log-probs): a
    `transformers` Qwen-VL-class vision-language model (Qwen2-VL, Qwen2.5-VL, Qwen3-VL), r3.models.hf_text;
  * generation: a Stable Diffusion 3 (3 / 3.5) pipeline's transformer on its VAE latents, r3.models.hf_image;
  * editing: a FLUX.1-Kontext pipeline's transformer, source latents as extra image tokens, r3.models.hf_image.
Sampling, the SDE log-probs and classifier-free guidance are r3.models.sampling's, applied to latents.

Departures from docs/method.md and from the tiny model:
  * the three parts share no parameters: generation is conditioned on the prompt with the reasoning text
    appended ("prompt reasoning") through SD3's own text encoders, not on the VLM's hidden states, so image
    losses do not train the VLM;
  * text encoders and VAEs are frozen; training updates the VLM and both flow transformers (or, with `lora`,
    only LoRA adapters on them);
  * images live in latent space: `noise` given in pixel shape (B, 3, H, W), as the stages pass it, becomes
    latent noise by keeping the first C*h*w of each row's values (i.i.d. Gaussian in, i.i.d. Gaussian out, and
    rows that share a pixel noise share a latent noise);
  * Flux-Kontext's distilled guidance embedding is fed `editor_guidance`, and `cfg_scale` adds true CFG (empty
    instruction, same source) on top, as the Kontext pipeline's `true_cfg_scale` does.

Text sampling is our own KV-cached loop over the VLM (as in tiny), so behaviour log-probs, top-p and the
torch.Generator behave as the RL loss expects. Images come back on the CPU. With `editor: null`, `edit` raises
NotImplementedError (editing must be an instruction-editing model, not SD3 image-to-image).

Checkpoints: config.json (the config as given) plus either full copies vlm/, generator/, editor/ or, with
`lora`, only <part>_lora.safetensors, the base weights being re-read from the config's ids or paths.
Weights load only from safetensors (`use_safetensors=True`); `trust_remote_code` is off unless set.
"""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, inject_adapter_in_model
from pydantic import Field, ValidationError, model_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoTokenizer
from transformers.utils import cached_file

from r3.config import Config
from r3.models.guided_flow import GuidedFlowMethods
from r3.models.hf_image import FlowCondition, KontextEditor, Sd3Generator, decode_latents, encode_images
from r3.models.hf_text import VlmText
from r3.models.interface import (
    FlowTrainingConfig,
    ImageCondition,
    ImageSample,
    SamplingConfig,
    SdeTransitions,
    TextQuery,
    TextSample,
)
from r3.models.sampling import sample_images, starting_latents, timesteps
from r3.models.text_tasks import TextTaskMethods

CONFIG_FILE = "config.json"
PARTS = ("vlm", "generator", "editor")
"""Sub-directories of a full checkpoint, and the LoRA files `<part>_lora.safetensors` of an adapter one."""
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class HfLoraConfig(Config):
    """LoRA adapters (peft) on the VLM and on both flow transformers; everything else stays frozen."""

    rank: int = Field(16, ge=1)
    """Adapter rank r."""
    alpha: float = Field(16.0, gt=0)
    """Adapter scale numerator: the update is (alpha / r) B A."""
    dropout: float = Field(0.0, ge=0, lt=1)
    """Dropout on the adapter input; keep 0 for RL, where dropout breaks the behaviour/recompute ratio of 1."""
    vlm_targets: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    """Module names (suffixes) of the VLM that get adapters."""
    image_targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")
    """Module names (suffixes) of the SD3 and Kontext transformers that get adapters."""


class HfCompositeConfig(FlowTrainingConfig):
    """A transformers VLM + a diffusers SD3 generator + a diffusers Flux-Kontext editor, from hub ids or paths."""

    backend: Literal["hf-composite"] = "hf-composite"
    """Which backend this config builds (the key of r3.models.registry.ModelConfig)."""
    vlm: str = Field(min_length=1)
    """Hub id or local path of a Qwen-VL-class model (weights, tokenizer with chat template, image processor)."""
    generator: str = Field(min_length=1)
    """Hub id or local path of a StableDiffusion3Pipeline (e.g. stabilityai/stable-diffusion-3.5-medium)."""
    editor: str | None = None
    """Hub id or local path of a FluxKontextPipeline (e.g. black-forest-labs/FLUX.1-Kontext-dev); None: `edit`
    raises (no instruction-editing model), for reason-only runs."""
    trust_remote_code: bool = False
    """Allow code shipped with the checkpoints to run (transformers / diffusers `trust_remote_code`)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Weights' dtype; the sampler's SDE math and log-probs always run in float32."""
    device: str = "auto"
    """torch device for every part ("cpu", "cuda", "cuda:1", ...); "auto" is cuda when available, else cpu."""
    lora: HfLoraConfig | None = None
    """LoRA adapters to train instead of the full VLM and transformers; None trains them in full."""
    resolution: int = Field(512, ge=16)
    """Side of generated and edited images in pixels (square)."""
    max_new_tokens: int = Field(256, ge=1)
    """Most tokens any text sampling call writes, whatever the call asks (bounds the VLM's KV cache)."""
    max_sequence_length: int = Field(256, ge=1)
    """T5 tokens of the SD3 and Kontext prompt encodings (longer prompts are truncated)."""
    editor_guidance: float = Field(2.5, ge=0)
    """Value fed to a guidance-distilled editor's guidance embedding (FLUX.1-Kontext-dev: 2.5)."""

    @model_validator(mode="after")
    def _device_parses(self) -> "HfCompositeConfig":
        if self.device != "auto":
            try:
                torch.device(self.device)
            except RuntimeError:
                raise ValueError(f"device {self.device!r} is not a torch device (or 'auto')") from None
        return self

    @property
    def canvas(self) -> int:
        """Image side, under the name the stages read for every backend."""
        return self.resolution


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def require_safetensors(source: str, what: str) -> None:
    """A local directory whose weights are only pickles (.bin / .pt / .ckpt) fails here, before any loader runs."""
    root = Path(source)
    if not root.is_dir():
        return  # a hub id: use_safetensors=True makes the loader refuse pickles
    for folder in [root, *(p for p in root.iterdir() if p.is_dir())]:
        pickles = [p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt")]
        if pickles and not any(folder.glob("*.safetensors")):
            raise ValueError(f"hf-composite: {what} {folder} has only pickled weights ({pickles[0]}); "
                             "convert them to safetensors")


def loading_error(what: str, source: str, error: Exception) -> ValueError:
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return ValueError(f"hf-composite: cannot load {what} from {source!r}: {first}")


def load_vlm(source: str, config: HfCompositeConfig) -> VlmText:
    require_safetensors(source, "vlm")
    remote = {"trust_remote_code": config.trust_remote_code}
    try:
        model = AutoModelForImageTextToText.from_pretrained(
            source, dtype=DTYPES[config.dtype], use_safetensors=True, **remote
        )
        tokenizer = AutoTokenizer.from_pretrained(source, **remote)
        image_processor = AutoImageProcessor.from_pretrained(source, **remote)
        if tokenizer.chat_template is None:
            tokenizer.chat_template = processor_chat_template(source)
    except (OSError, ValueError, KeyError) as error:
        raise loading_error("vlm", source, error) from None
    return VlmText(model, tokenizer, image_processor, config.max_new_tokens)


def processor_chat_template(source: str) -> str | None:
    """The chat template of repos that ship it for their processor only (chat_template.json), else None."""
    path = cached_file(source, "chat_template.json", _raise_exceptions_for_missing_entries=False)
    return None if path is None else json.loads(Path(path).read_text())["chat_template"]


def load_pipeline(kind: Literal["generator", "editor"], source: str, config: HfCompositeConfig):
    # imported here: importing the pipelines pulls in image processors that warn about torchvision at import,
    # which every tiny-only run would print
    from diffusers import FluxKontextPipeline, StableDiffusion3Pipeline

    require_safetensors(source, kind)
    pipeline_class = StableDiffusion3Pipeline if kind == "generator" else FluxKontextPipeline
    try:
        return pipeline_class.from_pretrained(
            source, dtype=DTYPES[config.dtype], use_safetensors=True, trust_remote_code=config.trust_remote_code
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise loading_error(kind, source, error) from None


def add_lora(module: nn.Module, lora: HfLoraConfig, part: str) -> None:
    """Fresh peft LoRA adapters (B = 0: the module's function is unchanged) on `module`'s target layers."""
    targets = lora.vlm_targets if part == "vlm" else lora.image_targets
    adapter = LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(targets))
    try:
        inject_adapter_in_model(adapter, module)
    except ValueError as error:
        raise ValueError(f"hf-composite: LoRA on the {part}: {str(error).splitlines()[0]}") from None


def lora_state(module: nn.Module) -> dict[str, Tensor]:
    return {name: value.contiguous() for name, value in module.state_dict().items() if "lora_" in name}


class HfCompositeModel(nn.Module, GuidedFlowMethods, TextTaskMethods):
    """The `hf-composite` backend of `UnifiedModel` (and of the training hooks of r3.models.losses)."""

    def __init__(self, config: HfCompositeConfig, vlm: VlmText, sd3: Sd3Generator, kontext: KontextEditor | None):
        super().__init__()
        self.config, self.vlm, self.sd3, self.kontext = config, vlm, sd3, kontext
        for part in (sd3, kontext):
            if part is not None:
                part.check_resolution(config.resolution)
        self.requires_grad_(False)
        for part, module in self.trained_modules().items():
            if config.lora is None:
                module.requires_grad_(True)
                continue
            add_lora(module, config.lora, part)
            for name, parameter in module.named_parameters():
                parameter.requires_grad_("lora_" in name)
        self.to(resolve_device(config.device))

    def trained_modules(self) -> dict[str, nn.Module]:
        """The modules training updates (in full, or through their LoRA adapters), by checkpoint part name."""
        modules = {"vlm": self.vlm.model, "generator": self.sd3.transformer}
        if self.kontext is not None:
            modules["editor"] = self.kontext.transformer
        return modules

    @property
    def device(self) -> torch.device:
        return self.vlm.device

    @property
    def pad_id(self) -> int:
        return self.vlm.pad_id

    # ----- text -----

    def sample_text(
        self, query: TextQuery, sampling: SamplingConfig, generator: torch.Generator | None = None
    ) -> TextSample:
        return self.vlm.sample(query, sampling, generator)

    def judge(self, images: Tensor, prompts: Sequence[str]) -> Tensor:
        probs = self.vlm.next_token_probs(TextQuery("judge", list(prompts), self._check_images(images)))  # (B, V)
        yes_no = probs[:, [self.vlm.yes_id, self.vlm.no_id]]  # (B, 2)
        return yes_no[:, 0] / yes_no.sum(dim=1).clamp_min(1e-30)

    def text_logprobs(self, query: TextQuery, token_ids: Tensor, temperature: float = 1.0) -> Tensor:
        return self.vlm.text_logprobs(query, token_ids, temperature)

    def encode_targets(self, targets: Sequence[str], end: bool = True) -> Tensor:
        return self.vlm.encode_targets(targets, end)

    # ----- images -----

    def _editor(self) -> KontextEditor:
        if self.kontext is None:
            raise NotImplementedError("hf-composite: no editor configured (set `editor` to a FLUX.1-Kontext pipeline)")
        return self.kontext

    def encode_condition(self, condition: ImageCondition) -> FlowCondition:
        """Prompt (+ reasoning) through SD3's text encoders, or instruction + source through Kontext's."""
        if condition.is_edit:
            return self._editor().encode(condition.prompts, self._check_images(condition.sources), self.device)
        reasoning = condition.reasoning or [""] * len(condition.prompts)
        texts = [" ".join(part for part in (p.strip(), z.strip()) if part)
                 for p, z in zip(condition.prompts, reasoning, strict=True)]
        return self.sd3.encode(texts, self.device)

    def velocity(self, condition: FlowCondition, x_t: Tensor, t: Tensor) -> Tensor:
        """(B, C, h, w) velocity (noise - data) at latents x_t (B, C, h, w) and times t (B,) in [0, 1]."""
        part = self.sd3 if condition.sources is None else self._editor()
        return part.velocity(condition, x_t.to(self.device), t.to(self.device))

    def to_latents(self, images: Tensor, edit: bool = False) -> Tensor:
        """(B, C, h, w) scaled VAE latents of images (B, 3, H, W) in [0, 1], in the generator's or editor's space."""
        vae = (self._editor() if edit else self.sd3).vae
        with torch.no_grad():
            return encode_images(vae, self._check_images(images).to(self.device))

    def _on_device(self, generator: torch.Generator | None) -> torch.Generator | None:
        """A generator on the model's device, seeded from `generator`, for the sampler's SDE noise."""
        if generator is None or generator.device.type == self.device.type:
            return generator
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return torch.Generator(self.device).manual_seed(seed)

    @torch.no_grad()
    def sample_images(
        self,
        condition: ImageCondition,
        sampling: SamplingConfig,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> ImageSample:
        """Integrate the guided flow on latents from noise, decode with the VAE; records `sampling.sde_steps`."""
        part = self._editor() if condition.is_edit else self.sd3
        shape = (len(condition.prompts), *part.latent_shape(self.config.resolution))
        start = starting_latents(noise, shape, self.config.resolution, generator).to(self.device)  # (B, C, h, w)
        velocity_fn = self.guided_velocity(condition, sampling.cfg_scale)
        schedule = timesteps(sampling.steps, sampling.timestep_shift).to(self.device)
        latents, steps = sample_images(
            velocity_fn, start, schedule, sampling.sde_steps, sampling.eta_a, self._on_device(generator)
        )
        images = decode_latents(part.vae, latents).cpu()  # (B, 3, H, W)
        transitions = SdeTransitions(steps, condition, sampling.cfg_scale) if sampling.sde_steps else None
        return ImageSample(images, transitions)

    # ----- build / save / load -----

    @classmethod
    def from_config(cls, config: HfCompositeConfig, weights: Path | None = None) -> "HfCompositeModel":
        """Load the parts named in `config` (or, for a full checkpoint, from `weights`/<part>); with `config.lora`,
        fresh adapters are added."""
        sources = {part: str(weights / part) for part in PARTS} if weights is not None else {
            "vlm": config.vlm, "generator": config.generator, "editor": config.editor,
        }
        vlm = load_vlm(sources["vlm"], config)
        sd3 = Sd3Generator(load_pipeline("generator", sources["generator"], config), config.max_sequence_length)
        kontext = None
        if config.editor is not None:
            pipeline = load_pipeline("editor", sources["editor"], config)
            kontext = KontextEditor(pipeline, config.max_sequence_length, config.editor_guidance)
        return cls(config, vlm, sd3, kontext)

    def save_pretrained(self, directory: str | Path) -> None:
        """config.json, then the full parts as safetensors (vlm/, generator/, editor/), or with LoRA only the
        adapters (<part>_lora.safetensors; the base weights are re-read from the config's ids or paths)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_FILE).write_text(self.config.model_dump_json(indent=2) + "\n")
        if self.config.lora is not None:
            for name, module in self.trained_modules().items():
                save_file(lora_state(module), directory / f"{name}_lora.safetensors")
            return
        self.vlm.model.save_pretrained(directory / "vlm")
        self.vlm.tokenizer.save_pretrained(directory / "vlm")
        self.vlm.image_processor.save_pretrained(directory / "vlm")
        self.sd3.pipeline.save_pretrained(directory / "generator", safe_serialization=True)
        if self.kontext is not None:
            self.kontext.pipeline.save_pretrained(directory / "editor", safe_serialization=True)

    @classmethod
    def from_pretrained(cls, directory: str | Path, expected: HfCompositeConfig | None = None) -> "HfCompositeModel":
        """Load a saved model; with `expected`, a checkpoint of any other config raises ValueError."""
        directory = Path(directory)
        try:
            config = HfCompositeConfig.model_validate(json.loads((directory / CONFIG_FILE).read_text()))
        except (OSError, ValueError, ValidationError) as error:
            message = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error).splitlines()[0]
            raise ValueError(f"{directory / CONFIG_FILE} is not a valid HfCompositeConfig: {message}") from None
        if expected is not None and config != expected:
            saved, wanted = config.model_dump(), expected.model_dump()
            diff = ", ".join(
                f"{k}: checkpoint {v!r} != expected {wanted[k]!r}" for k, v in saved.items() if v != wanted[k]
            )
            raise ValueError(f"checkpoint {directory} has a different HfCompositeConfig ({diff})")
        if config.lora is None:
            return cls.from_config(config, weights=directory)
        model = cls.from_config(config)
        for name, module in model.trained_modules().items():
            path = directory / f"{name}_lora.safetensors"
            if not path.is_file():
                raise ValueError(f"checkpoint {directory} lacks {path.name} (its config has LoRA on)")
            result = module.load_state_dict(load_file(path), strict=False)
            missing = [k for k in result.missing_keys if "lora_" in k]
            if result.unexpected_keys or missing:
                wrong = (result.unexpected_keys or missing)[:3]
                raise ValueError(f"{path} does not fit the {name}'s LoRA adapters (mismatching: {wrong})")
        return model
