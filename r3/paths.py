"""Where every stage reads and writes, relative to the project root (one source of truth)."""

from pathlib import Path

DATA = Path("data")

SYNTH = DATA / "synth"
SYNTH_TRAIN = SYNTH / "train"
SYNTH_HELDOUT = SYNTH / "heldout"
SYNTH_SAMPLES = SYNTH / "samples"
SYNTH_TIIF = SYNTH / "tiif"
"""The TIIF suite: train.jsonl and heldout.jsonl in TIIF-Bench's format (r3.data.tiif_suite)."""
SYNTH_CARD = SYNTH / "DATA_CARD.md"
SYNTH_METRICS = SYNTH / "metrics.json"

MODELS = Path("models")
BASE_MODEL = MODELS / "base"
"""The shipped pretrained base model (committed to git: DVC tracks it with cache: false)."""
BASE_METRICS = BASE_MODEL / "metrics.json"
BASE_CARD = BASE_MODEL / "MODEL_CARD.md"

SFT = DATA / "sft"
SFT_CHECKPOINT = SFT / "checkpoint"
SFT_SAMPLES = SFT / "samples"
SFT_METRICS = SFT / "metrics.json"

RL = DATA / "rl"
RL_CHECKPOINT = RL / "checkpoint"
RL_SAMPLES = RL / "samples"
RL_METRICS = RL / "metrics.json"

EVALUATE = DATA / "evaluate"
EVALUATE_METRICS = EVALUATE / "metrics.json"
EVALUATE_REPORT = EVALUATE / "report.md"
EVALUATE_FIGURES = EVALUATE / "figures"
EVALUATE_SCALING = EVALUATE / "plots" / "scaling.csv"
EVALUATE_TAGS = EVALUATE / "plots" / "tags.csv"
EVALUATE_COMPUTE = EVALUATE / "plots" / "compute.csv"
