"""Multi-process training: two CPU processes (DDP over gloo) end with identical weights although each trains on
its own data, only the main process writes, and launches that would not train correctly refuse to start. The same
runs launched with the FSDP config really shard the weights and end where the DDP runs end."""

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
from r3.models.tiny import TinyUnifiedModel
from r3.models.tokenizer import build_tokenizer
from r3.rl.checkpoint import load_resume
from r3.train.distributed import block_modules, fsdp_settings, make_accelerator
from r3.world.vocabulary import vocabulary
from test_rl_train import build_inputs, rl_config
from test_sft_stage import MODEL
from test_sft_stage import synth_dir  # noqa: F401  (the SFT tests' synth tables fixture)

ROOT = Path(__file__).parents[1]
TESTS = Path(__file__).parent
# FSDP against DDP on the same data per process: the first forward is identical, later ones differ by round-off
# only (FSDP reduce-scatters a block's gradient once per use in a step and adds the parts on its shard, and sums
# the clip norm shard by shard): at most 4.4e-7 after these 4 steps. An AdamW step moves a weight by up to its lr
# (1e-3, 2e-3), so a gradient that is wrong in direction would show far above this; one wrong only in scale
# (summed, not averaged) shows in the optimizer's moments, compared too.
ATOL = 1e-5

# Both stages in one launch (starting the processes costs most of the time). Each process records the model its
# loss function trains and every step's loss, so that the tests can compare the replicas and see that the
# processes trained on different data, and the SFT model's initial weights and its weights at each EMA update, so
# that they can recompute the EMA the checkpoint holds. Under FSDP the recorded weights are gathered, and each
# parameter's local shard shape is kept. The stages write into out/<stage>-rank<r> (out/rl-resumed: an RL run
# stopped on every process right after its step-2 resume checkpoint, then run again).
LAUNCHED = """
import os, sys, torch
from pathlib import Path
from torch.distributed.tensor import DTensor
sys.path.insert(0, {tests!r})
import r3.rl.train as rl
import r3.train.sft as sft
from test_rl_train import BASE as RL_BASE, register_test_reward, rl_config
from test_sft_stage import BASE as SFT_BASE, TINY_SFT

def whole(model):
    state = model.state_dict()
    return {{k: v.full_tensor() if isinstance(v, DTensor) else v.clone() for k, v in state.items()}}  # all gather

def recording(loss_fn, seen):
    def record(model, *args):
        seen["model"] = model
        loss, aux = loss_fn(model, *args)
        seen["losses"].append(loss.item())
        return loss, aux
    return record

def recording_initial(build_model, seen):
    def build(cfg):
        model = build_model(cfg)
        seen["initial"] = whole(model)
        return model
    return build

def recording_updates(ema_update, seen):
    def update(ema, model, step, decay):
        seen["updates"].append(whole(model))
        ema_update(ema, model, step, decay)
    return update

class Interrupted(Exception):
    pass

def interrupted_after_step_2(save_resume):
    def save(state, *args):
        path = save_resume(state, *args)
        if state.step == 2:
            raise Interrupted
        return path
    return save

seen = {{"sft": {{"losses": [], "updates": []}}, "rl": {{"losses": []}}}}
sft.step_losses = recording(sft.step_losses, seen["sft"])
sft.build_model = recording_initial(sft.build_model, seen["sft"])
sft.ema_update = recording_updates(sft.ema_update, seen["sft"])
rl.policy_loss = recording(rl.policy_loss, seen["rl"])
register_test_reward()
rank, out = int(os.environ["RANK"]), Path({out!r})
sft_cfg = TINY_SFT.model_copy(update={{"ema_decay": 0.5}})
sft.train_sft(SFT_BASE, sft_cfg, Path({sft_synth!r}), out / f"sft-rank{{rank}}")
rl_run = lambda out_dir: rl.train_rl(RL_BASE, rl_config(steps=4, checkpoint_every=2), Path({init!r}),
                                     Path({rl_synth!r}), out_dir)
rl_run(out / f"rl-rank{{rank}}")
def recorded(stage):
    model = seen[stage].pop("model")
    shards = {{k: tuple(v.to_local().shape) for k, v in model.state_dict().items() if isinstance(v, DTensor)}}
    return {{**seen[stage], "weights": whole(model), "shards": shards}}

replica = {{stage: recorded(stage) for stage in seen}}
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


def launch_two(script: str, out: Path, config: str) -> None:
    """Run `script` (written to `out`) in two CPU processes with the project's launch config `config` (in fp32:
    bf16, fsdp.yaml's setting for GPUs, would only slow the CPU down)."""
    path = out / "launched.py"
    path.write_text(script)
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--config_file", str(ROOT / "configs" / "accelerate" / config),
               "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(free_port()), str(path)]
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(command, env=env, cwd=out, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-4000:]


