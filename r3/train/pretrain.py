"""The `pretrain` stage: the tiny model's general skills, learned once and shipped in the repository.

R3 starts RL from a pretrained unified model (BAGEL); ours starts SFT from `models/base`, which this stage trains
from scratch on ShapeWorld's general skills: generation from prompt + layout, VQA, image-text alignment and
captioning. The R3-specific formats (reasoning, reflection, editing) stay SFT's job. The trainer is SFT's
multitask loop; the checkpoint is written with a MODEL_CARD.md that says how to reproduce it.
"""

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from r3.config import BaseConfig
from r3.train.frame import MetricLogger, TrainResult
from r3.train.sft import SftConfig, TaskWeights, train_sft

PRETRAIN_TASKS = ("generate", "answer", "judge", "caption")
"""The skills a base model learns; the other SFT tasks must have weight 0."""


class PretrainConfig(SftConfig):
    """The `pretrain` section of params.yaml: SFT's trainer on the general skills only, from scratch."""

    init: Literal["scratch"] = "scratch"
    """A base model is always trained from random weights."""
    steps: int = Field(4000, ge=1)
    """Optimisation steps."""
    every_step: tuple[Literal["generate", "answer", "judge", "caption"], ...] = ("generate", "answer")
    """Tasks trained at every step."""
    head_lr: float | None = Field(2e-3, gt=0)
    """Peak AdamW learning rate of the image head."""
    weights: TaskWeights = TaskWeights(reason=0.0, reflect=0.0, edit=0.0)
    """Loss weight per task; reason, reflect and edit must stay 0."""
    eval_every: int = Field(1000, ge=1)
    """Steps between quick held-out evaluations (logged as curves)."""

    @model_validator(mode="after")
    def _general_skills_only(self) -> "PretrainConfig":
        specific = [t for t in ("reason", "reflect", "edit") if getattr(self.weights, t) > 0]
        if specific:
            raise ValueError(f"weights of {specific} must be 0: R3-specific formats are SFT's job")
        return self


def model_card(cfg: PretrainConfig, base: BaseConfig, metrics: dict, commit: str) -> str:
    """MODEL_CARD.md of a base model: what it is, how it was trained, how to reproduce it, what it scores."""
    headline = metrics["headline"]
    rows = "\n".join(f"| {k} | {v:.3f} |" for k, v in sorted(headline.items()))
    return f"""# r3flow tiny base model

A small unified model (Llama LM + SD3 image head on exact ShapeWorld codec latents) pretrained from scratch on
the general skills {", ".join(PRETRAIN_TASKS)} (weights {dict((t, getattr(cfg.weights, t)) for t in PRETRAIN_TASKS)}).
The R3-specific formats (reasoning, reflection, editing) are not trained here; the `sft` stage starts from it.

* seed: {base.seed}, canvas {base.canvas}, torch threads {base.num_threads}
* code commit: {commit}
* steps: {cfg.steps} of batch {cfg.batch_size} per task; wall time {metrics["train_seconds"] / 60:.1f} min training,
  {metrics["total_seconds"] / 60:.1f} min in all
* reproduce: `python -m flows.pretrain` at that commit with these params, then `dvc commit pretrain` (the stage
  is frozen, so `dvc repro` never retrains it):

```json
{json.dumps({"base": base.model_dump(mode="json"), "pretrain": cfg.model_dump(mode="json")}, indent=2)}
```

Held-out metrics (synth held-out split; reasoning, reflection and editing are untrained here):

| metric | value |
|---|---:|
{rows}
"""


def train_pretrain(base: BaseConfig, cfg: PretrainConfig, synth_dir: Path, out_dir: Path,
                   log: MetricLogger = lambda metrics, step: None) -> TrainResult:
    """Train the base model; its checkpoint directory is `out_dir / "checkpoint"`."""
    return train_sft(base, cfg, synth_dir, out_dir, None, log, stage="pretrain")
