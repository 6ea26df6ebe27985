"""The `rl` section of params.yaml: every setting of the Tree-RL stage (r3.rl.train), and the rollout settings
r3.rl.rollout reads from it. The defaults are the values params.yaml holds (a test compares them); docs/method.md
gives the textbook value of each departure and why."""

from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from r3.config import BaseConfig, Config
from r3.models.interface import HELDOUT_SAMPLING, SamplingConfig
from r3.rewards.base import RewardConfig
from r3.train.data import SftTask


@dataclass(frozen=True)
class RolloutSettings:
    """How one step's groups are sampled (the RL config's rollout fields, in model terms)."""

    group_size: int
    """G, samples per group."""
    text: SamplingConfig
    """Reasoning sampling (temperature, top-p, max_new_tokens)."""
    reflection: SamplingConfig
    """Reflection sampling."""
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
    drop_equal_groups: bool = False
    """Leave groups whose rewards are all equal (zero advantages) out of the loss (textbook: keep them)."""
    permute_rewards: bool = False
    """Null control: hand each group's rewards out among its samples in a random order before advantages."""


TIIF_REWARDS = ("tiif",)
"""Rewards that score TIIF prompt records only (rl.prompts: tiif)."""

GENEVAL_REWARDS = ("verifier", "none")
"""Rewards that score GenEval records only (the verifier; `none` logs the verifier's score)."""


def reward_names(reward: RewardConfig) -> list[str]:
    """The reward's name, or for `weighted` its components' names (recursively)."""
    return [name for c in reward.components for name in reward_names(c)] if reward.components else [reward.name]