def launch_stages(out: Path, sft_synth: Path, config: str) -> Path:
    """Out dir of one two-process launch of a tiny SFT run, then 4-step RL runs (reason, refine, reason, refine)."""
    init, rl_synth = build_inputs(out / "rl-inputs")
    launch_two(LAUNCHED.format(tests=str(TESTS), out=str(out), sft_synth=str(sft_synth), init=str(init),
                               rl_synth=str(rl_synth)), out, config)
    return out


@pytest.fixture(scope="module")
def launched(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return launch_stages(tmp_path_factory.mktemp("launched"), synth_dir, "ddp.yaml")


@pytest.fixture(scope="module")
def launched_fsdp(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:  # noqa: F811
    return launch_stages(tmp_path_factory.mktemp("launched_fsdp"), synth_dir, "fsdp.yaml")


def replicas(out: Path, stage: str) -> list[dict]:
    return [torch.load(out / f"replica{rank}.pt", weights_only=True)[stage] for rank in range(2)]


def assert_same_weights(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert first.keys() == second.keys()
    for name in first:
        torch.testing.assert_close(first[name], second[name], rtol=0, atol=atol, msg=name)


def ema_of(initial: dict[str, torch.Tensor], updates: list[dict[str, torch.Tensor]], decay: float) -> dict:
    """The EMA of r3.train.sft.ema_update, recomputed from the initial weights and those after each step."""
    ema = dict(initial)
    for step, weights in enumerate(updates):
        d = min(decay, (1 + step) / (10 + step))
        ema = {name: torch.lerp(ema[name], weights[name], 1 - d) for name in ema}
    return ema


def test_two_process_sft_keeps_replicas_identical_and_only_rank0_writes(launched: Path) -> None:
    rank0, rank1 = replicas(launched, "sft")
    assert len(rank0["losses"]) == len(rank1["losses"]) == 4
    assert rank0["losses"] != rank1["losses"]  # each process drew its own batches
    assert_same_weights(rank0["weights"], rank1["weights"])  # ... and their gradients were averaged
    assert len(rank0["updates"]) == 4 and not rank1["updates"]  # only the main process keeps the EMA
    assert_same_weights(rank0["updates"][-1], rank0["weights"])
    checkpoint = load_file(launched / "sft-rank0" / "checkpoint" / "model.safetensors")
    assert_same_weights(checkpoint, ema_of(rank0["initial"], rank0["updates"], 0.5))
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
    prompts = [[node.prompt for node in state.buffer.nodes()] for state in states]
    assert len(prompts[0]) == len(prompts[1]) > 0
    assert prompts[0] != prompts[1]


def assert_sharded(ranks: list[dict]) -> None:
    """Each process held a slice of every parameter along its first dimension, the two slices making it whole."""
    parameters = {name for name, _ in TinyUnifiedModel(MODEL, build_tokenizer(vocabulary())).named_parameters()}
    assert ranks[0]["shards"].keys() == ranks[1]["shards"].keys() == parameters
    for name in parameters:
        full = tuple(ranks[0]["weights"][name].shape)
        local = [rank["shards"][name] for rank in ranks]
        assert all(shape[1:] == full[1:] for shape in local), name
        assert sum(shape[0] for shape in local) == full[0] and max(shape[0] for shape in local) < full[0], name


def test_fsdp_sft_shards_the_weights_and_its_ema_and_ends_where_ddp_ends(launched: Path, launched_fsdp: Path) -> None:
    ddp, fsdp = replicas(launched, "sft"), replicas(launched_fsdp, "sft")
    assert_sharded(fsdp)
    for rank in range(2):  # each process drew the batches it drew under DDP
        assert fsdp[rank]["losses"] == pytest.approx(ddp[rank]["losses"], rel=1e-5)
    assert_same_weights(fsdp[0]["weights"], ddp[0]["weights"], atol=ATOL)
    # every process kept (its shard of) the EMA, rank 0 saved it whole
    assert len(fsdp[0]["updates"]) == len(fsdp[1]["updates"]) == 4
    checkpoint = load_file(launched_fsdp / "sft-rank0" / "checkpoint" / "model.safetensors")
    assert_same_weights(checkpoint, ema_of(fsdp[0]["initial"], fsdp[0]["updates"], 0.5))
    assert_same_weights(checkpoint, load_file(launched / "sft-rank0" / "checkpoint" / "model.safetensors"), atol=ATOL)
    assert {p.name for p in (launched_fsdp / "sft-rank0").iterdir()} == {"checkpoint", "history.jsonl",
                                                                         "metrics.json", "samples"}
    assert not (launched_fsdp / "sft-rank1").exists()


def test_fsdp_rl_shards_the_policy_ends_where_ddp_ends_and_resumes(launched: Path, launched_fsdp: Path) -> None:
    ddp, fsdp = replicas(launched, "rl"), replicas(launched_fsdp, "rl")
    assert_sharded(fsdp)
    for rank in range(2):  # each process sampled (from its whole copy of the policy) what it sampled under DDP
        # a loss near 1e-7 (a KL term) differs by float rounding (~1e-11) across the two wrappings
        assert fsdp[rank]["losses"] == pytest.approx(ddp[rank]["losses"], rel=1e-5, abs=1e-10)
    assert_same_weights(fsdp[0]["weights"], ddp[0]["weights"], atol=ATOL)
    straight, resumed = launched_fsdp / "rl-rank0", launched_fsdp / "rl-resumed"
    assert_same_weights(load_file(straight / "checkpoint" / "model.safetensors"), fsdp[0]["weights"])
    assert not (launched_fsdp / "rl-rank1").exists()

    # stopped after step 2 and resumed from whole weights and optimizer state: ends where the straight run ends
    resumed_losses = [replica["losses"] for replica in replicas(launched_fsdp, "rl-resumed")]
    assert resumed_losses == [pytest.approx(fsdp[0]["losses"], rel=1e-5), pytest.approx(fsdp[1]["losses"], rel=1e-5)]
    assert_same_weights(load_file(resumed / "checkpoint" / "model.safetensors"), fsdp[0]["weights"], atol=1e-5)
    # the resume checkpoint's optimizer state is whole, the state a DDP run has at the same step
    [fsdp_state, ddp_state] = [torch.load(run / "rl-resumed" / "resume" / "step-000004" / "state.pt",
                                          weights_only=True)["optimizer"] for run in (launched_fsdp, launched)]
    assert fsdp_state["state"].keys() == ddp_state["state"].keys()
    for index, entry in ddp_state["state"].items():
        for key, value in entry.items():
            torch.testing.assert_close(fsdp_state["state"][index][key], value, rtol=0, atol=ATOL, msg=f"{index} {key}")


def test_unjoined_processes_and_unimplemented_fsdp_options_refuse_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    for fsdp in ("false", "true"):
        monkeypatch.setenv("ACCELERATE_USE_FSDP", fsdp)
        monkeypatch.setenv("WORLD_SIZE", "2")  # two processes started, but no process group joins them
        with pytest.raises(RuntimeError, match="ACCELERATE_USE_CPU=true"):
            make_accelerator()
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "true")
    with pytest.raises(NotImplementedError, match="fsdp_offload_params: true is not implemented"):
        make_accelerator()
    monkeypatch.setenv("FSDP_OFFLOAD_PARAMS", "false")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert make_accelerator().num_processes == 1


def test_fsdp_units_are_the_named_block_classes_or_the_declared_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    assert fsdp_settings() is None  # not an FSDP launch
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_TRANSFORMER_CLS_TO_WRAP", "LlamaDecoderLayer, JointTransformerBlock")
    monkeypatch.setenv("FSDP_RESHARD_AFTER_FORWARD", "false")
    settings = fsdp_settings()
    assert settings is not None and not settings.reshard_after_forward
    model = TinyUnifiedModel(MODEL.model_copy(update={"lm_layers": 2, "head_layers": 3}), build_tokenizer(vocabulary()))
    named = block_modules(model, settings.block_classes)
    assert [type(m).__name__ for m in named] == ["LlamaDecoderLayer"] * 2 + ["JointTransformerBlock"] * 3
    assert block_modules(model, ()) == named  # what transformers / diffusers declare as their blocks
    with pytest.raises(ValueError, match="Qwen2_5_VLDecoderLayer"):
        block_modules(model, ("LlamaDecoderLayer", "Qwen2_5_VLDecoderLayer"))
