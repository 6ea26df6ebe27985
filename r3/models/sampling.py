"""Samplers: next-token sampling (temperature, top-p), the decoding loop, and flow matching: deterministic Euler (ODE) and
the Flow-GRPO SDE step with its log-prob.

Convention (docs/method.md, Notation): `x_t = (1 - t) x_data + t noise`, the velocity `v` points from data to
noise, time runs from t = 1 (noise) to t = 0 (data) and every step size `dt > 0` moves toward data.
All math runs in float32 whatever the caller's dtype, so stored and recomputed log-probs agree.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

VelocityFn = Callable[[Tensor, Tensor], Tensor]
"""(x_t (B, C, H, W), t (B,)) -> velocity (B, C, H, W); already classifier-free guided."""



def starting_latents(noise: Tensor | None, shape: tuple[int, ...], pixel_side: int,
                     generator: torch.Generator | None) -> Tensor:
    """Starting latents `shape` (B, C, h, w): `noise` as given, folded from pixel shape (B, 3, side, side) by keeping
    the first C*h*w values of each row (i.i.d. Gaussian in, i.i.d. Gaussian out, and rows that share a pixel noise
    share a latent noise), or drawn from `generator`."""
    if noise is None:
        return torch.randn(shape, generator=generator, dtype=torch.float32)
    if tuple(noise.shape) == shape:
        return noise.float()
    pixel_shape = (shape[0], 3, pixel_side, pixel_side)
    if tuple(noise.shape) != pixel_shape:
        raise ValueError(f"noise must have shape {shape} (latents) or {pixel_shape} (pixels), got {tuple(noise.shape)}")
    count = shape[1] * shape[2] * shape[3]
    if noise[0].numel() < count:
        raise ValueError(f"pixel noise {pixel_shape} is smaller than latents {shape}; pass latent noise")
    return noise.float().flatten(1)[:, :count].reshape(shape)

@dataclass(frozen=True)
class SdeSteps:
    """The stochastic steps of a batch of sampling runs: enough to recompute their log-probs later."""

    x_t: Tensor
    """(B, K, C, H, W) state before each stochastic step."""
    x_next: Tensor
    """(B, K, C, H, W) state the sampler drew after it."""
    t: Tensor
    """(K,) time at the start of each stochastic step."""
    dt: Tensor
    """(K,) size of each step toward data (> 0)."""
    index: Tensor
    """(K,) position of each step in the schedule (int64)."""
    eta_a: float
    """Noise scale `a` of `sde_eta` used at sampling time."""
    logprob: Tensor
    """(B, K) behaviour log-prob of each transition (mean over dimensions)."""


@dataclass(frozen=True)
class StepDistribution:
    """The Gaussian transition of the stochastic steps under the current weights."""

    mean: Tensor
    """(B, K, C, H, W) mean of x_next."""
    std: Tensor
    """(K,) standard deviation of x_next (the same for every dimension of a step)."""
    logprob: Tensor
    """(B, K) log-prob of the stored x_next (mean over dimensions)."""


def timesteps(steps: int, shift: float = 1.0) -> Tensor:
    """(steps + 1,) times from 1 to 0; shift > 1 spends more steps near noise (SD3 time shift)."""
    t = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32)  # (S+1,)
    return shift * t / (1.0 + (shift - 1.0) * t)


def euler_step(x_t: Tensor, v: Tensor, dt: Tensor | float) -> Tensor:
    """Deterministic ODE step toward data: x_{t-dt} = x_t - v dt."""
    return x_t - v * dt


def sde_eta(t: Tensor | float, a: float) -> Tensor:
    """Noise level eta = a * sqrt(t / (1 - min(t, 0.95)))."""
    t = torch.as_tensor(t, dtype=torch.float32)
    return a * torch.sqrt(t / (1.0 - t.clamp(max=0.95)))


def sde_step_mean_std(
    x_t: Tensor, v: Tensor, t: Tensor | float, dt: Tensor | float, eta: Tensor | float
) -> tuple[Tensor, Tensor]:
    """Mean (B, C, H, W) and std (scalar tensor) of the SDE transition x_t -> x_{t-dt}.

    t, dt and eta are scalars (one step for the whole batch); the formula is in docs/method.md (Image loss).
    """
    x_t, v = x_t.float(), v.float()
    t, dt, eta = (torch.as_tensor(s, dtype=torch.float32) for s in (t, dt, eta))
    x0_hat = x_t - t * v  # (B, C, H, W)
    score = -(x_t - (1.0 - t) * x0_hat) / t**2  # (B, C, H, W)
    mean = x_t - (v - 0.5 * eta**2 * score) * dt  # (B, C, H, W)
    std = eta * torch.sqrt(dt)  # ()
    return mean, std


def gaussian_logprob(x_next: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
    """(B,) mean over non-batch dimensions of the log-density of N(mean, std^2) at x_next."""
    x_next, mean = x_next.float(), mean.float()
    std = torch.as_tensor(std, dtype=torch.float32)
    logp = -((x_next - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)  # (B, ...)
    return logp.flatten(1).mean(dim=1)


def cfg_velocity(v_cond: Tensor, v_uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: scale 1 is the conditional velocity, 0 the unconditional one."""
    return v_uncond + scale * (v_cond - v_uncond)


def guided(cond: VelocityFn, uncond: VelocityFn, scale: float) -> VelocityFn:
    """One velocity function applying CFG; scale 1 skips the unconditional pass."""
    if scale == 1.0:
        return cond
    return lambda x_t, t: cfg_velocity(cond(x_t, t), uncond(x_t, t), scale)


