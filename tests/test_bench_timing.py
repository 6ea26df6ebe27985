"""The timing tools: bench/stage_profile.py's accounting (each part's wall time and FLOPs exclude the parts nested
inside it; a matmul counts the textbook 2 m n k) and bench/speed.py's refusals."""

import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from stage_profile import PartClock  # noqa: E402


def test_nested_parts_are_exclusive_in_time_and_flops():
    counter = FlopCounterMode(display=False)
    clock = PartClock(counter.get_total_flops)
    a = torch.randn(64, 32)

    def inner() -> None:
        a @ torch.randn(32, 16)  # 2 * 64 * 32 * 16 FLOPs
        time.sleep(0.05)

    def outer() -> None:
        a @ torch.randn(32, 8)  # 2 * 64 * 32 * 8 FLOPs
        wrapped_inner()
        time.sleep(0.02)

    wrapped_inner, wrapped_outer = clock.wrap(inner, "inner"), clock.wrap(outer, "outer")
    with counter:
        wrapped_outer()
        wrapped_inner()
    assert clock.calls == {"outer": 1, "inner": 2}
    assert clock.work == {"outer": 2 * 64 * 32 * 8, "inner": 2 * 2 * 64 * 32 * 16}
    assert 0.1 <= clock.seconds["inner"] < 0.3
    assert 0.02 <= clock.seconds["outer"] < 0.05 + clock.seconds["inner"] / 2


def speed(*args: str, work: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "bench" / "speed.py"), *args, "--work", str(work)],
                          capture_output=True, text=True, cwd=ROOT)


def test_speed_refuses_an_unknown_commit_and_one_commit_twice(tmp_path):
    unknown = speed("no-such-rev", "HEAD", work=tmp_path / "work")
    assert unknown.returncode == 2 and unknown.stderr.strip().count("\n") == 0
    assert "no-such-rev: not a commit" in unknown.stderr and not (tmp_path / "work").exists()
    twice = speed("HEAD", "HEAD", work=tmp_path / "work")
    assert twice.returncode == 2 and "the same commit" in twice.stderr


def test_speed_refuses_an_interrupted_clone(tmp_path):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    (tmp_path / head[:12]).mkdir()  # a clone directory left without its timing.json
    interrupted = speed("HEAD", work=tmp_path)
    assert interrupted.returncode == 2 and "without timing.json" in interrupted.stderr
