"""Frozen configuration models shared by every stage.

Every section of `params.yaml` is validated by one `Config` subclass: unknown keys, wrong types
and impossible values are rejected at construction, before any stage writes anything.
"""

from pydantic import BaseModel, ConfigDict, Field


class Config(BaseModel):
    """Base of every config: immutable, no unknown keys, field docstrings become descriptions."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


class BaseConfig(Config):
    """The `base` section of params.yaml, read by every stage."""

    seed: int = Field(0, ge=0)
    """Root seed; every stage derives its own generators from it."""

    canvas: int = Field(32, ge=16, le=512)
    """Side of the square ShapeWorld images in pixels (32 on CPU, 64 and up on GPU)."""

    num_threads: int = Field(2, ge=1)
    """torch / BLAS threads for CPU work."""

    experiment: str = Field("r3flow", min_length=1)
    """MLflow experiment that every stage logs its run into."""
