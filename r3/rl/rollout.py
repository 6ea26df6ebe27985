"""Tree-RL rollouts (docs/method.md): the buffer of reason-step nodes, and the sampling of one step's groups,
scored and turned into advantages by r3.rl.objective's rewards.

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
recomputes log-probs with grad. Settings: r3.rl.config.RolloutSettings.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from r3.evals.heldout import seeded_noise, to_uint8
from r3.models.interface import ImageCondition, SamplingConfig, SdeTransitions, TextQuery, TextSample, TrainableUnifiedModel
from r3.rewards.base import Reward, score_with_components
from r3.rl.config import RolloutSettings
from r3.rl.objective import (StepKind, group_advantages, group_has_signal, informative, is_perfect,
                             permuted_within_groups, random_orders, reason_rewards, refine_rewards)
from r3.world.edits import STOP_ANSWER, reflection_parses
from r3.world.layout import layout_satisfies, parse_layout


@dataclass(frozen=True)
class Node:
    """One reason-step outcome: enough to score it again and to edit it."""

    record: Mapping[str, Any]
    """The prompt record (GenEval shape: tag, include, exclude?, prompt)."""
    image: np.ndarray
    """(H, W, 3) uint8, the image exactly as it was scored."""
    alignment: float
    """Its alignment reward r in [0, 1]."""
    seed: int
    """Seed of the rollout that produced it (initial noise and text sampling)."""
    reasoning: str = ""
    """The reasoning text the image was conditioned on (with seed and prompt: enough to regenerate it)."""

    def __post_init__(self) -> None:
        if "prompt" not in self.record:
            raise ValueError(f"Node: record has no 'prompt' key (keys: {sorted(self.record)})")
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[-1] != 3:
            raise ValueError(f"Node: image must be (H, W, 3) uint8, got {self.image.shape} {self.image.dtype}")
        if not 0.0 <= self.alignment <= 1.0:
            raise ValueError(f"Node: alignment must be in [0, 1], got {self.alignment}")

    @property
    def prompt(self) -> str:
        return str(self.record["prompt"])

    @property
    def perfect(self) -> bool:
        return bool(is_perfect(self.alignment))


class RolloutBuffer:
    """FIFO buffer of at most `capacity` nodes; the oldest node leaves first when full.

    Sampling does not remove a node: a node may be refined several times until it ages out.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"RolloutBuffer: capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._nodes: deque[Node] = deque(maxlen=capacity)

    def __len__(self) -> int:
        return len(self._nodes)

    def push(self, node: Node) -> None:
        self._nodes.append(node)

    def extend(self, nodes: Iterable[Node]) -> None:
        self._nodes.extend(nodes)

    def nodes(self) -> tuple[Node, ...]:
        """Every node, oldest first (the order in which they leave)."""
        return tuple(self._nodes)

    def state(self) -> tuple[list[dict[str, Any]], np.ndarray]:
        """The buffer as data: each node's fields but its image (JSON-able), oldest first, and the (N, H, W, 3)
        uint8 stack of their images. `RolloutBuffer.restore` rebuilds the same buffer from them."""
        nodes = self.nodes()
        fields = [{"record": n.record, "alignment": n.alignment, "seed": n.seed, "reasoning": n.reasoning}
                  for n in nodes]
        images = np.stack([n.image for n in nodes]) if nodes else np.zeros((0, 0, 0, 3), dtype=np.uint8)
        return fields, images

    @classmethod
    def restore(cls, capacity: int, fields: Sequence[Mapping[str, Any]], images: np.ndarray) -> RolloutBuffer:
        """The buffer whose `state()` was (fields, images)."""
        buffer = cls(capacity)
        buffer.extend(Node(f["record"], images[i], f["alignment"], f["seed"], f["reasoning"])
                      for i, f in enumerate(fields))
        return buffer

    def counts(self) -> tuple[int, int]:
        """(number of perfect nodes, number of imperfect nodes)."""
        perfect = sum(node.perfect for node in self._nodes)
        return perfect, len(self._nodes) - perfect

    def sample_node(self, rng: np.random.Generator, p_perfect: float = 0.15) -> Node:
        """With probability p_perfect a uniformly drawn node with r == 1, else one with r < 1.

        If the drawn side is empty we fall back to the other side rather than fail, so early
        in training (no perfect image yet) or late (all perfect) refinement still proceeds;
        the realised perfect fraction then differs from p_perfect.
        """
        if not 0.0 <= p_perfect <= 1.0:
            raise ValueError(f"sample_node: p_perfect must be in [0, 1], got {p_perfect}")
        if not self._nodes:
            raise ValueError("sample_node: the rollout buffer is empty; run a reason step first")
        perfect = [node for node in self._nodes if node.perfect]
        imperfect = [node for node in self._nodes if not node.perfect]
        side = perfect if rng.random() < p_perfect else imperfect
        pool = side or (imperfect if side is perfect else perfect)
        return pool[int(rng.integers(len(pool)))]


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
    """(B_img,) 1 for images that enter the image loss; 0 for a refine step's placeholder edit and, with
    drop_equal_groups, for images of groups whose image rewards are all equal."""
    text_mask: Tensor
    """(B,) 1 for texts that enter the text loss; 0, with drop_equal_groups, for texts of groups whose text rewards
    are all equal."""
    stats: dict[str, float]
    """Rewards and timings, namespaced metric keys."""
    informative_groups: int
    """Groups with any sample in the text or image loss (all of them without drop_equal_groups)."""


