"""Seconds per Tree-RL reason step and reflect-refine step at params.yaml's `rl` settings (the SFT replay loss
included), split into sampling, reward and training, on an untrained default TinyConfig model (one CPU thread
unless --threads says otherwise).

An untrained model writes texts up to max_new_tokens long and almost never gives the stop answer, so every
refine child is edited: an upper bound on the time of a step of the real run.

    python bench/rl_step.py [--cycles 3] [--threads 1] [--params params.yaml]
Last line: one JSON object.
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from r3.config import BaseConfig
from r3.data.synth import SynthConfig, build_table, heldout_pool
from r3.data.table import Table
from r3.models.tiny import TinyConfig, TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.rewards.base import build_reward
from r3.params import read_params, section
from r3.rl.checkpoint import fresh_state
from r3.rl.config import RlConfig
from r3.rl.train import train_step
from r3.train.data import SynthSplit
from r3.world.vocabulary import vocabulary

PARTS = ("time/sample_s", "time/reward_s", "time/train_s", "time/step_s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=3, help="measured (reason, refine) cycles after a warm-up one")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--params", default="params.yaml", help="the rl section of this file is measured")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    base, cfg = BaseConfig(num_threads=args.threads), section(read_params(args.params), "rl", RlConfig, args.params)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synth = SynthConfig(train_per_tag=4, heldout_per_tag=1, train_pairs=64, candidates_per_tag=50)
        pool = heldout_pool(base, synth)
        for table in ("prompts", "enrichment", "editing", "reflection", "vqa", "ita"):  # the replay loss's tables
            build_table(table, "train", base, synth, pool, root / f"{table}.parquet")
        prompts, replay_data = Table.load(root / "prompts.parquet"), SynthSplit.load(root)
        torch.manual_seed(base.seed)
        TinyUnifiedModel(TinyConfig(canvas=base.canvas), build_tokenizer(vocabulary())).save_pretrained(root / "init")
        reference = TinyUnifiedModel.from_pretrained(root / "init").eval().requires_grad_(False)
        state = fresh_state(base, cfg, root / "init")
        reward = build_reward(cfg.reward)
        times: dict[str, list[dict[str, float]]] = {"reason": [], "refine": []}
        for cycle in range(args.cycles + 1):
            for kind in ("reason", "refine"):
                metrics = train_step(state, reference, reward, prompts, cfg, replay_data=replay_data)
                state.step += 1
                if cycle > 0:
                    times[kind].append(metrics)
                print(kind, {k: round(metrics[k], 3) for k in PARTS}, flush=True)
    result: dict[str, object] = {
        f"{kind}_{part.split('/')[1]}": round(float(np.mean([m[part] for m in runs])), 4)
        for kind, runs in times.items() for part in PARTS
    }
    result |= {"rollouts_per_step": cfg.group_size * cfg.prompts_per_step, "sample_steps": cfg.sample_steps,
               "cfg_scale": cfg.cfg_scale, "max_new_tokens": cfg.max_new_tokens, "replay_weight": cfg.replay_weight,
               "threads": args.threads,
               "cycles": args.cycles, "canvas": base.canvas}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
