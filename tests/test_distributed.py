"""Multi-process training: two CPU processes (DDP over gloo) end with identical weights although each trains on
its own data, only the main process writes, and launches that would not train correctly refuse to start."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from r3.models.registry import load_checkpoint
from r3.rl.train import load_resume
from r3.train.distributed import FSDP_MISSING, make_accelerator
from test_rl_train import build_inputs, rl_config
from test_sft_stage import synth_dir  # noqa: F401  (the SFT tests' synth tables fixture)

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent

# Both stages in one launch (starting the processes costs most of the time). Each process records the model its
# loss function trains and every step's loss, so that the tests can compare the replicas and see that the
# processes trained on different data. The stages write into out/<stage>-rank<r> (out/rl-resumed: an RL run
# stopped on every process right after its step-2 resume checkpoint, then run again).
LAUNCHED = """
import os, sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
import r3.rl.train as rl
import r3.train.sft as sft
from test_rl_train import BASE as RL_BASE, register_test_reward, rl_config
from test_sft_stage import BASE as SFT_BASE, TINY_SFT

def recording(loss_fn, seen):
    def record(model, *args):
        seen["model"] = model
        loss, aux = loss_fn(model, *args)
        seen["losses"].append(loss.item())
        return loss, aux
    return record

class Interrupted(Exception):
    pass

def interrupted_after_step_2(save_resume):
    def save(state, *args):
        path = save_resume(state, *args)
        if state.step == 2:
            raise Interrupted
        return path
    return save

seen = {{"sft": {{"losses": []}}, "rl": {{"losses": []}}}}
sft.step_losses = recording(sft.step_losses, seen["sft"])
rl.policy_loss = recording(rl.policy_loss, seen["rl"])
register_test_reward()
rank, out = int(os.environ["RANK"]), Path({out!r})
sft_cfg = TINY_SFT.model_copy(update={{"ema_decay": 0.0}})  # the checkpoint holds the trained weights
sft.train_sft(SFT_BASE, sft_cfg, Path({sft_synth!r}), out / f"sft-rank{{rank}}")
rl_run = lambda out_dir: rl.train_rl(RL_BASE, rl_config(steps=4, checkpoint_every=2), Path({init!r}),
                                     Path({rl_synth!r}), out_dir)
rl_run(out / f"rl-rank{{rank}}")
replica = {{stage: {{"weights": s["model"].state_dict(), "losses": s["losses"]}} for stage, s in seen.items()}}
seen["rl"]["losses"] = []
save_resume = rl.save_resume
rl.save_resume = interrupted_after_step_2(save_resume)
try:
    rl_run(out / "rl-resumed")
except Interrupted:
    rl.save_resume = save_resume
    rl_run(out / "rl-resumed")
replica["rl-resumed"] = {{"losses": seen["rl"]["losses"]}}
torch.save(replica, out / f"replica{{rank}}.pt")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two(script: str, out: Path) -> None:
    """Run `script` (written to `out`) in two CPU processes with the project's DDP launch config."""
    path = out / "launched.py"
    path.write_text(script)
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / "ddp.yaml"),
               "--num_processes", "2", "--main_process_port", str(free_port()), str(path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=out, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]


@pytest.fixture(scope="module")
def launched(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    """Out dir of one two-process launch of a tiny SFT run, then 4-step RL runs (reason, refine, reason, refine)."""
    out = tmp_path_factory.mktemp("launched")
    init, rl_synth = build_inputs(out / "rl-inputs")
    launch_two(LAUNCHED.format(tests=str(TESTS), out=str(out), sft_synth=str(synth_dir), init=str(init),
                               rl_synth=str(rl_synth)), out)
    return out


def replicas(out: Path, stage: str) -> list[dict]:
    return [torch.load(out / f"replica{rank}.pt", weights_only=True)[stage] for rank in range(2)]


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=0, msg=name)


def test_two_process_sft_keeps_replicas_identical_and_only_rank0_writes(launched: Path) -> None:
    rank0, rank1 = replicas(launched, "sft")
    assert len(rank0["losses"]) == len(rank1["losses"]) == 4
    assert rank0["losses"] != rank1["losses"]  # each process drew its own batches
    assert_same_weights(rank0["weights"], rank1["weights"])  # ... and their gradients were averaged
    assert_same_weights(load_file(launched / "sft-rank0" / "checkpoint" / "model.safetensors"), rank0["weights"])
    assert {p.name for p in (launched / "sft-rank0").iterdir()} == {"checkpoint", "history.jsonl", "metrics.json",
                                                                    "samples"}
    assert not (launched / "sft-rank1").exists()


def test_two_process_rl_keeps_replicas_identical_and_resumes_each_process_state(launched: Path) -> None:
    rank0, rank1 = replicas(launched, "rl")
    assert len(rank0["losses"]) == len(rank1["losses"]) == 4
    assert rank0["losses"] != rank1["losses"]  # each process sampled its own rollouts
    assert_same_weights(rank0["weights"], rank1["weights"])
    assert (launched / "rl-rank0" / "checkpoint").is_dir() and not (launched / "rl-rank1").exists()

    # stopped after step 2 and resumed (steps 2 and 3 trained once more, not from scratch): each process
    # sampled what it sampled in the uninterrupted run, which ends with the same weights and history
    resumed_losses = [replica["losses"] for replica in replicas(launched, "rl-resumed")]
    assert resumed_losses == [pytest.approx(rank0["losses"], rel=1e-5), pytest.approx(rank1["losses"], rel=1e-5)]
    straight, resumed = launched / "rl-rank0", launched / "rl-resumed"
    expected = load_file(straight / "checkpoint" / "model.safetensors")
    got = load_file(resumed / "checkpoint" / "model.safetensors")
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-5, msg=name)
    steps = [[json.loads(line)["step"] for line in (d / "history.jsonl").open()] for d in (straight, resumed)]
    assert steps[0] == steps[1]

    [checkpoint] = (resumed / "resume").iterdir()
    assert checkpoint.name == "step-000004"
    assert json.loads((checkpoint / "state.json").read_text())["identity"]["processes"] == 2
    init = load_checkpoint(launched / "rl-inputs" / "sft")
    states = [load_resume(checkpoint, rl_config(), init, rank) for rank in range(2)]
    assert all(state.step == 4 for state in states)
    assert_same_weights(states[0].policy.state_dict(), states[1].policy.state_dict())
    # each process has its own random streams and rollout buffer
    assert states[0].rng.bit_generator.state != states[1].rng.bit_generator.state
    assert not torch.equal(states[0].generator.get_state(), states[1].generator.get_state())
    prompts = [[node.prompt for node in state.buffer._nodes] for state in states]
    assert len(prompts[0]) == len(prompts[1]) > 0
    assert prompts[0] != prompts[1]


def test_fsdp_launch_and_unjoined_processes_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(NotImplementedError, match="FSDP launches are not supported"):
        make_accelerator()
    assert "\n" not in FSDP_MISSING
    monkeypatch.delenv("ACCELERATE_USE_FSDP")
    monkeypatch.setenv("WORLD_SIZE", "2")  # two processes started, but no process group joins them
    with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=true"):
        make_accelerator()
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert make_accelerator().num_processes == 1
