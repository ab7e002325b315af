"""The arithmetic of PPO for text, kept apart from models so it can be checked by hand.

* ``AdaptiveKLController``: the KL-penalty coefficient of Ziegler et al. (2019), "Fine-Tuning
  Language Models from Human Preferences": ``beta <- beta * (1 + clip(KL/target - 1, -0.2, 0.2)
  * n_steps / horizon)``, so the policy's divergence from the reference tracks a target.
* ``token_rewards``: the per-token reward, ``-beta * (log pi - log pi_ref)`` on every generated
  token plus the sequence score on the last one.
* ``gae``: generalised advantage estimation over a (batch, tokens) mask.
* ``leave_one_out``: RLOO's baseline (Ahmadian et al. 2024, "Back to Basics"): with ``k``
  samples of one prompt, each sample's reward minus the mean of the other ``k - 1``.
* ``ppo_losses``: the clipped policy loss and the clipped value loss, masked means.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class AdaptiveKLController:
    value: float
    target: float
    horizon: float

    def update(self, current_kl: float, n_steps: int) -> float:
        error = float(np.clip(current_kl / self.target - 1.0, -0.2, 0.2))
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def token_rewards(score, logprobs, ref_logprobs, mask, beta: float):
    """(B, T) rewards: KL penalty per generated token, the sequence score on the last one."""
    import torch

    kl = (logprobs - ref_logprobs) * mask
    rewards = -beta * kl
    last = mask.long().cumsum(dim=1).argmax(dim=1)  # index of each row's last generated token
    rewards[torch.arange(len(score)), last] += score
    return rewards, kl


def gae(rewards, values, mask, gamma: float, lam: float):
    """Advantages and returns over the generated tokens (mask 1), right to left."""
    import torch

    B, T = rewards.shape
    adv = torch.zeros_like(rewards)
    last = torch.zeros(B, dtype=rewards.dtype)
    for t in reversed(range(T)):
        next_v = values[:, t + 1] * mask[:, t + 1] if t + 1 < T else torch.zeros(B)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last * (mask[:, t + 1] if t + 1 < T else 0.0)
        adv[:, t] = last * mask[:, t]
    returns = adv + values
    return adv * mask, returns * mask


def leave_one_out(rewards, k: int):
    """(B,) rewards of B / k prompts' k consecutive samples -> each minus its siblings' mean."""
    if k < 2 or len(rewards) % k:
        raise ValueError(f"leave_one_out: {len(rewards)} rewards are not groups of k={k} >= 2")
    groups = rewards.reshape(-1, k)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - baseline).reshape(-1)


def whiten(x, mask, eps: float = 1e-8):
    mean = (x * mask).sum() / mask.sum()
    var = (((x - mean) ** 2) * mask).sum() / mask.sum()
    return (x - mean) / (var.sqrt() + eps) * mask


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def ppo_losses(new_logprobs, old_logprobs, advantages, new_values, old_values, returns, mask,
               clip: float = 0.2, value_clip: float = 0.2):  # fmt: skip
    """(policy loss, value loss, stats): PPO's clipped surrogate and clipped value error (0
    when ``new_values`` is None)."""
    import torch

    ratio = torch.exp(new_logprobs - old_logprobs)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1 - clip, 1 + clip)
    pg_loss = masked_mean(torch.maximum(pg1, pg2), mask)
    if new_values is None:  # no value head (a leave-one-out baseline)
        vf_loss = torch.zeros((), dtype=pg_loss.dtype)
    else:
        v_clipped = old_values + torch.clamp(new_values - old_values, -value_clip, value_clip)
        vf_loss = 0.5 * masked_mean(
            torch.maximum((new_values - returns) ** 2, (v_clipped - returns) ** 2), mask
        )
    clipfrac = masked_mean((torch.abs(ratio - 1) > clip).float(), mask)
    approx_kl = 0.5 * masked_mean((new_logprobs - old_logprobs) ** 2, mask)
    return (
        pg_loss,
        vf_loss,
        {"clipfrac": float(clipfrac.detach()), "approx_kl": float(approx_kl.detach())},
    )
