"""Tree-RL rollouts (docs/method.md): sample the groups of one step, score them, turn rewards into advantages.

A group is G samples that share one prompt (reason) or one buffer node (refine), one initial noise
and one SDE step index. Departures from the textbook, for CPU batching:
  * one SDE step index is drawn per training step and shared by every group of that step (a group
    still shares one index, as the method asks), so all images of a step sample in one batched call;
  * a refine step grows children from `nodes_per_step` buffer nodes at once (textbook: one node),
    each node being its own group;
  * children that give the stop answer are not edited at all (their image is the node's image), so
    only the other children are sampled; the image loss then covers exactly the unmasked children.
    When every child of a step stops, the first one is edited anyway as a placeholder with image mask 0
    (no loss, no gradient): every step then runs the image head in its loss, as the processes of a
    sharded (FSDP) launch must, each gathering the same blocks in the same order;
  * a reflection that is neither the stop answer nor a parseable instruction is not a stop: the image
    is edited with it as the instruction, and its text reward is 0 (f = 0).
Rollouts are sampled with the policy in its current state under no_grad; the loss (r3.rl.train)
recomputes log-probs with grad.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from r3.evals.heldout import to_uint8
from r3.models.interface import SamplingConfig, SdeTransitions, TextSample, TrainableUnifiedModel
from r3.rewards.base import Reward, score_with_components
from r3.rl.advantages import group_advantages
from r3.rl.buffer import Node
from r3.rl.schedule import StepKind
from r3.rl.stage_rewards import is_perfect, reason_rewards, refine_rewards
from r3.world.edits import STOP_ANSWER
from r3.world.layout import layout_satisfies, parse_layout
from r3.world.scene import COLORS, GRID, SHAPES, SIZES


@dataclass(frozen=True)
class RolloutSettings:
    """How one step's groups are sampled (the RL config's rollout fields, in model terms)."""

    group_size: int
    """G, samples per group."""
    text: SamplingConfig
    """Reasoning / reflection sampling (temperature, top-p, max_new_tokens)."""
    image: SamplingConfig
    """Image sampling without SDE steps; the step's stochastic index and eta are filled in per step."""
    eta_reason: float
    """SDE noise scale `a` of reason steps."""
    eta_refine: float
    """SDE noise scale `a` of refine steps."""
    normalize_std: bool
    """Divide advantages by the group's reward std."""
    reasoning_format: str = "parses"
    """What the reason step's format reward f checks: "parses" (textbook) or "satisfies"."""
    wrong_stop_delta: float = 0.0
    """Refine delta of a child that stops on an imperfect node (textbook: 0)."""
    refine_image_baseline: str = "group"
    """Baseline of refine image advantages: the whole group ("group", textbook) or the edited children only."""


@dataclass(frozen=True)
class Rollouts:
    """One training step's samples with their advantages: everything the policy loss needs."""

    kind: StepKind
    text: TextSample
    """B = groups * G sampled texts with behaviour log-probs."""
    text_advantages: Tensor
    """(B,) one advantage per text."""
    image: SdeTransitions
    """Recorded SDE step of the B_img generated images (refine: the children that did not stop, or a placeholder)."""
    image_advantages: Tensor
    """(B_img,) advantages of the generated images."""
    image_mask: Tensor
    """(B_img,) 1 for images that enter the image loss, 0 for a refine step's placeholder edit."""
    stats: dict[str, float]
    """Rewards and timings, namespaced metric keys."""


def image_sampling(settings: RolloutSettings, kind: StepKind, sde_index: int) -> SamplingConfig:
    eta = settings.eta_reason if kind == "reason" else settings.eta_refine
    return settings.image.model_copy(update={"sde_steps": (sde_index,), "eta_a": eta})


def group_noise(seeds: Sequence[int], group_size: int, canvas: int) -> Tensor:
    """(len(seeds) * G, 3, H, W): one starting noise per seed, repeated for the G members of its group."""
    noise = torch.stack([
        torch.randn(3, canvas, canvas, generator=torch.Generator().manual_seed(int(s))) for s in seeds
    ])  # (N, 3, H, W)
    return noise.repeat_interleave(group_size, dim=0)  # (N G, 3, H, W)


def repeat(items: Sequence[Any], times: int) -> list[Any]:
    """[a, b] -> [a] * times + [b] * times (group-major order, as repeat_interleave)."""
    return [item for item in items for _ in range(times)]


