"""The Tree-RL trainer state (r3.rl.train) and its resume checkpoints.

Every `checkpoint_every` steps the whole trainer state (weights, optimizer, numpy / torch / python RNG states,
rollout buffer, step, history) is written to out_dir/resume/step-NNNNNN, built in a temporary directory and
renamed into place, so a killed run never leaves a half-written checkpoint. A new run with the same
configuration and SFT checkpoint continues from the latest one and ends with the same weights as an
uninterrupted run (same machine and thread count, float round-off aside).

Under several processes a resume checkpoint holds every process's random states and buffer (gathered to the
main process, which writes them) and belongs to one process count; every process reads it from out_dir, so
out_dir must be one directory they all see. Under FSDP it holds the whole (gathered) weights and optimizer state.
"""

import hashlib
import json
import logging
import random
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate.utils import gather_object
from torch import Tensor

from r3.config import BaseConfig
from r3.models.interface import TrainableUnifiedModel
from r3.models.registry import load_checkpoint
from r3.rl.rollout import RolloutBuffer
from r3.rl.config import RlConfig
from r3.train.distributed import Learner, rank_seed_words

log_ = logging.getLogger(__name__)

RESUME_DIR = "resume"
STEP_PREFIX = "step-"


@dataclass
class TrainerState:
    """Everything a step changes; saved and restored as a whole for exact resume."""

    step: int
    """Steps done."""
    policy: TrainableUnifiedModel
    optimizer: torch.optim.Optimizer
    rng: np.random.Generator
    """Prompt and node choice, SDE indices, noise seeds."""
    generator: torch.Generator
    """Text tokens and SDE noise of rollouts."""
    buffer: RolloutBuffer
    history: list[str]
    """The history.jsonl lines written so far."""
    ema: TrainableUnifiedModel | None = None
    """The moving average of the policy weights (main process, cfg.ema_decay > 0), else None."""


def make_optimizer(policy: TrainableUnifiedModel, cfg: RlConfig) -> torch.optim.AdamW:
    # foreach: one multi-tensor update instead of a Python loop over the parameters (torch's CPU default)
    return torch.optim.AdamW(policy.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                             foreach=True)


def fresh_state(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, rank: int = 0,
                device: torch.device | None = None) -> TrainerState:
    """Step 0 of process `rank`, the policy loaded from `init_checkpoint` onto `device`."""
    seed = cfg.rl_seed(base)
    torch.manual_seed(seed + rank)
    random.seed(seed + rank)
    policy = load_checkpoint(init_checkpoint).to(device)
    rng = np.random.default_rng(rank_seed_words([seed, 4], rank))
    generator = torch.Generator().manual_seed(seed + 4 + rank)
    return TrainerState(0, policy, make_optimizer(policy, cfg), rng, generator, RolloutBuffer(cfg.buffer_capacity), [])


# ----- resume checkpoints -----

def run_identity(base: BaseConfig, cfg: RlConfig, init_checkpoint: Path, processes: int) -> dict:
    """What a resume checkpoint must match: both configs, a digest of the SFT checkpoint's files and the number
    of processes (each has its own random streams and buffer)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in init_checkpoint.rglob("*") if p.is_file()):
        digest.update(path.relative_to(init_checkpoint).as_posix().encode())
        digest.update(path.read_bytes())
    return {"base": base.model_dump(mode="json"), "rl": cfg.model_dump(mode="json"), "init_sha256": digest.hexdigest(),
            "processes": processes}


def process_state(state: TrainerState) -> tuple[dict, dict[str, Tensor]]:
    """This process's own part of the trainer state, its random streams and rollout buffer: (JSON, tensors)."""
    fields, images = state.buffer.state()
    meta = {"numpy_rng": state.rng.bit_generator.state, "python_rng": random.getstate(), "buffer": fields}
    tensors = {
        "torch_rng": torch.get_rng_state(),
        "generator": state.generator.get_state(),
        "buffer_images": torch.from_numpy(images),
    }
    return meta, tensors


def restore_process_state(meta: dict, tensors: dict[str, Tensor],
                          cfg: RlConfig) -> tuple[np.random.Generator, torch.Generator, RolloutBuffer]:
    """Set this process's global random states from `process_state`'s output; its numpy rng, generator, buffer."""
    torch.set_rng_state(tensors["torch_rng"])
    generator = torch.Generator()
    generator.set_state(tensors["generator"])
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["numpy_rng"]
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    buffer = RolloutBuffer.restore(cfg.buffer_capacity, meta["buffer"], tensors["buffer_images"].numpy())
    return rng, generator, buffer


def save_resume(state: TrainerState, out_dir: Path, identity: dict, learner: Learner) -> Path | None:
    """Write the trainer state to out_dir/resume/step-NNNNNN atomically; drop older checkpoints. Every process
    calls it; the main process writes every process's part and returns the path, the others return None.
    The weights and optimizer state are whole under FSDP too (the learner's sampling copy, a gathered state)."""
    parts = gather_object([process_state(state)])  # in rank order
    optimizer = learner.optimizer_state_dict()
    if not learner.accelerator.is_main_process:
        return None
    resume = out_dir / RESUME_DIR
    resume.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=resume))
    learner.sampling_model.save_pretrained(tmp / "model")
    if state.ema is not None:
        state.ema.save_pretrained(tmp / "ema")
    torch.save({"optimizer": optimizer, "ranks": [tensors for _, tensors in parts]}, tmp / "state.pt")
    meta = {"step": state.step, "identity": identity, "ranks": [meta for meta, _ in parts]}
    (tmp / "state.json").write_text(json.dumps(meta))
    (tmp / "history.jsonl").write_text("".join(state.history))
    final = resume / f"{STEP_PREFIX}{state.step:06d}"
    tmp.rename(final)  # atomic: a reader sees no checkpoint or a complete one
    for old in resume.glob(f"{STEP_PREFIX}*"):
        if old != final:
            shutil.rmtree(old)
    return final


def latest_resume(out_dir: Path, identity: dict) -> Path | None:
    """The newest complete resume checkpoint of this run, or None (a stale one of another config is removed)."""
    resume = out_dir / RESUME_DIR
    for leftover in resume.glob(".tmp-*"):  # a write interrupted by a kill
        shutil.rmtree(leftover)
    checkpoints = sorted(resume.glob(f"{STEP_PREFIX}*"))
    if not checkpoints:
        return None
    latest = checkpoints[-1]
    if json.loads((latest / "state.json").read_text())["identity"] != identity:
        log_.warning("rl: %s holds a checkpoint of another configuration; starting afresh", resume)
        shutil.rmtree(resume)
        return None
    return latest


def load_resume(path: Path, cfg: RlConfig, expected_model: TrainableUnifiedModel, rank: int = 0,
                device: torch.device | None = None) -> TrainerState:
    """The trainer state of process `rank` saved at `path`, its policy on `device`."""
    policy = load_checkpoint(path / "model", expected=expected_model.config).to(device)
    optimizer = make_optimizer(policy, cfg)
    saved = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    meta = json.loads((path / "state.json").read_text())
    optimizer.load_state_dict(saved["optimizer"])
    rng, generator, buffer = restore_process_state(meta["ranks"][rank], saved["ranks"][rank], cfg)
    history = (path / "history.jsonl").read_text().splitlines(keepends=True)
    ema = None
    if rank == 0 and (path / "ema").is_dir():  # only the main process keeps the moving average
        ema = load_checkpoint(path / "ema").to(device).requires_grad_(False)
    return TrainerState(meta["step"], policy, optimizer, rng, generator, buffer, history, ema)