def sample_token(
    logits: Tensor, temperature: float, top_p: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """(B,) next tokens from logits (B, V): greedy at temperature 0, else nucleus sampling at `temperature`."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (B, V)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)  # (B, V)
        # keep a token while the mass before it is below top_p, so the most likely token always stays
        keep = sorted_probs.cumsum(dim=-1) - sorted_probs < top_p  # (B, V)
        probs = torch.zeros_like(probs).scatter(-1, order, sorted_probs * keep)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def decode_tokens(
    first_logits: Tensor,
    next_logits: Callable[[Tensor], Tensor],
    max_new_tokens: int,
    temperature: float,
    top_p: float,
    generator: torch.Generator | None,
    pad_id: int,
    end_id: int,
) -> tuple[Tensor, Tensor, float]:
    """The autoregressive sampling loop every backend shares.

    first_logits: (B, V) next-token logits after the prompt; next_logits(token (B,)) feeds the sampled tokens to
    the model (KV-cached) and returns the following (B, V) logits. Tokens are drawn on the CPU (B x V is small) so
    that a CPU `generator` also drives a model on a GPU.
    Returns (token_ids (B, T) with pad_id after each row's end token, their log-probs (B, T) at the scoring
    temperature, 0 on padding, and that temperature: `temperature`, or 1 for greedy decoding).
    """
    scoring_temperature = temperature if temperature > 0 else 1.0
    logits = first_logits  # (B, V)
    done = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)  # (B,)
    tokens, logprobs = [], []
    for step in range(max_new_tokens):
        token = sample_token(logits.cpu(), temperature, top_p, generator).to(logits.device)  # (B,)
        logp = torch.log_softmax(logits / scoring_temperature, dim=-1).gather(-1, token[:, None])[:, 0]  # (B,)
        tokens.append(torch.where(done, pad_id, token))
        logprobs.append(torch.where(done, 0.0, logp))
        done = done | (token == end_id)
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        logits = next_logits(token)
    return torch.stack(tokens, dim=1), torch.stack(logprobs, dim=1), scoring_temperature


def sample_images(
    velocity_fn: VelocityFn,
    noise: Tensor,
    schedule: Tensor,
    sde_steps: Sequence[int] = (),
    eta_a: float = 0.7,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, SdeSteps]:
    """Integrate from noise (t = schedule[0]) to data (t = schedule[-1]).

    Steps listed in `sde_steps` draw x_next from the SDE transition and record it; all others are Euler steps.
    Returns the final state (B, C, H, W) and the recorded stochastic steps (K = len(sde_steps), may be 0).
    """
    num_steps = len(schedule) - 1
    stochastic = sorted(set(sde_steps))
    if any(not 0 <= i < num_steps for i in stochastic):
        raise ValueError(f"sde_steps {list(sde_steps)} must lie in [0, {num_steps}) for a {num_steps}-step schedule")
    x = noise.float()  # (B, C, H, W)
    records: list[tuple[Tensor, Tensor, Tensor]] = []
    for i in range(num_steps):
        t, dt = schedule[i], schedule[i] - schedule[i + 1]
        v = velocity_fn(x, t.expand(x.shape[0])).float()  # (B, C, H, W)
        if i in stochastic:
            mean, std = sde_step_mean_std(x, v, t, dt, sde_eta(t, eta_a))
            eps = torch.randn(x.shape, generator=generator, dtype=torch.float32, device=x.device)
            x_next = mean + std * eps  # (B, C, H, W)
            records.append((x, x_next, gaussian_logprob(x_next, mean, std)))
            x = x_next
        else:
            x = euler_step(x, v, dt)
    batch, shape = x.shape[0], x.shape[1:]
    steps = SdeSteps(
        x_t=torch.stack([r[0] for r in records], dim=1) if records else x.new_zeros(batch, 0, *shape),
        x_next=torch.stack([r[1] for r in records], dim=1) if records else x.new_zeros(batch, 0, *shape),
        t=schedule[stochastic].float(),
        dt=(schedule[stochastic] - schedule[[i + 1 for i in stochastic]]).float(),
        index=torch.tensor(stochastic, dtype=torch.long),
        eta_a=eta_a,
        logprob=torch.stack([r[2] for r in records], dim=1) if records else x.new_zeros(batch, 0),
    )
    return x, steps


def transition_distribution(velocity_fn: VelocityFn, steps: SdeSteps) -> StepDistribution:
    """Recompute the Gaussian of every stored stochastic step (with grad) under `velocity_fn`.

    `velocity_fn` must apply the same guidance as at sampling time; then the ratio
    exp(logprob - steps.logprob) is 1 under unchanged weights.
    """
    means, stds, logps = [], [], []
    for k in range(steps.t.shape[0]):
        x_t, t, dt = steps.x_t[:, k], steps.t[k], steps.dt[k]  # (B, C, H, W), (), ()
        v = velocity_fn(x_t, t.expand(x_t.shape[0]))  # (B, C, H, W)
        mean, std = sde_step_mean_std(x_t, v, t, dt, sde_eta(t, steps.eta_a))
        means.append(mean)
        stds.append(std)
        logps.append(gaussian_logprob(steps.x_next[:, k], mean, std))
    batch = steps.x_t.shape[0]
    if not means:
        return StepDistribution(steps.x_t.clone(), steps.t.clone(), steps.logprob.new_zeros(batch, 0))
    return StepDistribution(torch.stack(means, dim=1), torch.stack(stds), torch.stack(logps, dim=1))