def score(reward: Reward, images: np.ndarray, records: list[dict], policy: TrainableUnifiedModel,
          reference: TrainableUnifiedModel) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(N,) alignment in [0, 1] and each component's (N,) scores; the models are the intrinsic reward's context."""
    if len(records) == 0:
        return np.zeros(0), {}
    total, components = score_with_components(reward, images, records, policy=policy, reference=reference)
    return np.clip(total, 0.0, 1.0), components


def component_stats(components: dict[str, np.ndarray]) -> dict[str, float]:
    return {f"reward/{name}": float(np.mean(values)) for name, values in components.items() if len(values)}


def reasoning_format_ok(texts: Sequence[str], records: Sequence[dict], canvas: int, mode: str) -> Tensor:
    """(B,) bool format reward of reasoning texts: the layout parses ("parses", textbook), or parses and
    satisfies its prompt ("satisfies": an exact ShapeWorld check, against layouts that drift off the prompt)."""
    if mode == "parses":
        return torch.tensor([parse_layout(z, canvas) is not None for z in texts])
    if mode == "satisfies":
        return torch.tensor([layout_satisfies(z, r, canvas) for z, r in zip(texts, records, strict=True)])
    raise ValueError(f"reasoning_format {mode!r}: expected 'parses' or 'satisfies'")


@torch.no_grad()
def reason_rollouts(policy: TrainableUnifiedModel, reference: TrainableUnifiedModel, reward: Reward,
                    records: list[dict],
                    settings: RolloutSettings, sde_index: int, seeds: Sequence[int],
                    generator: torch.Generator) -> tuple[Rollouts, list[Node]]:
    """G (reasoning, image) rollouts per prompt record; returns them and the buffer nodes they make.

    records: N prompt records; seeds: N seeds, one initial noise per group; sde_index: the step's SDE index.
    """
    g, canvas = settings.group_size, policy.config.canvas
    started = time.perf_counter()
    group_records = repeat(records, g)  # B = N G
    prompts = [str(r["prompt"]) for r in group_records]
    text = policy.reason(prompts, settings.text, generator)
    sampling = image_sampling(settings, "reason", sde_index)
    sample = policy.generate(prompts, text.texts, sampling, noise=group_noise(seeds, g, canvas), generator=generator)
    images = to_uint8(sample.images)  # (B, H, W, 3)
    sampled = time.perf_counter()
    alignment, components = score(reward, images, group_records, policy, reference)
    scored = time.perf_counter()

    format_ok = reasoning_format_ok(text.texts, group_records, canvas, settings.reasoning_format)  # (B,)
    r = torch.from_numpy(alignment).float()  # (B,)
    text_reward, image_reward = reason_rewards(format_ok, r)  # (B,), (B,)
    text_adv = group_advantages(text_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    image_adv = group_advantages(image_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    nodes = [
        Node(record=record, image=image, alignment=float(a), seed=int(seeds[i // g]), reasoning=z)
        for i, (record, image, a, z) in enumerate(zip(group_records, images, alignment, text.texts, strict=True))
    ]
    stats = {
        "reward/reason_mean": float(r.mean()),
        "reward/reason_text_mean": float(text_reward.mean()),
        "reward/reason_format": float(format_ok.float().mean()),
        "reward/reason_perfect": float(is_perfect(r).float().mean()),
        **component_stats(components),
        "rl/sde_index": float(sde_index),
        "time/sample_s": sampled - started,
        "time/reward_s": scored - sampled,
    }
    return Rollouts("reason", text, text_adv, sample.transitions, image_adv, torch.ones_like(image_adv), stats), nodes


def _is_cell(words: list[str]) -> bool:
    return len(words) == 2 and all(w.isdigit() and int(w) < GRID for w in words)


def _is_reference(words: list[str]) -> bool:
    """"[size] [colour] shape [at col row]", the object names of r3.world.edits.describe."""
    if len(words) >= 3 and words[-3] == "at":
        if not _is_cell(words[-2:]):
            return False
        words = words[:-3]
    if not words or words[-1] not in SHAPES:
        return False
    attributes = words[:-1]
    expected = [w for w in attributes if w in SIZES][:1] + [w for w in attributes if w in COLORS][:1]
    return attributes == expected


def reflection_parses(text: str) -> bool:
    """The reflection's format reward: the stop answer or one instruction in r3.world.edits' grammar.

    A grammar check only (no scene): whether the instruction names an object of the image is left to
    the alignment reward of the edited image.
    """
    words = text.split()
    if text.strip() == STOP_ANSWER:
        return True
    if len(words) == 8 and words[:2] == ["add", "a"] and words[5] == "at":
        return words[2] in SIZES and words[3] in COLORS and words[4] in SHAPES and _is_cell(words[6:])
    if len(words) >= 3 and words[:2] == ["remove", "the"]:
        return _is_reference(words[2:])
    if len(words) >= 4 and words[:2] == ["make", "the"]:
        return (words[-1] in COLORS or words[-1] in SIZES) and _is_reference(words[2:-1])
    if len(words) >= 6 and words[:2] == ["move", "the"] and words[-3] == "to":
        return _is_cell(words[-2:]) and _is_reference(words[2:-3])
    return False


@torch.no_grad()
def refine_rollouts(policy: TrainableUnifiedModel, reference: TrainableUnifiedModel, reward: Reward,
                    nodes: Sequence[Node],
                    settings: RolloutSettings, sde_index: int, seeds: Sequence[int],
                    generator: torch.Generator) -> Rollouts:
    """G (reflection, edited image) children per buffer node; a child that stops keeps the node's image."""
    g, canvas = settings.group_size, policy.config.canvas
    started = time.perf_counter()
    group_nodes = repeat(nodes, g)  # B = N G
    records = [node.record for node in group_nodes]
    pixels = torch.from_numpy(np.stack([node.image for node in group_nodes]))  # (B, H, W, 3) uint8
    sources = pixels.permute(0, 3, 1, 2).float() / 255  # (B, 3, H, W)
    text = policy.reflect(sources, [node.prompt for node in group_nodes], settings.text, generator)
    stopped = torch.tensor([z.strip() == STOP_ANSWER for z in text.texts])  # (B,)
    active = (~stopped).nonzero().flatten()  # (B_act,)
    edits = active if len(active) else torch.zeros(1, dtype=torch.long)  # (B_img,): the placeholder when none
    sampling = image_sampling(settings, "refine", sde_index)
    noise = group_noise(seeds, g, canvas)[edits]  # (B_img, 3, H, W)
    sample = policy.edit(sources[edits], [text.texts[i] for i in edits], sampling, noise=noise, generator=generator)
    edited = to_uint8(sample.images)[: len(active)]  # (B_act, H, W, 3)
    sampled = time.perf_counter()
    active_records = [records[i] for i in active]
    alignment, components = score(reward, edited, active_records, policy, reference)
    scored = time.perf_counter()

    r_old = torch.tensor([node.alignment for node in group_nodes])  # (B,)
    r_new = r_old.clone()  # stopped children keep the node's image, hence its alignment
    r_new[active] = torch.from_numpy(alignment).float()
    format_ok = torch.tensor([reflection_parses(z) for z in text.texts])  # (B,)
    # refine_rewards is elementwise, so the whole batch goes at once and is grouped afterwards
    text_reward, image_reward, _ = refine_rewards(format_ok, r_old, r_new, stopped, settings.wrong_stop_delta)  # (B,) each
    text_adv = group_advantages(text_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    members = (~stopped).view(-1, g) if settings.refine_image_baseline == "edited" else None  # (N, G)
    image_adv = group_advantages(image_reward.view(-1, g), settings.normalize_std, members=members).flatten()  # (B,)
    perfect = is_perfect(r_old)  # (B,)
    stats = {
        "reward/refine_mean": float(image_reward.mean()),
        "reward/refine_text_mean": float(text_reward.mean()),
        "reward/refine_delta": float((r_new - r_old).mean()),
        "reward/refine_node_mean": float(r_old.mean()),
        "reward/refine_format": float(format_ok.float().mean()),
        "rl/stop_rate": float(stopped.float().mean()),
        **component_stats(components),
        "rl/sde_index": float(sde_index),
        "time/sample_s": sampled - started,
        "time/reward_s": scored - sampled,
    }
    if bool(perfect.any()):
        stats["rl/stop_rate_on_perfect"] = float(stopped[perfect].float().mean())
    image_mask = torch.ones(len(edits)) if len(active) else torch.zeros(1)  # (B_img,)
    return Rollouts("refine", text, text_adv, sample.transitions, image_adv[edits], image_mask, stats)
