"""The heuristics a retention team would use without a learned policy, on the same env.

Every baseline keeps the hard rules by construction (no contact inside the cooldown, none past the
fatigue cap, none that could overspend the budget), so the learned policy is compared with rules
that never break a limit. The risk threshold and the Lagrangian-priced rule decide from the
observation alone (``retention.decision.heuristics``), exactly as they run at serving when
released; the knapsack sees what a campaign planner sees: every customer of the episode in
advance (which the learned policy does not), re-planned at each decision from what is left of
the budget.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from retention.contract import N_LEVELS
from retention.decision.env import RetentionEnv
from retention.decision.heuristics import followup_index, rule_action, rule_params


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
    """Contact when the refreshed risk is at least ``threshold``, with offer ``level``.

    It acts through ``heuristics.rule_actions`` on the observation, as the released rule does
    at serving; ``rule`` is fixed when the rule is tuned (else built from the env at ``begin``).
    """

    threshold: float = 0.5
    level: int = 2
    name: str = "risk_threshold"
    rule: dict | None = None

    def knobs(self) -> dict[str, float]:
        return {"threshold": self.threshold, "level": self.level}

    def begin(self, env):
        if self.rule is None:
            self.rule = rule_params(
                "risk_threshold", env.contract, env.params, env.book.mean_value, **self.knobs()
            )

    def act(self, obs, env):
        return rule_action(self.rule, obs)


@dataclass
class LagrangianPriced(Policy):
    """Contact at the level with the largest expected uplift - ``mu`` x worst-case cost, when
    positive: the budget priced at its shadow price ``mu`` (tuned so the budget is used)."""

    mu: float = 1.0
    name: str = "lagrangian"
    rule: dict | None = None

    def knobs(self) -> dict[str, float]:
        return {"mu": self.mu}

    def begin(self, env):
        if self.rule is None:
            self.rule = rule_params(
                "lagrangian", env.contract, env.params, env.book.mean_value, **self.knobs()
            )

    def act(self, obs, env):
        return rule_action(self.rule, obs)


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
    """Greedy multiple-choice knapsack on expected uplift per unit of worst-case cost.

    Items are (customer, attempt k): attempt k comes ``k`` cooldowns into the customer's track
    if the earlier ones were declined and the customer is still here; its options are the four
    offer levels, each with an expected uplift (value saved by the offer's hazard cut minus the
    expected cost, from the customer's score at the start of its track) and a worst-case cost
    (the contact and the offer as if accepted: what the ledger charges against the budget),
    weighted by the chance the attempt happens. Increments along each item's convex hull are
    taken by uplift per cost while they fit, a customer's attempts in order. The plan is made
    again at every decision from what is actually left of the budget, so what a declined offer
    did not spend goes to the customers still to come.
    """

    name: str = "greedy_knapsack"
    plan: dict[tuple[int, int], int] = field(default_factory=dict)

    def begin(self, env):
        p, limits, contact_cost = env.params, env.contract.limits, env.contract.contact_cost
        gap = p.followup_days[wait_index(env, limits.cooldown_days)]
        keep = env.keep  # (n, 4): each customer's own response to an offer
        cost_l = env.offer_costs
        n = len(env.idx)
        incs = []
        reach = np.ones(n)  # P(every earlier attempt declined)
        for k in range(limits.fatigue_cap):
            t = k * gap
            remaining = env.period_days - t
            if remaining <= 0:
                break
            eff = min(p.offer_effect_days, remaining)
            a = env.acc * p.accept_fatigue**k
            lam_no = env.h0 * remaining
            lam_off = env.h0[:, None] * (eff * keep + (remaining - eff))
            saved = np.exp(-lam_off) - np.exp(-lam_no)[:, None]
            uplift = a * (saved * env.value[:, None] - cost_l) - contact_cost
            worst = cost_l + contact_cost
            w = reach * np.exp(-env.h0 * t)  # P(attempt k happens)
            top = np.zeros(n, dtype=int)
            for i in range(n):
                hull = hull_increments(worst[i], uplift[i])
                for step, (eff_i, d_cost, level) in enumerate(hull):
                    incs.append((eff_i, i, k, step, level, float(w[i] * d_cost)))
                if hull:
                    top[i] = hull[-1][2]
            reach = reach * (1 - a[np.arange(n), top])
        incs.sort(key=lambda x: -x[0])
        self.incs, self.gap, self._planned_for = incs, gap, None
        self._replan(env)

    def _replan(self, env) -> None:
        """Fill what is left of the budget with the attempts still to come."""
        self.plan, used, steps = {}, 0.0, {}
        left = env.budget - env.spend
        now_i, now_k = env.i, env.contacts
        for _, i, k, step, level, cost in self.incs:
            if i < now_i or (i == now_i and k < now_k):
                continue
            first = i > now_i and k == 0 or i == now_i and k == now_k
            if step != steps.get((i, k), 0) or (not first and (i, k - 1) not in self.plan):
                continue
            if used + cost > left:
                continue
            self.plan[(i, k)] = level
            steps[(i, k)] = step + 1
            used += cost
        self._planned_for = (now_i, now_k)

    def act(self, obs, env):
        if self._planned_for != (env.i, env.contacts):
            self._replan(env)
        level = self.plan.get((env.i, env.contacts))
        if level is None:
            return np.array([0, 0, wait_index(env, env.period_days)])
        wait = wait_index(env, self.gap)
        if env.day < env.contacts * self.gap:
            return np.array([0, 0, wait])
        return np.array([int(may_contact(env, level)), level, wait])