class RlConfig(Config):
    """The `rl` section of params.yaml."""

    steps: int = Field(200, ge=1)
    """Training steps (reason and refine steps together)."""
    seed: int | None = None
    """Seed of the stage's random streams (prompt and node draws, rollout noise); null = base.seed. Held-out checks
    keep base.seed's noise, so RL seeds from one SFT checkpoint differ only in training
    (`dvc exp run -S rl.seed=1` reruns rl and evaluate only)."""
    group_size: int = Field(8, ge=2)
    """G: samples per group (one prompt or node, one noise, one SDE step index)."""
    prompts_per_step: int = Field(16, ge=1)
    """Groups (train prompts) per reason step."""
    nodes_per_step: int = Field(16, ge=1)
    """Groups (buffer nodes) per reflect-refine step."""
    reason_steps: int = Field(1, ge=1)
    """Reason steps per cycle."""
    refine_steps: int = Field(1, ge=0)
    """Reflect-refine steps per cycle; 0 is the reason-only ablation."""
    p_perfect: float = Field(0.15, ge=0, le=1)
    """Probability that a refine step draws a node with r == 1 (else one with r < 1)."""
    buffer_capacity: int = Field(256, ge=1)
    """Rollout buffer size (FIFO: the oldest reason-step nodes leave first)."""
    epochs: int = Field(1, ge=1)
    """Optimisation steps on each step's rollouts (1: the PPO ratio is 1 at the only update)."""
    clip: float = Field(0.2, gt=0)
    """PPO clip range of both the text and the image ratio."""
    kl: bool = True
    """KL penalties to the frozen SFT reference; False sets both betas to 0 and skips the reference passes."""
    beta_text: float = Field(0.05, ge=0)
    """Weight of the per-token k3 KL of the text loss (textbook 0.001, under which sampled layouts stop being
    valid: docs/method.md, Departures)."""
    beta_image: float = Field(0.001, ge=0)
    """Weight of the (mu - mu_ref)^2 / std^2 penalty of the image loss."""
    w_text: float = Field(1.0, ge=0)
    """Weight of the text loss in the total loss."""
    w_image: float = Field(2.0, ge=0)
    """Weight of the image loss in the total loss."""
    normalize_std: bool = False
    """Divide group advantages by the group's reward std (the textbook: mean-centring only; docs/method.md)."""
    drop_equal_groups: bool = True
    """Leave groups whose rewards are all equal (all-zero advantages) out of the loss, and skip the optimizer step
    when no group is left (textbook: keep them; docs/method.md, Departures)."""
    min_informative_groups: int = Field(1, ge=1)
    """Dynamic sampling (DAPO): a step keeps drawing `prompts_per_step` prompts (reason) or `nodes_per_step` buffer
    nodes (refine) until its draws hold this many informative groups (rewards not all equal), and takes one update
    on all of them; 1 = the first draw decides."""
    max_draws: int = Field(1, ge=1)
    """Most draws per step; a step whose `max_draws` draws hold fewer than min_informative_groups informative
    groups takes no optimizer step (logged as train/skipped)."""
    permute_rewards: bool = False
    """The null control: each group's rewards are handed out among its own samples in a random order before the
    advantages (same rewards, same kept groups, no information about which sample earned them)."""
    eta_reason: float = Field(0.7, gt=0)
    """SDE noise scale `a` of reason-step image sampling."""
    eta_refine: float = Field(1.0, gt=0)
    """SDE noise scale `a` of refine-step (editing) sampling."""
    sample_steps: int = Field(4, ge=2)
    """Flow-integration steps of rollout images (one of them stochastic); held-out checks use eval_sampling."""
    timestep_shift: float = Field(1.0, gt=0)
    """SD3 time shift of the rollout schedule."""
    cfg_scale: float = Field(1.0, ge=0)
    """Classifier-free guidance of rollout images (re-applied identically in the loss)."""
    temperature: float = Field(0.7, gt=0)
    """Text sampling temperature of reasoning (> 0: RL needs exploration), and of reflections unless
    reflect_temperature is set. 0.7 rather than 1.0: the evaluation reads the greedy policy, and RL at 1.0
    sharpened a sampled distribution far from it (chosen on validation over three SFT seeds, docs/method.md)."""
    reflect_temperature: float | None = Field(1.0, gt=0)
    """Text sampling temperature of reflections (null = temperature)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of rollout texts."""
    max_new_tokens: int = Field(64, ge=1)
    """Longest reasoning or reflection a rollout writes (a layout of nine objects, GenEval++'s most, is 62 tokens
    and the end token)."""
    lr: float = Field(5e-5, gt=0)
    """Constant AdamW learning rate."""
    weight_decay: float = Field(0.0, ge=0)
    """AdamW weight decay."""
    grad_clip: float = Field(1.0, gt=0)
    """Global gradient-norm clip."""
    reward: RewardConfig = RewardConfig(name="verifier", params={"mode": "strict"})
    """Alignment reward r (the exact verifier's strict 0/1 verdict: docs/method.md, Departures); `tiif` (the exact
    TIIF score of a TIIF prompt record) needs prompts: tiif."""
    prompts: Literal["synth", "tiif"] = "synth"
    """The train prompts RL draws: the synth train prompts table (GenEval records), or the synth TIIF suite's train
    records (data/synth/tiif/train.jsonl, each record's short and long description with its yes/no questions), for
    the tiif reward (or judge / intrinsic). Validation and held-out checks stay on the synth prompts (strict)."""
    checkpoint_every: int = Field(50, ge=1)
    """Steps between resume checkpoints."""
    reasoning_format: Literal["parses", "satisfies"] = "parses"
    """Format reward f of reason steps: the layout text parses (textbook), or also satisfies the prompt
    (exact ShapeWorld check; a departure that stops sampled layouts drifting off the prompt)."""
    wrong_stop_delta: float = Field(0.0, le=0)
    """Refine delta when the model stops on an image with r < 1. The textbook gives 0, so stopping is never
    worse than an edit that does not help; with a weak SFT editor most edits hurt and the policy learns to
    always stop (docs/method.md, Departures). A negative value makes a wrong stop cost reward."""
    refine_image_baseline: Literal["group", "edited"] = "group"
    """Baseline of a refine step's image advantages: the mean image reward of the whole group, stopped children
    included with the node's reward (textbook), or of the edited children only. With a weak editor most edits
    lose to stopping, so under "group" nearly every edited image gets a negative advantage."""
    replay_weight: float = Field(0.0, ge=0)
    """Weight of an SFT loss on the synth train tables added to every step's loss (InstructGPT's PPO-ptx; not in
    the textbook recipe, 0 = off, the default). With 128 rollouts per update at lr 5e-5, ITA, VQA and render
    fidelity hold without it; at weight 1 its gradient set the clipped norm (docs/method.md, Departures)."""
    replay_tasks: tuple[SftTask, ...] = ("edit", "answer", "judge")
    """SFT tasks of the replay loss, each a batch of `replay_batch` examples per step."""
    replay_batch: int = Field(8, ge=1)
    """Examples per replay task and step."""
    ema_decay: float = Field(0.99, ge=0, lt=1)
    """Decay of an exponential moving average of the policy weights that the held-out checks evaluate and the
    stage saves, as the SFT stage does (0 = the raw weights, the textbook). Rollouts always use the raw policy."""
    eval_every: int = Field(50, ge=1)
    """Steps between held-out strict accuracy checks (the reward-hacking monitor)."""
    eval_rows: int = Field(64, ge=1)
    """Held-out prompts in those checks (the final evaluation uses all of them)."""
    validation_rows: int = Field(260, ge=0)
    """Train prompt rows, evenly spread over the table (20 per tag at the default), that RL never draws and that
    the run's final policy is scored on (strict, greedy: metrics.json `validation`): the split to choose settings
    on, so that no choice reads the reported held-out split. Their prompt texts may recur in other train rows
    (counting has 13 train texts). 0 = none."""
    eval_sampling: SamplingConfig = HELDOUT_SAMPLING
    """ODE sampling of held-out metrics; keep it equal to the SFT stage's so the numbers compare."""

    def rl_seed(self, base: BaseConfig) -> int:
        """The seed of the stage's random streams: `seed`, else base.seed."""
        return base.seed if self.seed is None else self.seed

    @model_validator(mode="after")
    def _consistent(self) -> "RlConfig":
        if self.eval_sampling.sde_steps:
            raise ValueError("rl.eval_sampling.sde_steps must be empty: held-out metrics use ODE sampling")
        if self.w_text == 0 and self.w_image == 0 and self.replay_weight == 0:
            raise ValueError("rl: w_text, w_image and replay_weight are all 0: nothing to train")
        most = self.max_draws * min(self.prompts_per_step, self.nodes_per_step)  # groups the draws can hold
        if self.min_informative_groups > most:
            raise ValueError(f"rl: min_informative_groups={self.min_informative_groups} exceeds the {most} groups "
                             "that max_draws draws can hold: raise rl.max_draws or lower rl.min_informative_groups")
        if self.replay_weight > 0 and not self.replay_tasks:
            raise ValueError("rl: replay_weight > 0 needs at least one replay_tasks entry")
        self._check_prompts()
        return self

    def _check_prompts(self) -> None:
        """The reward and the format check read the kind of record `prompts` draws."""
        names = reward_names(self.reward)
        if self.prompts != "tiif" and (tiif := next((n for n in names if n in TIIF_REWARDS), None)):
            raise ValueError(f"rl.reward {tiif!r} scores TIIF prompt records, but rl.prompts is {self.prompts!r}: set "
                             "rl.prompts=tiif (the synth TIIF suite's train records)")
        if self.prompts == "tiif" and (geneval := next((n for n in names if n in GENEVAL_REWARDS), None)):
            raise ValueError(f"rl.prompts is 'tiif', but rl.reward {geneval!r} scores GenEval records: set "
                             "rl.reward.name=tiif (or judge)")
        if self.prompts == "tiif" and self.reasoning_format == "satisfies":
            raise ValueError("rl.prompts is 'tiif', but rl.reasoning_format 'satisfies' checks layouts against "
                             "GenEval records: set rl.reasoning_format=parses")

    def rollout_settings(self) -> RolloutSettings:
        text = SamplingConfig(temperature=self.temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens)
        reflection = text.model_copy(update={"temperature": self.reflect_temperature or self.temperature})
        image = SamplingConfig(steps=self.sample_steps, timestep_shift=self.timestep_shift, cfg_scale=self.cfg_scale)
        return RolloutSettings(self.group_size, text, reflection, image, self.eta_reason, self.eta_refine,
                               self.normalize_std, self.reasoning_format, self.wrong_stop_delta,
                               self.refine_image_baseline, self.drop_equal_groups, self.permute_rewards)