def loss_rows(mask: Tensor) -> Tensor:
    """(R,) int64 rows of a batch that enter the loss: where mask > 0, or row 0 alone (a placeholder the caller's
    all-zero mask keeps out of the loss) when none does, so every step runs the same blocks (FSDP)."""
    rows = (mask > 0).nonzero().flatten()
    return rows if len(rows) else torch.zeros(1, dtype=torch.long)


def take_texts(text: TextSample, rows: Tensor) -> TextSample:
    """The sampled texts at `rows` (R,), with their queries."""
    query = text.query
    images = None if query.images is None else query.images[rows]
    picked = TextQuery(query.task, [query.contexts[i] for i in rows], images)
    return replace(text, texts=[text.texts[i] for i in rows], token_ids=text.token_ids[rows],
                   logprobs=text.logprobs[rows], mask=text.mask[rows], query=picked)


def take_transitions(transitions: SdeTransitions, rows: Tensor) -> SdeTransitions:
    """The recorded SDE steps of the images at `rows` (R,), with their conditions."""
    steps, condition = transitions.steps, transitions.condition
    picked = ImageCondition([condition.prompts[i] for i in rows],
                            None if condition.reasoning is None else [condition.reasoning[i] for i in rows],
                            None if condition.sources is None else condition.sources[rows])
    return replace(transitions, condition=picked,
                   steps=replace(steps, x_t=steps.x_t[rows], x_next=steps.x_next[rows], logprob=steps.logprob[rows]))


