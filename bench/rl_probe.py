"""Fast probe of Tree-RL's reason step: text GRPO on layouts alone (no images), minutes per run, to tune before the
stage.

Each update samples `--prompts` train prompts x `--group` layouts at temperature 1 from the current policy, rewards
each layout 1 if it is drawable and satisfies its prompt (r3.world.layout.layout_satisfies: the exact codec then
draws it as written, so this is the verifier's strict verdict on the image a faithful renderer draws) else 0,
drops groups whose rewards are all equal (rl.drop_equal_groups), and takes one AdamW step on the GRPO text loss
(PPO clip, k3 KL to the starting checkpoint) of r3.rl.objective. Every `--eval-every` updates it prints the share of
greedy held-out layouts that satisfy their prompt per suite (reasoning validity: GenEval++ / GenEval under an exact
renderer), on every held-out prompt. Defaults are params.yaml's `rl` section; flags override them.

    python bench/rl_probe.py --checkpoint data/sft/checkpoint [--updates 300] [--prompts 16] [--lr 5e-5] [--seed 0]
Last line: one JSON object (the curve).
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from r3.data.table import Table
from r3.evals.heldout import reasoning_validity
from r3.models.registry import load_checkpoint
from r3.params import read_params, section
from r3.rl.config import RlConfig
from r3.rl.objective import group_advantages, informative, text_policy_loss
from r3.rl.rollout import repeat, take_texts
from r3.world.layout import layout_satisfies


def heldout_validity(policy, enrichment: Table, canvas: int) -> dict[str, float]:
    policy.eval()
    overall = {}
    by_tag = reasoning_validity(policy, enrichment, canvas)["per_tag"]
    for suite in sorted({key.split("/")[0] for key in by_tag}):
        overall[suite] = float(np.mean([v for k, v in by_tag.items() if k.startswith(suite + "/")]))
    policy.train()
    return overall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("data/sft/checkpoint"))
    parser.add_argument("--synth", type=Path, default=Path("data/synth"))
    parser.add_argument("--params", default="params.yaml", help="its rl section gives the defaults")
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--prompts", type=int, help="prompts per update (default rl.prompts_per_step)")
    parser.add_argument("--group", type=int, help="layouts per prompt (default rl.group_size)")
    parser.add_argument("--lr", type=float, help="default rl.lr")
    parser.add_argument("--beta", type=float, help="k3 KL weight (default rl.beta_text)")
    parser.add_argument("--keep-equal", action="store_true", help="keep groups whose rewards are all equal")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    cfg = section(read_params(args.params), "rl", RlConfig, args.params)
    prompts_per_update, g = args.prompts or cfg.prompts_per_step, args.group or cfg.group_size
    lr, beta = args.lr or cfg.lr, cfg.beta_text if args.beta is None else args.beta
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng, generator = np.random.default_rng(args.seed), torch.Generator().manual_seed(args.seed)

    policy = load_checkpoint(args.checkpoint)
    reference = load_checkpoint(args.checkpoint).eval().requires_grad_(False)
    canvas = policy.config.canvas
    optimizer = torch.optim.AdamW(policy.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    train = Table.load(args.synth / "train" / "prompts.parquet")
    heldout = Table.load(args.synth / "heldout" / "enrichment.parquet")
    text_sampling = cfg.rollout_settings().text

    curve = [{"update": 0, **heldout_validity(policy, heldout, canvas)}]
    print(json.dumps(curve[-1]), flush=True)
    started, rewards = time.perf_counter(), []
    for update in range(1, args.updates + 1):
        records = repeat(train.records(rng.choice(len(train), prompts_per_update, replace=False)), g)  # B = N G
        policy.eval()
        with torch.no_grad():
            text = policy.reason([str(r["prompt"]) for r in records], text_sampling, generator)
        policy.train()
        reward = torch.tensor([float(layout_satisfies(z, r, canvas)) for z, r in zip(text.texts, records)])  # (B,)
        rewards.append(float(reward.mean()))
        kept = informative(reward.view(-1, g), not args.keep_equal)  # (B,)
        if kept.sum() == 0:
            continue
        rows = kept.nonzero().flatten()
        advantages = group_advantages(reward.view(-1, g)).flatten()[rows]  # (R,)
        kept_text = take_texts(text, rows)
        logp = policy.text_logprobs(kept_text.query, kept_text.token_ids, text.temperature)  # (R, T)
        with torch.no_grad():
            logp_ref = reference.text_logprobs(kept_text.query, kept_text.token_ids, text.temperature)  # (R, T)
        loss, _ = text_policy_loss(logp, kept_text.logprobs, logp_ref, kept_text.mask.float(), advantages,
                                   cfg.clip, beta)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.grad_clip)
        optimizer.step()
        if update % args.eval_every == 0 or update == args.updates:
            curve.append({"update": update, **heldout_validity(policy, heldout, canvas),
                          "train_reward": float(np.mean(rewards[-args.eval_every:])),
                          "seconds": round(time.perf_counter() - started, 1)})
            print(json.dumps(curve[-1]), flush=True)
    print(json.dumps({"prompts": prompts_per_update, "group": g, "lr": lr, "beta": beta, "seed": args.seed,
                      "drop_equal_groups": not args.keep_equal, "curve": curve}))


if __name__ == "__main__":
    main()
