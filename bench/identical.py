"""Whether two commits compute the same outputs: each is cloned, `dvc repro` runs on a short profile in the clone,
and every stage output is compared, byte for byte, as the clone's dvc.lock hashes it (metrics.json and the training
histories compared without their wall-clock fields). For restructurings that must not change a number.

    python bench/identical.py REV_BEFORE REV_AFTER [--profile updates] [--work /tmp/identical]

Profiles: `short` (a 30-step SFT from models/base and 6 Tree-RL steps at the default strict reward, most of which
skip for want of signal) and `updates` (80 SFT steps, 8 RL steps at the partial reward with every group kept, so
every RL step updates). Both run synth, sft, rl and evaluate in about 3 minutes on 2 cores. Compare on one machine:
runs are bit-identical on one CPU type only. The last line printed is one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import yaml

ROOT = Path(__file__).resolve().parent.parent
SHORT = {
    "base": {"experiment": "identical", "system_metrics": False},
    "synth": {"train_per_tag": 12, "heldout_per_tag": 3, "train_pairs": 64, "heldout_pairs_per_tag": 2,
              "candidates_per_tag": 60},
    "sft": {"steps": 30, "batch_size": 8, "eval_every": 15, "quick_eval_rows": 8, "log_every": 5,
            "sampling": {"steps": 4, "cfg_scale": 3.0}},
    "rl": {"steps": 6, "group_size": 4, "prompts_per_step": 3, "nodes_per_step": 3, "checkpoint_every": 2,
           "eval_every": 3, "eval_rows": 6, "validation_rows": 13, "replay_weight": 0.1, "max_new_tokens": 32,
           "eval_sampling": {"steps": 4, "cfg_scale": 3.0}},
    "evaluate": {"per_tag": 2, "max_rounds": 2, "grid_rows": 2,
                 "sampling": {"steps": 4, "cfg_scale": 3.0, "temperature": 0.0, "max_new_tokens": 32}},
}
PROFILES = {
    "short": SHORT,
    "updates": {**SHORT, "sft": {**SHORT["sft"], "steps": 80},
                "rl": {**SHORT["rl"], "steps": 8, "drop_equal_groups": False,
                       "reward": {"name": "verifier", "params": {"mode": "partial"}}}},
}
CLOCK_WORDS = ("seconds", "time/")
"""Keys holding wall-clock readings, which differ between any two runs."""


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def without_clock(tree: object) -> object:
    if isinstance(tree, dict):
        return {k: without_clock(v) for k, v in tree.items() if not any(w in k for w in CLOCK_WORDS)}
    return [without_clock(v) for v in tree] if isinstance(tree, list) else tree


def run(rev: str, clone: Path, profile: dict) -> dict[str, object]:
    """Clone `rev` into `clone`, `dvc repro` the profile there; every output's hash and the clock-free metrics."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    for section, values in profile.items():
        params[section] = {**params.get(section, {}), **values}
    (clone / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    repro = subprocess.run(["dvc", "repro"], check=False, cwd=clone, env=env, capture_output=True, text=True)
    if repro.returncode != 0:
        fail(f"dvc repro of {rev} in {clone} failed: {(repro.stderr.strip().splitlines() or [''])[-1]}")
    lock = yaml.safe_load((clone / "dvc.lock").read_text())
    outputs: dict[str, object] = {out["path"]: out["md5"] for stage in lock["stages"].values()
                                  for out in stage.get("outs", []) if not out["path"].endswith(".json")}
    for path in sorted(clone.glob("data/*/metrics.json")):
        outputs[str(path.relative_to(clone))] = without_clock(json.loads(path.read_text()))
    # the sft and rl runs' curves (and the rl resume checkpoint's copy), under cache keys that differ between commits
    outputs["histories"] = sorted(json.dumps([without_clock(json.loads(line)) for line in path.open()])
                                  for path in clone.glob(".prefect/artifacts/*/history.jsonl"))
    return outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="short")
    parser.add_argument("--work", type=Path, default=Path("/tmp/identical"))
    args = parser.parse_args()
    if args.work.exists() and any(args.work.iterdir()):
        fail(f"--work {args.work} is not empty: give an empty or new directory")
    before = run(args.before, args.work / "before", PROFILES[args.profile])
    after = run(args.after, args.work / "after", PROFILES[args.profile])
    differ = sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
    for key in differ:
        print(f"differs: {key}")
    print(json.dumps({"before": args.before, "after": args.after, "profile": args.profile, "compared": len(before),
                      "identical": not differ, "differ": differ}))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
