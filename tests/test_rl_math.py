"""Tree-RL math on hand-computed tensors: advantages, stage rewards, PPO/KL losses."""

import math

import pytest
import torch

from r3.rl.objective import (group_advantages, image_policy_loss, kl_k3, ppo_clip_loss, reason_rewards, refine_rewards,
                              text_policy_loss, total_loss)


def test_constant_group_has_zero_advantage_with_and_without_std():
    rewards = torch.tensor([[0.7, 0.7, 0.7], [0.0, 1.0, 2.0]])
    centred = group_advantages(rewards)
    torch.testing.assert_close(centred, torch.tensor([[0.0, 0.0, 0.0], [-1.0, 0.0, 1.0]]))
    normed = group_advantages(rewards, normalize_std=True)
    s = math.sqrt(1.5)  # 1 / population std of (0, 1, 2)
    torch.testing.assert_close(normed, torch.tensor([[0.0, 0.0, 0.0], [-s, 0.0, s]]), atol=1e-5, rtol=0)


def test_group_advantages_over_members_only():
    rewards = torch.tensor([[0.9, 0.2, 0.4, 0.9], [0.5, 0.5, 0.3, 0.1]])
    members = torch.tensor([[False, True, True, False], [False, False, False, False]])
    # baseline of group 0 is mean(0.2, 0.4) = 0.3; a group without members has no advantage at all
    expected = torch.tensor([[0.0, -0.1, 0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    torch.testing.assert_close(group_advantages(rewards, members=members), expected)
    torch.testing.assert_close(group_advantages(rewards, normalize_std=True, members=members),
                               torch.tensor([[0.0, -1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]), atol=1e-4, rtol=0)
    everyone = torch.ones_like(members)
    torch.testing.assert_close(group_advantages(rewards, members=everyone), group_advantages(rewards))
    with pytest.raises(ValueError, match="members"):
        group_advantages(rewards, members=members[:, :2])


def test_group_advantages_rejects_flat_input():
    with pytest.raises(ValueError, match=r"\(N, G\)"):
        group_advantages(torch.ones(4))


def test_reason_rewards():
    text, image = reason_rewards(torch.tensor([1, 0, 1]), torch.tensor([0.5, 1.0, 1.0]))
    torch.testing.assert_close(text, torch.tensor([1.5, 0.0, 2.0]))
    torch.testing.assert_close(image, torch.tensor([0.5, 1.0, 1.0]))


def test_refine_rewards_stop_bonus_and_masks():
    f = torch.tensor([1.0, 1.0, 0.0])
    stopped = torch.tensor([True, False, True])
    # r_old == 1: stopping earns delta = 1 (text 2 f); the stopped child's r_new is ignored (image unchanged)
    text, image, mask = refine_rewards(f, 1.0, torch.tensor([0.3, 0.6, 0.2]), stopped)
    torch.testing.assert_close(text, torch.tensor([2.0, 1.0 + (0.6 - 1.0), 0.0]))
    torch.testing.assert_close(image, torch.tensor([1.0, 0.6, 1.0]))
    torch.testing.assert_close(mask, torch.tensor([0.0, 1.0, 0.0]))


def test_refine_rewards_imperfect_node():
    f = torch.ones(3)
    stopped = torch.tensor([True, False, False])
    text, image, mask = refine_rewards(f, torch.full((3,), 0.5), torch.tensor([0.9, 1.0, 0.25]), stopped)
    torch.testing.assert_close(text, torch.tensor([1.0, 1.5, 0.75]))  # stop on r < 1: delta 0
    torch.testing.assert_close(image, torch.tensor([0.5, 1.0, 0.25]))
    torch.testing.assert_close(mask, torch.tensor([0.0, 1.0, 1.0]))


def test_refine_rewards_wrong_stop_delta_only_changes_stops_on_imperfect_nodes():
    f = torch.ones(4)
    r_old = torch.tensor([0.5, 0.5, 1.0, 1.0])
    stopped = torch.tensor([True, False, True, False])
    text, image, mask = refine_rewards(f, r_old, torch.tensor([0.9, 0.75, 0.2, 0.5]), stopped, wrong_stop_delta=-0.5)
    torch.testing.assert_close(text, torch.tensor([0.5, 1.25, 2.0, 0.5]))
    torch.testing.assert_close(image, torch.tensor([0.5, 0.75, 1.0, 0.5]))
    torch.testing.assert_close(mask, torch.tensor([0.0, 1.0, 0.0, 1.0]))


def test_refine_rewards_rejects_mismatched_group():
    with pytest.raises(ValueError, match="group size"):
        refine_rewards(torch.ones(3), 0.5, torch.ones(2), torch.zeros(3, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        refine_rewards(torch.ones(2), 0.5, torch.ones(2), torch.zeros(2))


def test_ppo_at_behaviour_policy_equals_unclipped_loss_and_gradient():
    logp = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    adv = torch.tensor([1.0, -2.0, 0.5])
    loss, clip_frac = ppo_clip_loss(logp, logp.detach(), adv, clip=0.2)
    loss.sum().backward()
    grad_clipped = logp.grad.clone()
    logp.grad = None
    unclipped = -(torch.exp(logp - logp.detach()) * adv)
    unclipped.sum().backward()
    torch.testing.assert_close(loss, -adv)
    torch.testing.assert_close(grad_clipped, logp.grad)
    torch.testing.assert_close(grad_clipped, -adv)
    assert clip_frac.item() == 0.0


def test_ppo_clipping_engages_beyond_one_plus_minus_c():
    ratios = torch.tensor([1.5, 1.5, 0.5, 0.5])
    adv = torch.tensor([2.0, -1.0, -1.0, 1.0])
    logp_old = torch.zeros(4)
    logp_new = torch.log(ratios).requires_grad_(True)
    loss, clip_frac = ppo_clip_loss(logp_new, logp_old, adv, clip=0.2)
    # min(1.5*2, 1.2*2)=2.4 | min(-1.5, -1.2)=-1.5 | min(-0.5, -0.8)=-0.8 | min(0.5, 0.8)=0.5
    torch.testing.assert_close(loss, torch.tensor([-2.4, 1.5, 0.8, -0.5]))
    loss.sum().backward()
    torch.testing.assert_close(logp_new.grad, torch.tensor([0.0, 1.5, 0.0, -0.5]))  # clipped -> no gradient
    assert clip_frac.item() == pytest.approx(0.5)


def test_kl_k3_zero_at_reference_and_hand_value():
    logp = torch.log(torch.tensor([0.5, 0.3]))
    assert torch.all(kl_k3(logp, logp) == 0)
    value = kl_k3(torch.log(torch.tensor(0.5)), torch.log(torch.tensor(0.25)))
    assert value.item() == pytest.approx(0.5 - math.log(0.5) - 1.0, abs=1e-6)  # 0.19315


def test_text_loss_averages_over_all_unmasked_tokens():
    logp = torch.full((2, 3), -1.0)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    adv = torch.tensor([1.0, -4.0])
    loss, stats = text_policy_loss(logp, logp, logp, mask, adv, clip=0.2, beta_kl=0.001)
    # tokens: -1, -1, +4 -> 2/3 (a per-sequence mean would give (-1 + 4) / 2 = 1.5)
    assert loss.item() == pytest.approx(2.0 / 3.0, abs=1e-6)
    assert stats["kl"].item() == 0.0 and stats["approx_kl"].item() == 0.0 and stats["clip_frac"].item() == 0.0


def test_text_loss_kl_term_and_masked_placeholders():
    logp_new = torch.tensor([[math.log(0.5), float("nan")]], requires_grad=True)
    logp_old = torch.tensor([[math.log(0.5), 0.0]])
    logp_ref = torch.tensor([[math.log(0.25), 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    loss, stats = text_policy_loss(logp_new, logp_old, logp_ref, mask, torch.zeros(1), clip=0.2, beta_kl=0.5)
    k3 = 0.5 - math.log(0.5) - 1.0
    assert loss.item() == pytest.approx(0.5 * k3, abs=1e-6)
    assert stats["kl"].item() == pytest.approx(k3, abs=1e-6)
    loss.backward()
    assert logp_new.grad[0, 1].item() == 0.0
    assert logp_new.grad[0, 0].item() == pytest.approx(0.5 * (1.0 - 0.5), abs=1e-6)  # beta * (1 - exp(ref - logp))


def test_text_loss_rejects_bad_shapes():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="advantages must have shape"):
        text_policy_loss(x, x, x, x, torch.zeros(3), clip=0.2, beta_kl=0.0)


def test_image_mask_zeroes_stopped_samples_contribution_and_gradient():
    # the stopped sample (index 1) holds placeholders: NaN log-prob and mean, zero std
    logp_new = torch.tensor([0.1, float("nan"), -0.2], requires_grad=True)
    logp_old = torch.zeros(3)
    adv = torch.tensor([1.0, 3.0, -1.0])
    mask = torch.tensor([1.0, 0.0, 1.0])
    mean_new = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    mean_new[1] = float("nan")
    mean_new.requires_grad_(True)
    mean_ref = torch.zeros(3, 3, 4, 4)
    std = torch.tensor([0.5, 0.0, 0.5])
    loss, stats = image_policy_loss(logp_new, logp_old, adv, mask, mean_new, mean_ref, std, clip=0.2, beta_kl=0.1)
    assert torch.isfinite(loss) and all(torch.isfinite(v) for v in stats.values())
    loss.backward()
    assert logp_new.grad[1].item() == 0.0
    assert torch.all(mean_new.grad[1] == 0)
    assert logp_new.grad[0].item() != 0.0 and torch.any(mean_new.grad[0] != 0)
    keep = torch.tensor([0, 2])
    expected, _ = image_policy_loss(
        logp_new[keep], logp_old[keep], adv[keep], torch.ones(2), mean_new[keep], mean_ref[keep], std[keep], 0.2, 0.1
    )
    torch.testing.assert_close(loss, expected)


def test_image_kl_hand_value_and_per_sample_std():
    mean_ref = torch.zeros(2, 3, 2, 2)
    mean_new = mean_ref + 0.1
    zeros = torch.zeros(2)
    std = torch.tensor([0.5, 0.25])
    loss, stats = image_policy_loss(zeros, zeros, zeros, torch.ones(2), mean_new, mean_ref, std, clip=0.2, beta_kl=0.5)
    kl = (0.01 / 0.25 + 0.01 / 0.0625) / 2  # mean over images of (mu - mu_ref)^2 / std^2
    assert stats["kl"].item() == pytest.approx(kl, rel=1e-5)
    assert loss.item() == pytest.approx(0.5 * kl, rel=1e-5)


def test_total_loss_weights():
    assert total_loss(torch.tensor(1.0), torch.tensor(0.5)).item() == pytest.approx(2.0)
    assert total_loss(torch.tensor(1.0), torch.tensor(0.5), w_text=0.5, w_image=1.0).item() == pytest.approx(1.0)
