import math

import pytest
import torch

from r3.models.sampling import (
    cfg_velocity,
    euler_step,
    gaussian_logprob,
    guided,
    sample_images,
    sample_token,
    sde_eta,
    sde_step_mean_std,
    timesteps,
    transition_distribution,
)


def test_sde_step_matches_hand_computation() -> None:
    # x0_hat = 1 - 0.5 * 0.5 = 0.75; score = -(1 - 0.5 * 0.75) / 0.25 = -2.5
    # mean = 1 - (0.5 - 0.5 * 0.04 * -2.5) * 0.1 = 0.945; std = 0.2 * sqrt(0.1)
    mean, std = sde_step_mean_std(torch.ones(1, 2), torch.full((1, 2), 0.5), 0.5, 0.1, 0.2)
    torch.testing.assert_close(mean, torch.full((1, 2), 0.945))
    assert std.item() == pytest.approx(0.2 * math.sqrt(0.1))


def test_sde_eta_values() -> None:
    assert sde_eta(0.5, 0.7).item() == pytest.approx(0.7)
    assert sde_eta(1.0, 0.7).item() == pytest.approx(0.7 * math.sqrt(1 / 0.05))  # t clipped at 0.95 below
    assert sde_eta(0.0, 1.0).item() == 0.0


def test_gaussian_logprob_is_maximal_at_the_mean() -> None:
    mean, std = torch.tensor([[0.3, -1.0, 2.0]]), torch.tensor(0.5)
    at_mean = gaussian_logprob(mean, mean, std)
    assert at_mean.shape == (1,)
    assert at_mean.item() == pytest.approx(-math.log(0.5) - 0.5 * math.log(2 * math.pi))
    for shift in (1e-3, 0.1, -0.7):
        assert gaussian_logprob(mean + shift, mean, std).item() < at_mean.item()
    # one dimension off by one std: mean over 3 dims loses 0.5 / 3
    off = mean + torch.tensor([[0.5, 0.0, 0.0]])
    assert gaussian_logprob(off, mean, std).item() == pytest.approx(at_mean.item() - 0.5 / 3)


def test_sde_step_with_vanishing_eta_is_the_euler_step() -> None:
    x_t, v = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    mean, std = sde_step_mean_std(x_t, v, 0.6, 0.05, 1e-6)
    torch.testing.assert_close(mean, euler_step(x_t, v, 0.05))
    assert std.item() < 1e-6


def test_cfg_velocity() -> None:
    cond, uncond = torch.tensor([2.0]), torch.tensor([1.0])
    assert cfg_velocity(cond, uncond, 1.0).item() == 2.0
    assert cfg_velocity(cond, uncond, 0.0).item() == 1.0
    assert cfg_velocity(cond, uncond, 3.0).item() == 4.0


def test_timesteps_run_from_noise_to_data() -> None:
    plain = timesteps(4)
    torch.testing.assert_close(plain, torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    shifted = timesteps(4, shift=3.0)
    assert shifted[0] == 1.0 and shifted[-1] == 0.0
    assert torch.all(shifted[1:-1] > plain[1:-1]) and torch.all(shifted[1:] < shifted[:-1])


def _toy_velocities() -> tuple:
    weight = torch.randn(3, 3) * 0.3

    def cond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W), (B,)
        return torch.einsum("oc,bchw->bohw", weight, x) + t[:, None, None, None]

    def uncond(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return 0.5 * x - t[:, None, None, None]

    return cond, uncond


def test_sampler_records_transitions_and_recomputes_ratio_one_with_cfg() -> None:
    torch.manual_seed(0)
    cond, uncond = _toy_velocities()
    velocity = guided(cond, uncond, 4.0)
    noise = torch.randn(5, 3, 8, 8)
    generator = torch.Generator().manual_seed(1)
    x0, steps = sample_images(velocity, noise, timesteps(6), sde_steps=(4, 1), eta_a=0.7, generator=generator)
    assert x0.shape == (5, 3, 8, 8)
    assert steps.x_t.shape == steps.x_next.shape == (5, 2, 3, 8, 8)
    assert steps.logprob.shape == (5, 2)
    assert steps.index.tolist() == [1, 4]
    torch.testing.assert_close(steps.t, torch.tensor([5 / 6, 2 / 6]))
    again = transition_distribution(guided(cond, uncond, 4.0), steps)
    assert again.mean.shape == (5, 2, 3, 8, 8) and again.std.shape == (2,)
    ratio = torch.exp(again.logprob - steps.logprob)
    torch.testing.assert_close(ratio, torch.ones(5, 2), atol=1e-5, rtol=0)
    other_guidance = transition_distribution(guided(cond, uncond, 1.0), steps)
    assert not torch.allclose(other_guidance.logprob, steps.logprob, atol=1e-3)


def test_sampler_with_vanishing_noise_equals_ode() -> None:
    cond, _ = _toy_velocities()
    noise = torch.randn(2, 3, 4, 4)
    ode, none = sample_images(cond, noise, timesteps(5))
    sde, _ = sample_images(cond, noise, timesteps(5), sde_steps=range(5), eta_a=1e-7)
    assert none.x_t.shape == (2, 0, 3, 4, 4) and none.logprob.shape == (2, 0)
    torch.testing.assert_close(sde, ode, atol=1e-5, rtol=0)


def test_sampler_rejects_steps_outside_the_schedule() -> None:
    cond, _ = _toy_velocities()
    with pytest.raises(ValueError, match=r"sde_steps \[5\]"):
        sample_images(cond, torch.randn(1, 3, 4, 4), timesteps(5), sde_steps=(5,))


def test_sample_token_greedy_and_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7]])).repeat(200, 1)  # (400, 3)
    assert sample_token(logits, 0.0).tolist() == [0, 2] * 200
    generator = torch.Generator().manual_seed(0)
    nucleus = sample_token(logits, 1.0, top_p=0.6, generator=generator)  # smallest sets reaching 0.6: {0, 1} and {2}
    assert set(nucleus[0::2].tolist()) == {0, 1} and set(nucleus[1::2].tolist()) == {2}
    assert sample_token(logits, 1.0, top_p=0.01, generator=generator).tolist() == [0, 2] * 200
    full = sample_token(logits, 1.0, top_p=1.0, generator=generator)
    assert 2 in full[0::2].tolist()
