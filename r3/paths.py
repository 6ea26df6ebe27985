"""Where every stage reads and writes, relative to the project root (one source of truth)."""

from pathlib import Path

DATA = Path("data")

SYNTH = DATA / "synth"
SYNTH_TRAIN = SYNTH / "train"
SYNTH_HELDOUT = SYNTH / "heldout"
SYNTH_SAMPLES = SYNTH / "samples"
SYNTH_CARD = SYNTH / "DATA_CARD.md"
SYNTH_METRICS = SYNTH / "metrics.json"

SFT = DATA / "sft"
SFT_CHECKPOINT = SFT / "checkpoint"
SFT_SAMPLES = SFT / "samples"
SFT_METRICS = SFT / "metrics.json"
