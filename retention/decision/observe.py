"""The policy's observation for one live customer, built from serving-time facts.

The exported policy was trained on ``RetentionEnv`` observations; serving must give it the same
18 numbers with the same meaning. A test rebuilds env observations from the env's own state with
this function and requires them to match, so the two cannot drift apart.

Serving has no simulated portfolio, so two fields are mapped by meaning: the period budget is the
ledger's, and ``customers_left`` (the share of the portfolio not yet decided) becomes the share
of the period left, since a live campaign reaches its customers over the period. The period's
length, the offers' costs, the cooldown and the fatigue cap are the contact contract's, as in the
env: serving must pass the contract the policy was trained under.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from retention.config import RetentionEnvConfig
from retention.contract import N_LEVELS, ContactContract
from retention.decision.env import OBS_NAMES, offer_costs


@dataclass(frozen=True)
class LiveCustomer:
    """What serving knows about one customer at decision time."""

    churn_risk: float  # P(churn within the period), the risk model
    accept_probs: tuple[float, float, float, float]  # P(accept) at levels 0-3, the accept model
    value: float  # 12-month value, the LTV model (or monthly charges x 12)
    day: int  # day of the budget period, 0-based
    contacts: int  # contacts of this customer this period (ledger)
    days_since_contact: int | None  # None: never contacted this period
    offer_active: bool  # an offer sent within offer_effect_days
    budget_left_share: float  # what is left of the period budget, as a share of it
    # The offer's effect on this customer relative to the average one (the uplift model);
    # 1.0: an average customer, what serving assumes without campaign facts.
    effect: float = 1.0


def expected_uplift(
    hazard: float,
    day: int,
    acc: np.ndarray,
    value: float,
    env: RetentionEnvConfig,
    contract: ContactContract,
    effect: float = 1.0,
) -> np.ndarray:
    """Expected value saved minus expected spend of a contact now at each offer level."""
    remaining = contract.limits.period_days - day
    keep = 1.0 - np.clip(effect * np.asarray(env.hazard_reduction), 0.0, 0.95)
    eff = min(env.offer_effect_days, remaining)
    saved = np.exp(-hazard * (eff * keep + (remaining - eff))) - np.exp(-hazard * remaining)
    cost = offer_costs(value, contract)
    return acc * (saved * value - cost) - contract.contact_cost


def uplift_by_level(c: LiveCustomer, env: RetentionEnvConfig, contract: ContactContract):
    """Expected value saved minus expected spend of a contact now at each level (currency):
    what the observation's ``uplift_*`` fields carry, before scaling and clipping."""
    risk = float(np.clip(c.churn_risk, 0.0, 1 - 1e-9))
    hazard = -np.log1p(-risk) / contract.limits.period_days
    acc = np.asarray(c.accept_probs, dtype=float) * env.accept_fatigue**c.contacts
    return expected_uplift(hazard, c.day, acc, c.value, env, contract, c.effect)


def observation(
    c: LiveCustomer,
    env: RetentionEnvConfig,
    contract: ContactContract,
    mean_value: float,
    customers_left: float | None = None,
    period_budget: float | None = None,
) -> np.ndarray:
    """The 18-number observation in ``OBS_NAMES`` order.

    ``period_budget`` scales the offer-cost field; by default it is the budget of a typical
    training portfolio (``budget_share`` x ``customers_per_episode`` x mean value).
    """
    p, limits = env, contract.limits
    days = limits.period_days
    risk = float(np.clip(c.churn_risk, 0.0, 1 - 1e-9))
    acc = np.asarray(c.accept_probs, dtype=float) * p.accept_fatigue**c.contacts
    since = 1.0 if c.days_since_contact is None else c.days_since_contact / days
    cooldown = c.days_since_contact is not None and c.days_since_contact < limits.cooldown_days
    vbar = max(mean_value, 1e-12)
    budget = period_budget or p.budget_share * p.customers_per_episode * vbar
    time_left = 1.0 - c.day / days
    largest = contract.offer_cost(N_LEVELS - 1, c.value)
    obs = [
        risk,
        *acc,
        float(np.clip(c.budget_left_share, -1.0, 1.0)),
        min(since, 1.0),
        float(cooldown),
        min(c.contacts / limits.fatigue_cap, 2.0),
        min(np.log1p(c.value / vbar), 5.0),
        time_left,
        float(c.offer_active),
        time_left if customers_left is None else customers_left,
        min(largest / budget, 1.0),
        *np.clip(uplift_by_level(c, p, contract) / vbar, -1.0, 5.0),
    ]
    out = np.asarray(obs, dtype=np.float32)
    assert out.shape == (len(OBS_NAMES),)
    return out
