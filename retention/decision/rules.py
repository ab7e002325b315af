"""Decisions without the learned policy: the fallback rules engine and business as usual.

* ``next_best_action`` is what serving falls back to when the policy (or the risk model) is down:
  a readable rule on risk level, value and tenure, erring towards the cheap offers.
* ``business_as_usual`` is the control arm of the A/B test: the one-threshold campaign a retention
  team runs before any model (contact risky customers with the small discount).
Both return a ``RuleDecision`` with the reason, so a degraded answer says why it was given; the
reason names the offer as the contact contract does (``ContactContract.offer_reason``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from retention.contract import ContactContract

RiskLevel = Literal["low", "medium", "high", "unknown"]
HIGH_RISK = 0.6
MEDIUM_RISK = 0.3


@dataclass(frozen=True)
class RuleDecision:
    contact: bool
    offer_level: int
    followup_days: int
    reason: str


def risk_level(p: float | None) -> RiskLevel:
    if p is None:
        return "unknown"
    return "high" if p >= HIGH_RISK else "medium" if p >= MEDIUM_RISK else "low"


def next_best_action(
    churn_risk: float | None,
    value: float | None,
    tenure: float | None,
    mean_value: float,
    contract: ContactContract,
) -> RuleDecision:
    """The fallback rule; ``None`` inputs mean the model that gives them was unavailable."""
    reason = contract.offer_reason
    valuable = value is not None and value >= mean_value
    new = tenure is not None and tenure < 12
    level = risk_level(churn_risk)
    if level == "unknown":
        # Without a risk score only the first months are known to be fragile: a check-in.
        if new:
            return RuleDecision(True, 0, 14, f"no risk score; tenure < 12 months: {reason(0)}")
        return RuleDecision(False, 0, 30, "no risk score: no contact")
    if level == "high":
        if valuable:
            return RuleDecision(True, 2, 14, f"high risk, high value: {reason(2)}")
        return RuleDecision(True, 1, 14, f"high risk: {reason(1)}")
    if level == "medium":
        if valuable or new:
            return RuleDecision(True, 0, 21, f"medium risk, valuable or new: {reason(0)}")
        return RuleDecision(False, 0, 21, "medium risk: watch")
    return RuleDecision(False, 0, 30, "low risk: no contact")


def business_as_usual(
    churn_risk: float | None, contract: ContactContract, threshold: float = 0.5
) -> RuleDecision:
    """The control arm: the small discount to everyone the risk score flags."""
    if churn_risk is not None and churn_risk >= threshold:
        return RuleDecision(
            True, 1, 30, f"control: risk >= {threshold}: {contract.offer_reason(1)}"
        )
    return RuleDecision(False, 0, 30, "control: no contact")
