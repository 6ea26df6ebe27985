"""Model configs of every backend as one union, and the two entry points the stages build models through.

`ModelConfig` is discriminated by the `backend` key; a config (or a checkpoint's config.json) without the key
is `tiny`, so params files and checkpoints written before `hf-composite` existed keep loading.
"""

import json
from pathlib import Path
from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter, ValidationError
from safetensors import SafetensorError

from r3.errors import REBUILD, InputError
from r3.models.hf_composite import HfCompositeConfig, HfCompositeModel
from r3.models.interface import TrainableUnifiedModel
from r3.models.tiny import CONFIG_FILE, WEIGHTS_FILE, TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.world.vocabulary import vocabulary


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


def check_checkpoint(directory: str | Path, expected: ModelConfig | None = None) -> ModelConfig:
    """Its config, or InputError: a tiny checkpoint is loaded (small), of another backend only the config is read."""
    config = read_model_config(directory)
    if config.backend == "tiny":
        load_checkpoint(directory, expected)
    return config


TINY_FILES = (CONFIG_FILE, WEIGHTS_FILE, "tokenizer.json")
"""What a tiny checkpoint directory holds."""


def _first_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        first = error.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc']) or 'config'}: {first['msg']}"
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def read_model_config(directory: str | Path) -> ModelConfig:
    """The config a checkpoint directory was saved with; InputError if the directory or its config is missing
    or not a model config of this project."""
    directory = Path(directory)
    if not directory.is_dir():
        raise InputError(f"{directory}: checkpoint not found; {REBUILD}")
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise InputError(f"{path}: checkpoint config not found; {REBUILD}")
    try:
        return MODEL_CONFIG.validate_python(json.loads(path.read_text()))
    except (OSError, ValueError, ValidationError) as error:
        raise InputError(f"{path}: not a model config of this project ({_first_line(error)}); {REBUILD}") from None


def load_checkpoint(directory: str | Path, expected: ModelConfig | None = None) -> TrainableUnifiedModel:
    """Load a checkpoint of any backend. InputError (one line, with the fix) for a missing or malformed
    checkpoint, weights that do not fit its config, or (with `expected`) one of another backend or config."""
    directory = Path(directory)
    backend = read_model_config(directory).backend
    if expected is not None and expected.backend != backend:
        raise InputError(f"{directory}: checkpoint is a {backend} model, expected {expected.backend}; {REBUILD}")
    if backend == "tiny":
        missing = [name for name in TINY_FILES if not (directory / name).is_file()]
        if missing:
            raise InputError(f"{directory}: checkpoint lacks {', '.join(missing)}; {REBUILD}")
    try:
        if backend == "tiny":
            return TinyUnifiedModel.from_pretrained(directory, expected)
        return HfCompositeModel.from_pretrained(directory, expected)
    except InputError:
        raise
    except (ValueError, OSError, SafetensorError, RuntimeError) as error:
        raise InputError(f"{directory}: checkpoint does not load ({_first_line(error)}); {REBUILD}") from None


def load_init(directory: str | Path, expected: ModelConfig | None = None) -> TrainableUnifiedModel:
    """load_checkpoint for a checkpoint that training starts from: a tiny one extended to the world's whole
    vocabulary (TinyUnifiedModel.with_vocabulary; models/base predates the GenEval++ words), so that every prompt
    word can be learnt."""
    model = load_checkpoint(directory, expected)
    if not isinstance(model, TinyUnifiedModel):
        return model
    try:
        return model.with_vocabulary(vocabulary())
    except ValueError as error:
        raise InputError(f"{directory}: {error}; {REBUILD}") from None
