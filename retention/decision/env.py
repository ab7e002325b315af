"""``RetentionEnv``: one budget period of a customer portfolio, simulated from the learned models.

An episode is a portfolio of ``customers_per_episode`` customers drawn from the customer book (each
scored by the risk, accept and lifetime-value models) sharing one period budget. Customers come one
after another; for each, the agent decides at day 0 and then every few days (its own choice) until
the customer churns or the period ends. The business rules are the profile's contact contract
(``retention.contract``): the period's length (``contract.limits.period_days``), the offer levels and
their cost, the cost of a contact, the cooldown and the fatigue cap. Every other assumption is a
named parameter of ``RetentionEnvConfig`` in the profile:

* churn: the risk model's calibrated probability is the chance of churning within the period
  without contact; it becomes a constant daily hazard whose log follows a random walk
  (``risk_volatility`` per 30 days, mean-preserving), so a customer's risk moves during the period
  and the observation shows its current value.
* acceptance: the accept model's calibrated probability for the chosen level, times
  ``accept_fatigue`` for every earlier contact this period.
* effect: an accepted offer cuts the hazard by ``hazard_reduction[level]`` times the
  customer's own ``effect`` (the uplift model's estimate for a comparable customer of the
  randomised campaign over the average estimate: persuadables above 1, lost causes and sleeping
  dogs 0; the cut is capped at 95 %) for ``offer_effect_days``; the offer's cost (``contract.offer_cost``: the level's discount ×
  monthly value × its bills) is paid at acceptance; every contact costs ``contract.contact_cost``.
* value: the LTV model's 12-month value; a churned customer loses it.
* limits: ``retention.contract.breaches``, the same function the serving ledger calls, on the
  customer's simulated history: a contact inside the cooldown, beyond the fatigue cap in the
  period, or whose worst-case cost (``contract.worst_case_cost``) exceeds what is left of the
  period budget (``budget_share`` × the portfolio's value) breaches a limit. With ``shield`` on
  (the default) the contact is refused, as the serving ledger would; without it, it happens and
  is counted as a violation (or overshoot). Either way each attempt costs ``lambda`` in the
  reward.

Randomness uses common random numbers: each customer's churn clock (a unit exponential compared
with the cumulative hazard), hazard path and acceptance draws are fixed at reset from the episode
seed, so two policies run on the same seed face exactly the same customers and luck.

The reward is in units of the book's mean 12-month value v̄. With ``churn_reward: sampled`` a step
pays ``−spend/v̄``, minus ``value/v̄`` when the customer churns in it. With ``expected`` (the default
for training) churn is integrated out: the customer stays to the period's end and each step pays
``value/v̄ · Δ(S_offers − S_none) − S_offers · spend/v̄``, where S are survival probabilities with
and without the offers so far. Both have the same expected return up to a constant per customer,
so the same optimal policy; the second is nearly free of the churn lottery, which otherwise
drowns the effect of a single offer. Each step also costs ``Σ_k lambda_k · cost_k``.
Evaluation always runs ``sampled`` and counts what happened.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from retention.config import RetentionEnvConfig
from retention.contract import N_LEVELS, ContactContract, ContactHistory, breaches

OBS_NAMES = (
    "churn_risk",
    "accept_prob_0",
    "accept_prob_1",
    "accept_prob_2",
    "accept_prob_3",
    "budget_remaining",
    "days_since_contact",
    "cooldown_active",
    "fatigue_count",
    # Beyond the nine of the spec: without them no policy can weigh value or pace the budget.
    "value",
    "time_left",
    "offer_active",
    "customers_left",
    "offer_cost",
    "uplift_0",
    "uplift_1",
    "uplift_2",
    "uplift_3",
)
CONSTRAINTS = ("budget", "fatigue", "cooldown")
# The per-episode statistic each constraint's usage is measured by.
USAGE_KEYS = {
    "budget": "budget_attempts",
    "fatigue": "fatigue_attempts",
    "cooldown": "cooldown_attempts",
}
ACTION_DIMS = (2, 4, 8)


def offer_costs(value: float, contract: ContactContract) -> np.ndarray:
    """What an accepted offer of each level costs a customer of this 12-month value."""
    return np.array([contract.offer_cost(lvl, value) for lvl in range(N_LEVELS)])


@dataclass
class Book:
    """The scored customers an episode draws from (one row per customer)."""

    churn_prob: np.ndarray  # P(churn within the period | no contact), calibrated
    accept: np.ndarray  # (n, 4) P(accept | offer level), calibrated, non-decreasing
    value: np.ndarray  # 12-month value (currency)
    customer_id: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=object))
    # The offer's effect on this customer relative to the average one (the uplift model's
    # estimate over its mean): 0 for lost causes and sleeping dogs, above 1 for persuadables.
    effect: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __post_init__(self):
        self.churn_prob = np.clip(np.asarray(self.churn_prob, float), 1e-6, 1 - 1e-6)
        self.accept = np.clip(np.asarray(self.accept, float).reshape(-1, 4), 0.0, 1.0)
        self.value = np.clip(np.asarray(self.value, float), 0.0, None)
        n = len(self.churn_prob)
        if len(self.accept) != n or len(self.value) != n:
            raise ValueError(
                f"book columns differ in length: churn_prob {n}, accept {len(self.accept)}, "
                f"value {len(self.value)}"
            )
        if n == 0:
            raise ValueError("the customer book is empty")
        if len(self.customer_id) != n:
            self.customer_id = np.array([f"row-{i}" for i in range(n)], dtype=object)
        self.effect = np.asarray(self.effect, float)
        if len(self.effect) == 0:
            self.effect = np.ones(n)
        if len(self.effect) != n or not np.isfinite(self.effect).all() or (self.effect < 0).any():
            raise ValueError(f"book effect must be {n} finite values >= 0")

    def __len__(self) -> int:
        return len(self.churn_prob)

    @property
    def mean_value(self) -> float:
        return max(float(self.value.mean()), 1e-9)

    def subset(self, idx: np.ndarray) -> Book:
        return Book(
            self.churn_prob[idx],
            self.accept[idx],
            self.value[idx],
            self.customer_id[idx],
            self.effect[idx],
        )


@dataclass
class EpisodeStats:
    """What one episode did, summed over its customers."""

    customers: int = 0
    total_value: float = 0.0
    retained_value: float = 0.0
    churned: int = 0
    spend: float = 0.0
    budget: float = 0.0
    contacts: int = 0
    contacted_customers: int = 0
    accepted: int = 0
    offers_by_level: list[int] = field(default_factory=lambda: [0, 0, 0, 0])
    violations: dict[str, float] = field(  # carried out (only without the shield)
        default_factory=lambda: {"fatigue": 0.0, "cooldown": 0.0}
    )
    attempts: dict[str, float] = field(
        default_factory=lambda: {"budget": 0.0, "fatigue": 0.0, "cooldown": 0.0}
    )
    attempted_contacts: int = 0
    blocked_contacts: int = 0

    @property
    def net_revenue(self) -> float:
        return self.retained_value - self.spend

    @property
    def budget_overshoot(self) -> float:
        return max(0.0, self.spend - self.budget) / max(self.budget, 1e-12)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers": self.customers,
            "net_revenue": self.net_revenue,
            "retained_value": self.retained_value,
            "total_value": self.total_value,
            "net_revenue_retention": self.retained_value / max(self.total_value, 1e-12),
            "churned": self.churned,
            "spend": self.spend,
            "budget": self.budget,
            "budget_used": self.spend / max(self.budget, 1e-12),
            "budget_overshoot": self.budget_overshoot,
            "contacts": self.contacts,
            "contact_rate": self.contacted_customers / max(self.customers, 1),
            "accepted": self.accepted,
            "offer_mix": [c / max(self.contacts, 1) for c in self.offers_by_level],
            "fatigue_violations": self.violations["fatigue"],
            "cooldown_violations": self.violations["cooldown"],
            "budget_attempts": self.attempts["budget"],
            "fatigue_attempts": self.attempts["fatigue"],
            "cooldown_attempts": self.attempts["cooldown"],
            "attempted_contacts": self.attempted_contacts,
            "blocked_contacts": self.blocked_contacts,
        }


class RetentionEnv(gym.Env):
    """gymnasium env; ``config`` is RLlib's ``env_config`` dict (see ``make_env_config``)."""

    metadata = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None):
        config = dict(config or {})
        self.params = RetentionEnvConfig.model_validate(config.get("params", {}))
        if config.get("contract") is None:
            raise ValueError(
                "RetentionEnv needs env_config['contract'] (the profile's contact contract)"
            )
        self.contract = ContactContract.model_validate(config["contract"])
        self.period_days = self.contract.limits.period_days
        book = config.get("book")
        if book is None:
            raise ValueError("RetentionEnv needs env_config['book'] (a Book or its columns)")
        self.book = book if isinstance(book, Book) else Book(**book)
        self.lambdas = {k: float(config.get("lambdas", {}).get(k, 0.0)) for k in CONSTRAINTS}
        # A fixed order of customers (evaluation) instead of random draws (training).
        order = config.get("order")
        self._order = None if order is None else np.asarray(order, dtype=int)
        self._order_pos = 0
        p = self.params
        self._reduction = np.asarray(p.hazard_reduction)
        self._followup = np.asarray(p.followup_days, dtype=int)
        self._vbar = self.book.mean_value
        self.observation_space = gym.spaces.Box(
            low=np.array([0, 0, 0, 0, 0, -1, 0, 0, 0, 0, 0, 0, 0, 0] + [-1] * 4, dtype=np.float32),
            high=np.array([1, 1, 1, 1, 1, 1, 1, 1, 2, 5, 1, 1, 1, 1] + [5] * 4, dtype=np.float32),
            dtype=np.float32,
        )
        self.action_space = gym.spaces.MultiDiscrete(ACTION_DIMS)
        self._rng = np.random.default_rng(config.get("seed"))
        self.stats = EpisodeStats()

    # ----------------------------------------------------------------------------------- control

    def set_lambdas(self, lambdas: dict[str, float]) -> None:
        self.lambdas.update({k: float(v) for k, v in lambdas.items() if k in CONSTRAINTS})

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        rng, p = self._rng, self.params
        n = p.customers_per_episode
        if options and "customers" in options:
            idx = np.asarray(options["customers"], dtype=int)
        elif self._order is not None:
            take = np.arange(self._order_pos, self._order_pos + n) % len(self._order)
            idx, self._order_pos = self._order[take], self._order_pos + n
        else:
            idx = rng.integers(0, len(self.book), n)
        self.idx = idx
        n = len(idx)
        self.p0 = self.book.churn_prob[idx]
        self.acc = self.book.accept[idx]
        self.value = self.book.value[idx]
        # Each customer's hazard kept while an accepted offer runs, by level: the average cut
        # scaled by the customer's own response to an offer (the uplift model's effect).
        self.effect = self.book.effect[idx]
        self.keep = 1.0 - np.clip(self.effect[:, None] * self._reduction[None, :], 0.0, 0.95)
        # What an accepted offer of each level costs each customer, by the contract.
        self.offer_costs = np.array([offer_costs(v, self.contract) for v in self.value]).reshape(
            n, N_LEVELS
        )
        days = self.period_days
        self.h0 = -np.log1p(-self.p0) / days
        # Common random numbers, drawn once per episode whatever the policy does.
        self.clock = rng.exponential(1.0, n)
        step_sd = p.risk_volatility / np.sqrt(30.0)
        walk = rng.normal(-0.5 * step_sd**2, step_sd, (n, days))
        walk[:, 0] = 0.0
        self.hazard = self.h0[:, None] * np.exp(np.cumsum(walk, axis=1))
        self.accept_u = rng.random((n, days + 1))
        self.budget = p.budget_share * float(self.value.sum())
        self.stats = EpisodeStats(
            customers=n, total_value=float(self.value.sum()), budget=self.budget
        )
        self.spend = 0.0
        # Per customer: what was spent on it and whether it stayed (for off-policy checks).
        self.customer_spend = np.zeros(n)
        self.customer_kept = np.zeros(n, dtype=bool)
        self.i = 0
        self._start_customer()
        return self._obs(), {}

    def _start_customer(self) -> None:
        self.day = 0
        self.contacts = 0
        self.last_contact: int | None = None
        self.offer_until = -1
        self.offer_keep = 1.0
        self.cum_hazard = 0.0
        self.base_hazard = 0.0

    # -------------------------------------------------------------------------------------- view

    def current_risk(self) -> float:
        """P(churn within a period) at today's hazard, the score a refreshed risk model shows."""
        h = self.hazard[self.i, min(self.day, self.period_days - 1)]
        return float(-np.expm1(-h * self.period_days))

    def accept_prob(self, level: int) -> float:
        return float(self.acc[self.i, level] * self.params.accept_fatigue**self.contacts)

    def days_since_contact(self) -> int | None:
        return None if self.last_contact is None else self.day - self.last_contact

    def cooldown_active(self) -> bool:
        since = self.days_since_contact()
        return since is not None and since < self.contract.limits.cooldown_days

    def expected_uplift(self) -> np.ndarray:
        """Expected value saved minus expected spend of a contact now at each level, from
        today's refreshed score held for the rest of the period: what a campaign tool that
        re-scores daily would compute (the knapsack's formula, made current)."""
        p = self.params
        remaining = self.period_days - self.day
        h = self.hazard[self.i, min(self.day, self.period_days - 1)]
        eff = min(p.offer_effect_days, remaining)
        lam_no = h * remaining
        lam_off = h * (eff * self.keep[self.i] + (remaining - eff))
        saved = np.exp(-lam_off) - np.exp(-lam_no)
        cost = self.offer_costs[self.i]
        a = self.acc[self.i] * p.accept_fatigue**self.contacts
        return a * (saved * self.value[self.i] - cost) - self.contract.contact_cost

    def offer_cost(self, level: int) -> float:
        """What an accepted offer at ``level`` costs the current customer."""
        return float(self.offer_costs[self.i, level])

    def worst_case_cost(self, level: int) -> float:
        """What a contact at ``level`` may cost: the contact and the offer as if accepted."""
        return self.contract.contact_cost + self.offer_cost(level)

    def _obs(self) -> np.ndarray:
        p, days = self.params, self.period_days
        if self.i >= len(self.idx):
            return np.zeros(len(OBS_NAMES), dtype=np.float32)
        since = 1.0 if self.last_contact is None else (self.day - self.last_contact) / days
        acc = self.acc[self.i] * p.accept_fatigue**self.contacts
        obs = [
            self.current_risk(),
            *acc,
            np.clip((self.budget - self.spend) / max(self.budget, 1e-12), -1.0, 1.0),
            min(since, 1.0),
            float(self.cooldown_active()),
            min(self.contacts / self.contract.limits.fatigue_cap, 2.0),
            min(np.log1p(self.value[self.i] / self._vbar), 5.0),
            1.0 - self.day / days,
            float(self.day < self.offer_until),
            (len(self.idx) - self.i) / len(self.idx),
            # The largest offer's cost as a share of the period budget (others scale with it).
            min(self.offer_cost(N_LEVELS - 1) / max(self.budget, 1e-12), 1.0),
            *np.clip(self.expected_uplift() / self._vbar, -1.0, 5.0),
        ]
        return np.asarray(obs, dtype=np.float32)

    # -------------------------------------------------------------------------------------- step

    def history(self) -> ContactHistory:
        """The current customer's contacts this period, as the contract's limits read them."""
        since = self.days_since_contact()
        return ContactHistory(
            days_since_last_contact=None if since is None else float(since),
            contacts_in_period=self.contacts,
            spent_in_period=self.spend,
        )

    def breaches(self, level: int) -> tuple[str, ...]:
        """The hard limits a contact at ``level`` now would break (budget: in the worst case,
        i.e. if the offer is accepted), by ``retention.contract.breaches`` against the
        portfolio's period budget. The env has no clock of day: quiet hours never apply."""
        return breaches(
            self.history(), self.worst_case_cost(level), self.contract.limits, budget=self.budget
        )

    def step(self, action):
        contact, level, wait = (int(a) for a in np.asarray(action).reshape(-1)[:3])
        p, st, i = self.params, self.stats, self.i
        costs = dict.fromkeys(CONSTRAINTS, 0.0)
        spent = 0.0
        if contact:
            st.attempted_contacts += 1
            breached = self.breaches(level)
            for k in breached:
                costs[k] = 1.0
                st.attempts[k] += 1
            if p.shield and breached:
                # The shield (the contact ledger's check at serving) refuses the contact; the
                # attempt still costs lambda, which is how PPO learns the limits.
                st.blocked_contacts += 1
                contact = 0
        if contact:
            for k in ("fatigue", "cooldown"):
                st.violations[k] += costs[k]
            spent += self.contract.contact_cost
            if self.accept_u[i, min(self.contacts, self.period_days)] < self.accept_prob(level):
                spent += self.offer_cost(level)
                self.offer_until = self.day + p.offer_effect_days
                self.offer_keep = float(self.keep[i, level])
                st.accepted += 1
            if self.contacts == 0:
                st.contacted_customers += 1
            self.contacts += 1
            self.last_contact = self.day
            st.contacts += 1
            st.offers_by_level[level] += 1
        self.spend += spent
        self.customer_spend[i] += spent
        st.spend = self.spend

        # Advance to the next decision; churn when the cumulative hazard passes the clock.
        end = min(self.day + int(self._followup[wait]), self.period_days)
        days = np.arange(self.day, end)
        base = self.hazard[i, self.day : end]
        h = base * np.where(days < self.offer_until, self.offer_keep, 1.0)
        survival_before = np.exp(-self.cum_hazard)
        gap_before = survival_before - np.exp(-self.base_hazard)
        self.cum_hazard += float(h.sum())
        self.base_hazard += float(base.sum())
        churned = bool(self.cum_hazard >= self.clock[i])
        self.day = end
        if p.churn_reward == "expected":
            # Rao-Blackwellised over churn: the customer stays to the period's end and each
            # interval pays the growth of (survival with offers - survival without) times value,
            # costs weighted by the chance the customer is still here. Summed, that is exactly
            # the expected value saved minus the expected spend, without the churn lottery
            # drowning the effect of one offer; zero for a policy that never contacts.
            gap_after = np.exp(-self.cum_hazard) - np.exp(-self.base_hazard)
            reward = (
                self.value[i] * (gap_after - gap_before) - survival_before * spent
            ) / self._vbar
            leaves = self.day >= self.period_days
        else:
            reward = -(spent + (self.value[i] if churned else 0.0)) / self._vbar
            leaves = churned or self.day >= self.period_days
        if leaves:
            if churned:
                st.churned += 1
            else:
                st.retained_value += float(self.value[i])
                self.customer_kept[i] = True
            self.i += 1
            if self.i < len(self.idx):
                self._start_customer()
        reward -= sum(self.lambdas[k] * costs[k] for k in CONSTRAINTS)
        terminated = self.i >= len(self.idx)
        info = {"costs": costs}
        if terminated:
            info["episode_stats"] = st.as_dict()
        return self._obs(), float(reward), terminated, False, info


def make_env_config(
    book: Book,
    params: RetentionEnvConfig,
    contract: ContactContract,
    lambdas: dict[str, float] | None = None,
    seed: int | None = None,
    order: np.ndarray | None = None,
) -> dict[str, Any]:
    """The ``env_config`` RLlib hands to every copy of the env (plain, picklable values)."""
    return {
        "book": {
            "churn_prob": book.churn_prob,
            "accept": book.accept,
            "value": book.value,
            "customer_id": book.customer_id,
            "effect": book.effect,
        },
        "params": params.model_dump(),
        "contract": contract.model_dump(),
        "lambdas": dict(lambdas or {}),
        "seed": seed,
        "order": order,
    }
