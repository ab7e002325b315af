"""The servable heuristics: rules that decide from the policy's observation alone.

A rule here reads nothing but the 18 numbers of ``OBS_NAMES`` and a small parameter dict (the
``rule`` a released ``policy.json`` carries), so what is evaluated in the env is exactly what
serving runs: the baseline classes act through ``rule_actions`` and so does ``ExportedPolicy``
for a released rule. Two kinds:

* ``risk_threshold``: contact at a fixed offer level when the refreshed churn risk reaches a
  threshold (the campaign a retention team runs first).
* ``lagrangian``: price the budget. Contact at the level with the largest expected uplift minus
  ``mu`` times the contact's worst-case cost (what the ledger charges against the budget), when
  that is positive; ``mu`` is the budget's shadow price, tuned on training episodes so the
  budget is used where it earns most.

Both keep the hard limits themselves as far as the observation tells them (no contact inside the
cooldown, none past the fatigue cap, none while an offer of ours runs, none whose worst case
exceeds what is left of the budget); the ledger still has the last word at serving.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from retention.config import RetentionEnvConfig
from retention.contract import N_LEVELS, ContactContract
from retention.decision.env import ACTION_DIMS, OBS_NAMES

RULE_KINDS = ("risk_threshold", "lagrangian")
_I = {n: k for k, n in enumerate(OBS_NAMES)}
_UPLIFT = [_I[f"uplift_{lvl}"] for lvl in range(N_LEVELS)]
_RISK, _LEFT, _COST, _VALUE = (
    _I[k] for k in ("churn_risk", "budget_remaining", "offer_cost", "value")
)
_COOL, _FATIGUE, _ACTIVE = (_I[k] for k in ("cooldown_active", "fatigue_count", "offer_active"))


def followup_index(followup_days: list[int], days: int) -> int:
    """The shortest follow-up choice of at least ``days`` days (the longest if none is)."""
    choices = np.asarray(followup_days)
    ok = np.flatnonzero(choices >= days)
    return int(ok[np.argmin(choices[ok])]) if len(ok) else int(np.argmax(choices))


def rule_params(
    kind: str,
    contract: ContactContract,
    params: RetentionEnvConfig,
    mean_value: float,
    **knobs: float,
) -> dict[str, Any]:
    """The ``rule`` dict of a servable heuristic (``policy.json``'s ``rule`` when released).

    ``mean_value`` is the value scale of the observation (the policy meta's ``mean_value``);
    ``knobs`` are the kind's own: ``threshold`` and ``level`` for risk_threshold, ``mu`` for
    lagrangian.
    """
    if kind not in RULE_KINDS:
        raise ValueError(f"rule kind {kind!r} is not one of {RULE_KINDS}")
    d, months = contract.discounts, [o.months for o in contract.offers]
    vbar = max(float(mean_value), 1e-12)
    typical_budget = params.budget_share * params.customers_per_episode * vbar
    rule: dict[str, Any] = {
        "kind": kind,
        "followup_index": followup_index(params.followup_days, contract.limits.cooldown_days),
        # The observation carries the largest offer's cost as a share of the budget; offer
        # costs scale with discount x bills, so level l's share is that times ratio[l].
        "cost_ratio_to_top": [float(d[i] * months[i] / (d[-1] * months[-1])) for i in range(4)],
        # A contact's own cost as a share of a typical period budget, and in value units.
        "contact_share": float(contract.contact_cost / max(typical_budget, 1e-12)),
        "contact_value": float(contract.contact_cost / vbar),
        # An accepted offer of level l costs offer_rate[l] x the customer's 12-month value.
        "offer_rate": [float(d[i] * months[i] / 12.0) for i in range(4)],
    }
    if kind == "risk_threshold":
        rule["threshold"] = float(knobs["threshold"])
        rule["level"] = int(knobs["level"])
    else:
        rule["mu"] = float(knobs["mu"])
    return rule


def _eligible(obs: np.ndarray) -> np.ndarray:
    """No cooldown running, the fatigue cap not reached, no offer of ours running."""
    return (obs[:, _COOL] < 0.5) & (obs[:, _FATIGUE] < 1.0) & (obs[:, _ACTIVE] < 0.5)


def _budget_ok(rule: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """(n, 4): what is left of the budget covers a contact at each level in the worst case."""
    ratio = np.asarray(rule["cost_ratio_to_top"])
    need = obs[:, [_COST]] * ratio[None, :] + rule["contact_share"]
    return obs[:, [_LEFT]] >= need


def priced_scores(rule: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """(n, 4) expected uplift minus mu x worst-case cost, in units of the mean value."""
    value = np.expm1(obs[:, _VALUE])  # the obs holds log1p(value / vbar)
    worst = rule["contact_value"] + np.asarray(rule["offer_rate"])[None, :] * value[:, None]
    return obs[:, _UPLIFT] - rule["mu"] * worst


def rule_action(rule: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """``rule_actions`` for one observation in plain Python (the env calls it at every step,
    where numpy's per-call overhead on 18 numbers dominates); a test holds the two equal."""
    o = np.asarray(obs, dtype=np.float32).reshape(-1).tolist()
    wait = int(rule["followup_index"])
    if not (o[_COOL] < 0.5 and o[_FATIGUE] < 1.0 and o[_ACTIVE] < 0.5):
        return np.array([0, int(rule.get("level", 0)) if "level" in rule else 0, wait])
    # Float64 arithmetic on the float32 observation, as the vectorised form does.
    left, top = o[_LEFT], o[_COST]
    need = [top * r + rule["contact_share"] for r in rule["cost_ratio_to_top"]]
    kind = rule.get("kind")
    if kind == "risk_threshold":
        lvl = int(rule["level"])
        go = o[_RISK] >= rule["threshold"] and left >= need[lvl]
        return np.array([int(go), lvl, wait])
    if kind == "lagrangian":
        value = float(np.expm1(o[_VALUE]))
        best, best_lvl = -np.inf, 0
        for lvl in range(N_LEVELS):
            if left < need[lvl]:
                continue
            worst = rule["contact_value"] + rule["offer_rate"][lvl] * value
            score = o[_UPLIFT[lvl]] - rule["mu"] * worst
            if score > best:
                best, best_lvl = score, lvl
        return np.array([1, best_lvl, wait]) if best > 0 else np.array([0, 0, wait])
    raise ValueError(f"policy.json: rule.kind {kind!r} is not one of {RULE_KINDS}")


def rule_actions(rule: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """(n, 3) actions [contact, level, follow-up index] of ``rule`` on observations ``obs``."""
    # The float32 observation in float64 arithmetic (``rule_action`` computes the same).
    obs = np.asarray(obs, dtype=np.float32).reshape(-1, len(OBS_NAMES)).astype(np.float64)
    kind = rule.get("kind")
    n = len(obs)
    ok = _budget_ok(rule, obs)
    if kind == "risk_threshold":
        level = np.full(n, int(rule["level"]))
        go = (obs[:, _RISK] >= rule["threshold"]) & ok[np.arange(n), level] & _eligible(obs)
    elif kind == "lagrangian":
        score = np.where(ok, priced_scores(rule, obs), -np.inf)
        level = score.argmax(axis=1)
        go = (score[np.arange(n), level] > 0) & _eligible(obs)
        level = np.where(go, level, 0)
    else:
        raise ValueError(f"policy.json: rule.kind {kind!r} is not one of {RULE_KINDS}")
    return np.stack([go.astype(int), level, np.full(n, int(rule["followup_index"]))], axis=1)


RULE_LOGIT = 30.0  # one-hot logits: the rule's action has probability 1 - 1e-13


def rule_logits(rule: dict[str, Any], obs: np.ndarray) -> np.ndarray:
    """The rule's actions as flat one-hot logits over the action components (the policy's
    output format, so serving and the batch path treat a released rule like the network)."""
    actions = rule_actions(rule, obs)
    out = np.full((len(actions), sum(ACTION_DIMS)), -RULE_LOGIT, dtype=np.float32)
    start = 0
    for k, size in enumerate(ACTION_DIMS):
        out[np.arange(len(actions)), start + actions[:, k]] = RULE_LOGIT
        start += size
    return out