def image_sampling(settings: RolloutSettings, kind: StepKind, sde_index: int) -> SamplingConfig:
    eta = settings.eta_reason if kind == "reason" else settings.eta_refine
    return settings.image.model_copy(update={"sde_steps": (sde_index,), "eta_a": eta})


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
    noise = seeded_noise(seeds, canvas).repeat_interleave(g, dim=0)  # (B, 3, H, W): one noise per group
    sample = policy.generate(prompts, text.texts, sampling, noise=noise, generator=generator)
    images = to_uint8(sample.images)  # (B, H, W, 3)
    sampled = time.perf_counter()
    alignment, components = score(reward, images, group_records, policy, reference)
    scored = time.perf_counter()

    format_ok = reasoning_format_ok(text.texts, group_records, canvas, settings.reasoning_format)  # (B,)
    r = torch.from_numpy(alignment).float()  # (B,)
    text_reward, image_reward = reason_rewards(format_ok, r)  # (B,), (B,)
    if settings.permute_rewards:
        text_reward, image_reward = _permuted(text_reward, image_reward, g, generator)
    text_adv = group_advantages(text_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    image_adv = group_advantages(image_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    text_mask = informative(text_reward.view(-1, g), settings.drop_equal_groups)  # (B,)
    image_mask = informative(image_reward.view(-1, g), settings.drop_equal_groups)  # (B,)
    nodes = [
        Node(record=record, image=image, alignment=float(a), seed=int(seeds[i // g]), reasoning=z)
        for i, (record, image, a, z) in enumerate(zip(group_records, images, alignment, text.texts, strict=True))
    ]
    stats = {
        "reward/reason_mean": float(r.mean()),
        "reward/reason_text_mean": float(text_reward.mean()),
        "reward/reason_format": float(format_ok.float().mean()),
        "reward/reason_perfect": float(is_perfect(r).float().mean()),
        "rl/text_groups_kept": float(text_mask.mean()),
        "rl/image_groups_kept": float(image_mask.mean()),
        **component_stats(components),
        "rl/sde_index": float(sde_index),
        "time/sample_s": sampled - started,
        "time/reward_s": scored - sampled,
    }
    kept = int(group_has_signal(text_mask, image_mask, g).sum())
    return Rollouts("reason", text, text_adv, sample.transitions, image_adv, image_mask, text_mask, stats, kept), nodes


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
    text = policy.reflect(sources, [node.prompt for node in group_nodes], settings.reflection, generator)
    stopped = torch.tensor([z.strip() == STOP_ANSWER for z in text.texts])  # (B,)
    active = (~stopped).nonzero().flatten()  # (B_act,)
    edits = active if len(active) else torch.zeros(1, dtype=torch.long)  # (B_img,): the placeholder when none
    sampling = image_sampling(settings, "refine", sde_index)
    noise = seeded_noise(seeds, canvas).repeat_interleave(g, dim=0)[edits]  # (B_img, 3, H, W)
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
    if settings.permute_rewards:
        text_reward, image_reward = _permuted(text_reward, image_reward, g, generator)
    text_adv = group_advantages(text_reward.view(-1, g), settings.normalize_std).flatten()  # (B,)
    members = (~stopped).view(-1, g) if settings.refine_image_baseline == "edited" else None  # (N, G)
    image_adv = group_advantages(image_reward.view(-1, g), settings.normalize_std, members=members).flatten()  # (B,)
    text_mask = informative(text_reward.view(-1, g), settings.drop_equal_groups)  # (B,)
    # (B,) a group's edited children enter the image loss when its image rewards differ
    image_kept = informative(image_reward.view(-1, g), settings.drop_equal_groups)
    perfect = is_perfect(r_old)  # (B,)
    stats = {
        "reward/refine_mean": float(image_reward.mean()),
        "reward/refine_text_mean": float(text_reward.mean()),
        "reward/refine_delta": float((r_new - r_old).mean()),
        "reward/refine_node_mean": float(r_old.mean()),
        "reward/refine_format": float(format_ok.float().mean()),
        "rl/stop_rate": float(stopped.float().mean()),
        "rl/text_groups_kept": float(text_mask.mean()),
        "rl/image_groups_kept": float(image_kept.mean()),
        **component_stats(components),
        "rl/sde_index": float(sde_index),
        "time/sample_s": sampled - started,
        "time/reward_s": scored - sampled,
    }
    if bool(perfect.any()):
        stats["rl/stop_rate_on_perfect"] = float(stopped[perfect].float().mean())
    image_mask = image_kept[edits] if len(active) else torch.zeros(1)  # (B_img,)
    kept = int(group_has_signal(text_mask, image_kept, g).sum())
    return Rollouts("refine", text, text_adv, sample.transitions, image_adv[edits], image_mask, text_mask, stats,
                    kept)


def _permuted(text_reward: Tensor, image_reward: Tensor, g: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(B,) text and image rewards, each group's handed out among its samples in one random order (null control)."""
    order = random_orders(len(text_reward) // g, g, generator)  # (N, G)
    return (permuted_within_groups(text_reward.view(-1, g), order).flatten(),
            permuted_within_groups(image_reward.view(-1, g), order).flatten())


# ----- several draws, one update -----

def _padded(x: Tensor, width: int) -> Tensor:
    """(B, T) -> (B, width), zero (False) after column T."""
    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def concat_texts(parts: Sequence[TextSample]) -> TextSample:
    """One TextSample holding every part's rows in order, token tensors padded to the longest part."""
    width = max(p.token_ids.shape[1] for p in parts)
    images = [p.query.images for p in parts]
    query = TextQuery(parts[0].query.task, [c for p in parts for c in p.query.contexts],
                      None if images[0] is None else torch.cat(images))
    return replace(parts[0], texts=[z for p in parts for z in p.texts],
                   token_ids=torch.cat([_padded(p.token_ids, width) for p in parts]),
                   logprobs=torch.cat([_padded(p.logprobs, width) for p in parts]),
                   mask=torch.cat([_padded(p.mask, width) for p in parts]), query=query)


def concat_transitions(parts: Sequence[SdeTransitions]) -> SdeTransitions:
    """One SdeTransitions holding every part's images in order; the parts share one schedule (the step's SDE
    index, eta and guidance), so their t / dt / index are the first part's."""
    conditions = [p.condition for p in parts]
    reasoning = None if conditions[0].reasoning is None else [z for c in conditions for z in c.reasoning or []]
    sources = None if conditions[0].sources is None else torch.cat([c.sources for c in conditions])
    condition = ImageCondition([x for c in conditions for x in c.prompts], reasoning, sources)
    steps = [p.steps for p in parts]
    return replace(parts[0], condition=condition, steps=replace(
        steps[0], x_t=torch.cat([s.x_t for s in steps]), x_next=torch.cat([s.x_next for s in steps]),
        logprob=torch.cat([s.logprob for s in steps])))


def concat_rollouts(parts: Sequence[Rollouts]) -> Rollouts:
    """The draws of one step as one batch for one update (dynamic sampling). Stats are each draw's mean, timings
    their sum; `rl/draws` and `rl/groups_informative` say how many draws it took and how many groups they kept."""
    if len(parts) == 1:
        only = parts[0]
        return replace(only, stats={**only.stats, "rl/draws": 1.0,
                                    "rl/groups_informative": float(only.informative_groups)})
    stats: dict[str, float] = {}
    for key in dict.fromkeys(k for p in parts for k in p.stats):
        values = [p.stats[key] for p in parts if key in p.stats]
        stats[key] = float(np.sum(values) if key.startswith("time/") else np.mean(values))
    kept = sum(p.informative_groups for p in parts)
    stats |= {"rl/draws": float(len(parts)), "rl/groups_informative": float(kept)}
    return Rollouts(
        parts[0].kind, concat_texts([p.text for p in parts]), torch.cat([p.text_advantages for p in parts]),
        concat_transitions([p.image for p in parts]), torch.cat([p.image_advantages for p in parts]),
        torch.cat([p.image_mask for p in parts]), torch.cat([p.text_mask for p in parts]), stats, kept,
    )
