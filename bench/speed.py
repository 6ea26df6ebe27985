"""Side-by-side stage times of two commits on this machine: each commit is cloned, installed as the Quickstart
installs it (`make venv`), and its pipeline runs one `dvc repro STAGE` at a time, so each stage's wall time is
measured alone; then each stage's ratio (before / after) is printed. Machines differ ~30% in speed, so the ratio of
two commits timed on one machine is the only honest speed figure.

    python bench/speed.py REV_BEFORE REV_AFTER [--work /tmp/speed] [--stages synth sft rl evaluate]
    python bench/speed.py REV_BEFORE              # measure one side now, compare later

A commit whose clone under --work already holds a finished timing (`timing.json`, written last) is not rerun: the
before side of a series of comparisons is measured once. Run nothing else heavy meanwhile (two jobs on 2 cores
slow each other 10-20x). Each side also records its SFT held-out headline metrics and the machine. The last line
printed is one JSON object.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NoReturn

ROOT = Path(__file__).resolve().parent.parent
STAGES = ("synth", "sft", "rl", "evaluate")


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def resolve(rev: str) -> str:
    found = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=ROOT, capture_output=True,
                           text=True)
    if found.returncode != 0:
        fail(f"{rev}: not a commit of {ROOT}; give a commit, branch or tag")
    return found.stdout.strip()


def timed(command: list[str], cwd: Path, env: dict[str, str], what: str) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        fail(f"{what} in {cwd} failed (exit {done.returncode}): {(done.stderr.strip().splitlines() or [''])[-1]}")
    return time.perf_counter() - start


def machine_of(python: Path) -> dict[str, object]:
    """The CPU and torch of the clone's environment (the same facts the stages record)."""
    probe = ("import json, platform, torch; "
             "cpu = next((l.split(':', 1)[1].strip() for l in open('/proc/cpuinfo') if l.startswith('model name')), "
             "platform.processor()); "
             "print(json.dumps({'cpu': cpu, 'capability': torch.backends.cpu.get_cpu_capability(), "
             "'cores': __import__('os').cpu_count(), 'torch': torch.__version__}))")
    return json.loads(subprocess.run([str(python), "-c", probe], capture_output=True, text=True, check=True).stdout)


def measure(sha: str, clone: Path, stages: list[str]) -> dict[str, object]:
    """Clone, install and run `stages` one at a time in `clone`; reuse a finished earlier measurement."""
    record = clone / "timing.json"
    if record.exists():
        print(f"{sha[:7]}: reusing {record}", file=sys.stderr)
        return json.loads(record.read_text())
    if clone.exists():
        fail(f"{clone} exists without timing.json (an interrupted run): remove it and rerun")
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", sha], cwd=clone, check=True)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "VIRTUAL_ENV", "OMP_", "MKL_"))}
    env["PATH"] = os.pathsep.join([str(clone / ".venv" / "bin"), env.get("PATH", "")])
    seconds = {"install": timed(["make", "venv"], clone, env, "make venv")}
    for stage in stages:
        print(f"{sha[:7]}: dvc repro {stage} ...", file=sys.stderr, flush=True)
        seconds[stage] = timed(["dvc", "repro", stage], clone, env, f"dvc repro {stage}")
        print(f"{sha[:7]}: {stage} {seconds[stage]:.0f} s", file=sys.stderr, flush=True)
    sft = clone / "data" / "sft" / "metrics.json"
    result = {"commit": sha, "seconds": seconds, "machine": machine_of(clone / ".venv" / "bin" / "python"),
              "sft_headline": json.loads(sft.read_text())["headline"] if "sft" in stages else None}
    record.write_text(json.dumps(result, indent=1) + "\n")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before")
    parser.add_argument("after", nargs="?", help="omitted: measure `before` only (its timing is kept for later)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/speed"))
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    args = parser.parse_args()
    before_sha = resolve(args.before)
    after_sha = None if args.after is None else resolve(args.after)
    if before_sha == after_sha:
        fail(f"{args.before} and {args.after} are the same commit; give two")
    args.work.mkdir(parents=True, exist_ok=True)
    before = measure(before_sha, args.work / before_sha[:12], args.stages)
    if after_sha is None:
        print(json.dumps(before))
        return
    after = measure(after_sha, args.work / after_sha[:12], args.stages)
    if before["machine"] != after["machine"]:
        fail(f"the two sides ran on different machines ({before['machine']} vs {after['machine']}): "
             "rerun both on one machine")
    rows = {}
    for stage in ["install", *args.stages]:
        b, a = before["seconds"][stage], after["seconds"][stage]
        rows[stage] = {"before_s": round(b, 1), "after_s": round(a, 1), "ratio": round(b / a, 2)}
        print(f"{stage:>9}  {b:8.0f} s  {a:8.0f} s  x{b / a:.2f}")
    stages_before = sum(before["seconds"][s] for s in args.stages)
    stages_after = sum(after["seconds"][s] for s in args.stages)
    total_before = stages_before + before["seconds"]["install"]
    total_after = stages_after + after["seconds"]["install"]
    print(f"{'stages':>9}  {stages_before:8.0f} s  {stages_after:8.0f} s  x{stages_before / stages_after:.2f}")
    print(f"{'total':>9}  {total_before:8.0f} s  {total_after:8.0f} s  x{total_before / total_after:.2f}")
    print(json.dumps({"before": before_sha, "after": after_sha, "machine": after["machine"], "stages": rows,
                      "ratio_stages": round(stages_before / stages_after, 2),
                      "ratio_total": round(total_before / total_after, 2),
                      "sft_headline": {"before": before["sft_headline"], "after": after["sft_headline"]}}))


if __name__ == "__main__":
    main()
