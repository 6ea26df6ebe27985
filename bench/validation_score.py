"""A checkpoint's strict generation accuracy on the rl stage's validation rows (rl.validation_rows train rows that
RL never draws), the figure RL settings are chosen on; for the SFT checkpoint, the start every RL run's
`validation` is measured against.

    python bench/validation_score.py [--checkpoint data/sft/checkpoint] [--params params.yaml]

The last line printed is one JSON object.
"""

import argparse
import json

import torch

from r3 import paths
from r3.config import BaseConfig
from r3.data.table import Table
from r3.machine import machine_facts
from r3.models.registry import load_checkpoint
from r3.params import read_params, section
from r3.rl.config import RlConfig
from r3.rl.train import validate, validation_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(paths.SFT_CHECKPOINT))
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    raw = read_params(args.params)
    base, cfg = section(raw, "base", BaseConfig, args.params), section(raw, "rl", RlConfig, args.params)
    torch.set_num_threads(base.num_threads)
    _, validation = validation_split(Table.load(paths.SYNTH_TRAIN / "prompts.parquet"), cfg.validation_rows)
    result = validate(load_checkpoint(args.checkpoint), validation, cfg, base)
    print(json.dumps({"checkpoint": args.checkpoint, "rows": result["n"],
                      "strict": result["strict"]["overall"], "partial": result["partial"]["overall"],
                      "per_tag": result["strict"]["per_tag"], "machine": machine_facts()}))


if __name__ == "__main__":
    main()
