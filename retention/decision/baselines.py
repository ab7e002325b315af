"""The heuristics a retention team would use without a learned policy, on the same env.

Every baseline keeps the hard rules by construction (no contact inside the cooldown, none past the
fatigue cap, none that could overspend the budget), so the learned policy is compared with rules
that never break a limit. They see what a campaign tool sees: the knapsack plans the whole
portfolio at the start of the period from the period-start scores (it knows every customer of the
episode in advance, which the learned policy does not); the threshold rule re-reads the refreshed
risk score at each decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retention.contract import N_LEVELS
from retention.decision.env import RetentionEnv


def followup_index(followup_days: list[int], days: int) -> int:
    """The shortest follow-up choice of at least ``days`` days (the longest if none is)."""
    choices = np.asarray(followup_days)
    ok = np.flatnonzero(choices >= days)
    return int(ok[np.argmin(choices[ok])]) if len(ok) else int(np.argmax(choices))


def wait_index(env: RetentionEnv, days: int) -> int:
    return followup_index(env.params.followup_days, days)


def within_hard_limits(env: RetentionEnv, level: int) -> bool:
    """A contact at ``level`` now keeps the cooldown and the fatigue cap, and cannot overspend
    the budget even if the offer is accepted: the check the contact ledger makes at serving."""
    return not env.breaches(level)


def may_contact(env: RetentionEnv, level: int) -> bool:
    """Within the hard limits, and no offer of ours is still running for this customer."""
    return within_hard_limits(env, level) and env.day >= env.offer_until


class Policy:
    name = "policy"

    def begin(self, env: RetentionEnv) -> None:
        """Called after each reset, before the first action."""

    def act(self, obs: np.ndarray, env: RetentionEnv) -> np.ndarray:
        raise NotImplementedError


class NeverContact(Policy):
    name = "never"

    def act(self, obs, env):
        return np.array([0, 0, wait_index(env, env.period_days)])


class AlwaysMaxOffer(Policy):
    """Contact whenever the rules allow, always with the largest offer."""

    name = "always_max"

    def act(self, obs, env):
        top = N_LEVELS - 1
        wait = wait_index(env, env.contract.limits.cooldown_days)
        return np.array([int(may_contact(env, top)), top, wait])


@dataclass
class RiskThreshold(Policy):
    """Contact when the refreshed risk is at least ``threshold``, with offer ``level``."""

    threshold: float = 0.5
    level: int = 2
    name: str = "risk_threshold"

    def act(self, obs, env):
        wait = wait_index(env, env.contract.limits.cooldown_days)
        go = env.current_risk() >= self.threshold and may_contact(env, self.level)
        return np.array([int(go), self.level, wait])


def hull_increments(spend: np.ndarray, uplift: np.ndarray) -> list[tuple[float, float, int]]:
    """Upper convex hull of (spend, uplift) options from (0, 0): (efficiency, Δspend, option).

    The greedy solution of a multiple-choice knapsack's LP relaxation takes these increments in
    order of efficiency, so a customer moves to a costlier offer only while the extra uplift per
    extra unit of spend beats what the budget buys elsewhere.
    """
    out, x0, y0 = [], 0.0, 0.0
    cand = [j for j in np.argsort(spend) if uplift[j] > 0]
    while cand:
        slopes = [(uplift[j] - y0) / max(spend[j] - x0, 1e-12) for j in cand]
        k = int(np.argmax(slopes))
        if slopes[k] <= 0:
            break
        j = cand[k]
        out.append((float(slopes[k]), float(spend[j] - x0), int(j)))
        x0, y0 = spend[j], uplift[j]
        cand = [c for c in cand[k + 1 :] if spend[c] > x0]
    return out


@dataclass
class GreedyKnapsack(Policy):
    """Greedy multiple-choice knapsack on expected uplift per unit of expected cost, under budget.

    Items are (customer, attempt k): attempt k comes ``k`` cooldowns into the period if the earlier
    ones were declined and the customer is still here; its options are the four offer levels, each
    with an expected uplift (value saved by the offer's hazard cut minus the expected cost, from the
    period-start score) and an expected spend. Increments along each item's convex hull are taken
    by uplift per spend until the expected spend fills the budget, a customer's attempts in order.
    """

    name: str = "greedy_knapsack"
    plan: dict[tuple[int, int], int] = field(default_factory=dict)

    def begin(self, env):
        p, limits, contact_cost = env.params, env.contract.limits, env.contract.contact_cost
        gap = p.followup_days[wait_index(env, limits.cooldown_days)]
        keep = 1.0 - np.asarray(p.hazard_reduction)
        cost_l = env.offer_costs
        incs = []
        reach = np.ones(len(env.idx))  # P(every earlier attempt declined)
        for k in range(limits.fatigue_cap):
            t = k * gap
            remaining = env.period_days - t
            if remaining <= 0:
                break
            eff = min(p.offer_effect_days, remaining)
            a = env.acc * p.accept_fatigue**k
            lam_no = env.h0 * remaining
            lam_off = env.h0[:, None] * (eff * keep[None, :] + (remaining - eff))
            saved = np.exp(-lam_off) - np.exp(-lam_no)[:, None]
            uplift = a * (saved * env.value[:, None] - cost_l) - contact_cost
            spend = a * cost_l + contact_cost
            w = reach * np.exp(-env.h0 * t)  # P(attempt k happens)
            top = np.zeros(len(env.idx), dtype=int)
            for i in range(len(env.idx)):
                hull = hull_increments(spend[i], uplift[i])
                for step, (eff_i, d_spend, level) in enumerate(hull):
                    incs.append((eff_i, i, k, step, level, float(w[i] * d_spend)))
                if hull:
                    top[i] = hull[-1][2]
            reach = reach * (1 - a[np.arange(len(env.idx)), top])
        incs.sort(key=lambda x: -x[0])
        self.plan, used, steps = {}, 0.0, {}
        for _, i, k, step, level, exp_spend in incs:
            if step != steps.get((i, k), 0) or (k > 0 and (i, k - 1) not in self.plan):
                continue
            if used + exp_spend > env.budget:
                continue
            self.plan[(i, k)] = level
            steps[(i, k)] = step + 1
            used += exp_spend
        self.gap = gap

    def act(self, obs, env):
        level = self.plan.get((env.i, env.contacts))
        if level is None:
            return np.array([0, 0, wait_index(env, env.period_days)])
        wait = wait_index(env, self.gap)
        if env.day < env.contacts * self.gap:
            return np.array([0, 0, wait])
        return np.array([int(may_contact(env, level)), level, wait])
