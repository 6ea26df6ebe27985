"""Model configs of every backend as one union, and the two entry points the stages build models through.

`ModelConfig` is discriminated by the `backend` key; a config (or a checkpoint's config.json) without the key
is `tiny`, so params files and checkpoints written before `hf-composite` existed keep loading.
"""

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError

from r3.models.hf_composite import HfCompositeConfig, HfCompositeModel
from r3.models.interface import TrainableUnifiedModel
from r3.models.tiny import CONFIG_FILE, TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.world.prompts import vocabulary


def backend_of(value: Any) -> str:
    """The `backend` key of a raw config dict or a config object; tiny when absent."""
    if isinstance(value, dict):
        return value.get("backend", "tiny")
    return getattr(value, "backend", "tiny")


ModelConfig = Annotated[
    Annotated[TinyConfig, Tag("tiny")] | Annotated[HfCompositeConfig, Tag("hf-composite")],
    Discriminator(backend_of),
]
"""The `model` section of params.yaml: `backend: tiny` (default) or `backend: hf-composite`."""

MODEL_CONFIG: TypeAdapter[ModelConfig] = TypeAdapter(ModelConfig)


def build_model(config: ModelConfig) -> TrainableUnifiedModel:
    """A model to start training from: tiny from scratch (ShapeWorld vocabulary), hf-composite from its
    pretrained ids or paths."""
    if isinstance(config, TinyConfig):
        return TinyUnifiedModel(config, build_tokenizer(vocabulary()))
    return HfCompositeModel.from_config(config)


def read_model_config(directory: str | Path) -> ModelConfig:
    """The config a checkpoint directory was saved with."""
    path = Path(directory) / CONFIG_FILE
    try:
        return MODEL_CONFIG.validate_python(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as error:
        message = error.errors()[0]["msg"] if isinstance(error, ValidationError) else str(error).splitlines()[0]
        raise ValueError(f"{path} is not a valid model config: {message}") from None


def load_checkpoint(directory: str | Path, expected: ModelConfig | None = None) -> TrainableUnifiedModel:
    """Load a checkpoint of any backend; with `expected`, one of another backend or config raises ValueError."""
    backend = read_model_config(directory).backend
    if expected is not None and expected.backend != backend:
        raise ValueError(f"checkpoint {directory} is a {backend} model, expected {expected.backend}")
    if backend == "tiny":
        return TinyUnifiedModel.from_pretrained(directory, expected)
    return HfCompositeModel.from_pretrained(directory, expected)
