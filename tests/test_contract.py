"""retention.contract: the one statement of the contact rules, and everything that reads it.

* The simulated env and the serving ledger judge the same contact histories alike.
* A profile whose offers are 0/10/20/30 % for two bills changes the template, the shield, the
  rules' reasons, the transformer's pricing, the env and the synthetic data, with nothing else
  edited.
* The contract's own functions and validation.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from retention.config import ConfigError, RetentionEnvConfig, load_profile
from retention.contract import (
    LIMITS,
    ContactContract,
    ContactHistory,
    ContactLimits,
    OfferLevel,
    breaches,
    in_quiet_hours,
    period_key,
    period_progress,
)
from retention.data import synthetic
from retention.decision.env import Book, RetentionEnv, make_env_config
from retention.decision.rules import RuleDecision, business_as_usual, next_best_action
from retention.messaging.data import build_prompt, examples
from retention.messaging.shield import PERCENT, check_message, template_message
from serving.ledger import ContactLedger
from serving.transformer import make_proposal

FACTS = {"name": "Sam", "plan": "Pro", "tenure": 17, "timezone": "Europe/Berlin"}
NEW_OFFERS = (
    "contract.offers=[{discount: 0, months: 0}, {discount: 0.1, months: 2}, "
    "{discount: 0.2, months: 2}, {discount: 0.3, months: 2}]"
)


def percents(text: str) -> set[float]:
    return {float(m.group(1).replace(",", ".")) for m in PERCENT.finditer(text)}


# ------------------------------------------------------------------------ env / ledger parity

VALUE = 1200.0
DEFAULT = ContactContract(contact_cost=0.5)  # 0.5 and the offers' costs are exact in binary
MONTHLY = ContactContract(
    offers=[
        OfferLevel(discount=0, months=0),
        OfferLevel(discount=0.1, months=2),
        OfferLevel(discount=0.2, months=2),
        OfferLevel(discount=0.3, months=2),
    ],
    limits=ContactLimits(period="month", cooldown_days=7, fatigue_cap=2),
    contact_cost=0.5,
)
# Each case: the contract, the period budget, the first day of a calendar period as long as the
# env's (Q1 2026 has 90 days, April 30), the attempts (day, offer level) and the verdicts.
CASES = {
    "cooldown edge": (
        DEFAULT, 91.0, datetime(2026, 1, 1, 12, tzinfo=UTC),
        [(0, 0), (13, 0), (14, 0), (27, 1), (28, 1)],
        [(), ("cooldown",), (), ("cooldown",), ()],
    ),
    "fatigue cap": (
        DEFAULT, 91.0, datetime(2026, 1, 1, 12, tzinfo=UTC),
        [(0, 0), (14, 0), (28, 0), (42, 0), (89, 0)],
        [(), (), (), ("fatigue",), ("fatigue",)],
    ),
    "budget exhausted": (  # two 45.5 contacts spend exactly the 91.0; nothing more fits
        DEFAULT, 91.0, datetime(2026, 1, 1, 12, tzinfo=UTC),
        [(0, 3), (14, 3), (28, 1), (42, 0)],
        [(), (), ("budget",), ("budget",)],
    ),
    "every limit at once": (
        MONTHLY, 121.0, datetime(2026, 4, 1, 12, tzinfo=UTC),
        [(0, 3), (6, 3), (7, 3), (10, 3), (29, 0)],
        [(), ("cooldown",), (), ("cooldown", "fatigue", "budget"), ("fatigue", "budget")],
    ),
}  # fmt: skip


def _wait(followups: np.ndarray, gap: int) -> int:
    """The longest follow-up choice that does not overshoot ``gap`` days."""
    ok = np.flatnonzero(followups <= max(gap, 1))
    return int(ok[np.argmax(followups[ok])])


def env_verdicts(contract, budget, attempts) -> list[tuple[str, ...]]:
    """One customer through the real env: step to each day, attempt, read what it refused."""
    params = RetentionEnvConfig(
        customers_per_episode=1,
        budget_share=budget / VALUE,
        accept_fatigue=1.0,  # every offer accepted: spend is the worst case the ledger charges
        risk_volatility=0.0,
    )
    book = Book(np.array([1e-6]), np.ones((1, 4)), np.array([VALUE]))
    env = RetentionEnv(make_env_config(book, params, contract, seed=0))
    env.reset(seed=0)
    assert env.budget == budget and env.period_days == contract.limits.period_days
    followups = np.asarray(params.followup_days)
    out = []
    for k, (day, level) in enumerate(attempts):
        while env.day < day:
            env.step([0, 0, _wait(followups, day - env.day)])
        assert env.day == day
        nxt = attempts[k + 1][0] if k + 1 < len(attempts) else day + 1
        contacts = env.stats.contacts
        _, _, _, _, info = env.step([1, level, _wait(followups, nxt - day)])
        blocked = tuple(lim for lim in LIMITS if info["costs"].get(lim))
        assert (env.stats.contacts > contacts) == (not blocked)
        out.append(blocked)
    return out


def ledger_verdicts(contract, budget, start, attempts, tmp_path) -> list[tuple[str, ...]]:
    """The same attempts through a real SQLite ledger, priced by the transformer."""
    limits = ContactLimits(**{**contract.limits.model_dump(), "budget_per_period": budget})
    out = []
    with ContactLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}", limits) as ledger:
        for k, (day, level) in enumerate(attempts):
            rule = RuleDecision(True, level, 7, "parity")
            proposal = make_proposal(rule, VALUE, "treatment", 1.0, "policy", contract)
            d = ledger.decide(f"r{k}", "c1", proposal, start + timedelta(days=day), None)
            assert d.contact == (not d.blocked)
            out.append(d.blocked)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_env_and_ledger_give_the_same_verdicts(case, tmp_path):
    contract, budget, start, attempts, expected = CASES[case]
    env = env_verdicts(contract, budget, attempts)
    ledger = ledger_verdicts(contract, budget, start, attempts, tmp_path)
    assert env == ledger == expected


# ------------------------------------------------------------- new offer levels, everywhere


@pytest.fixture(scope="module")
def new_offers():
    return load_profile("tiny", overrides=[NEW_OFFERS]).contract


def test_the_new_offers_are_the_profiles(new_offers):
    assert new_offers.percents == (0, 10, 20, 30)
    assert new_offers.offer_phrase(2) == "20% off your next two bills"


def test_template_and_shield_follow_the_offers(new_offers):
    msg = template_message(FACTS, 2, new_offers)
    assert "20% off your next two bills" in msg and "three" not in msg
    assert check_message(msg, FACTS, 2, new_offers).passed
    good = "Hi Sam, thanks for 17 months with us on Pro. Enjoy 20% off your next two bills."
    assert check_message(good, FACTS, 2, new_offers).passed
    old = "Hi Sam, thanks for 17 months with us on Pro. Enjoy 10% off your next three bills."
    assert check_message(old, FACTS, 2, ContactContract()).passed  # right under the old one
    rules = {v.rule for v in check_message(old, FACTS, 2, new_offers).violations}
    assert rules == {"missing_offer", "wrong_offer"}
    assert "20% off your next two bills" in build_prompt(FACTS, 2, new_offers)[1]["content"]


def test_rules_name_the_new_levels(new_offers):
    high = next_best_action(0.9, 2000.0, 30, 1000.0, new_offers)
    assert (high.offer_level, high.reason) == (2, "high risk, high value: 20 % offer")
    assert next_best_action(0.9, 10.0, 30, 1000.0, new_offers).reason == "high risk: 10 % offer"
    assert business_as_usual(0.9, new_offers).reason == "control: risk >= 0.5: 10 % offer"
    assert next_best_action(None, None, 3, 1000.0, new_offers).reason.endswith("check-in")


def test_pricing_and_the_env_follow_the_offers(new_offers):
    # Worst case: the contact and the discount on two bills of a 1200-a-year customer.
    p = make_proposal(RuleDecision(True, 2, 14, "x"), 1200.0, "treatment", 1.0, "rules", new_offers)
    assert p.offer_cost == pytest.approx(0.2 + 0.20 * 100.0 * 2)
    none = make_proposal(RuleDecision(False, 0, 30, "x"), 1200.0, "control", 1.0, "bau", new_offers)
    assert none.offer_cost == 0.0
    book = Book(np.array([0.3]), np.full((1, 4), 0.5), np.array([1200.0]))
    params = RetentionEnvConfig(customers_per_episode=1)
    env = RetentionEnv(make_env_config(book, params, new_offers, seed=0))
    env.reset(seed=0)
    assert [env.offer_cost(lvl) for lvl in range(4)] == pytest.approx([0.0, 20.0, 40.0, 60.0])
    old = RetentionEnv(make_env_config(book, params, ContactContract(), seed=0))
    old.reset(seed=0)
    assert [old.offer_cost(lvl) for lvl in range(4)] == pytest.approx([0.0, 15.0, 30.0, 45.0])


def test_synthetic_data_states_only_the_new_offers(new_offers):
    table = synthetic.generate("messages", 300, 1, new_offers)
    said = set().union(*(percents(m) for m in table["message"]))
    assert said == {10.0, 20.0, 30.0}
    assert not table["message"].str.contains("three bills").any()
    assert table["message"].str.contains("two bills").sum() > 100
    for m, lvl in zip(table["message"], table["offer_level"], strict=True):
        assert percents(m) == ({float(new_offers.percents[lvl])} if lvl else set())
    demos = examples(100, 2, new_offers)
    assert all(check_message(e.message, e.facts, e.offer_level, new_offers).passed for e in demos)
    assert set().union(*(percents(e.message) for e in demos)) == {10.0, 20.0, 30.0}
    # Deeper discounts, same draws: the offers table accepts the top level more often.
    new = synthetic.generate("offers", 4000, 3, new_offers)
    old = synthetic.generate("offers", 4000, 3, ContactContract())
    top = new["offer_level"] == 3
    assert (new["y"][top] == "yes").mean() > (old["y"][top] == "yes").mean() + 0.1


# ----------------------------------------------------------------------- the contract itself

LIM = ContactLimits(cooldown_days=14, fatigue_cap=3, budget_per_period=100.0)


def history(since=None, contacts=0, spent=0.0) -> ContactHistory:
    return ContactHistory(since, contacts, spent)


def test_breaches_names_every_limit_in_order():
    assert breaches(history(), 10.0, LIM) == ()
    assert breaches(history(13.999), 1.0, LIM) == ("cooldown",)
    assert breaches(history(14.0), 1.0, LIM) == ()
    assert breaches(history(-0.5), 1.0, LIM) == ("cooldown",)  # stamped later than now
    assert breaches(history(None, 3), 1.0, LIM) == ("fatigue",)
    assert breaches(history(None, 2, 90.0), 10.0, LIM) == ()  # exactly the budget
    assert breaches(history(None, 2, 90.0), 10.01, LIM) == ("budget",)
    assert breaches(history(None, 0, 0.0), 10.0, LIM, budget=5.0) == ("budget",)
    assert breaches(history(1.0, 3, 99.0), 5.0, LIM, quiet=True) == LIMITS
    no_cooldown = ContactLimits(cooldown_days=0)
    assert breaches(history(-1.0), 0.0, no_cooldown) == ()


def test_offer_cost_phrase_and_reason():
    c = ContactContract()
    assert c.offer_cost(0, 1200.0) == 0.0
    assert c.offer_cost(2, 1200.0) == pytest.approx(0.10 * 100.0 * 3)
    assert c.worst_case_cost(2, 1200.0) == pytest.approx(0.2 + 30.0)
    assert c.worst_case_cost(0, 1200.0) == pytest.approx(0.2)
    assert [c.offer_phrase(lvl) for lvl in range(4)] == [
        "",
        "5% off your next three bills",
        "10% off your next three bills",
        "15% off your next three bills",
    ]
    assert [c.offer_reason(lvl) for lvl in (0, 3)] == ["check-in", "15 % offer"]
    odd = ContactContract(
        offers=[
            OfferLevel(discount=0, months=0),
            OfferLevel(discount=0.05, months=1),
            OfferLevel(discount=0.125, months=12, words="{percent}% off for {bills}"),
            OfferLevel(discount=0.2, months=6),
        ]
    )
    assert odd.offer_phrase(1) == "5% off your next bill"
    assert odd.offer_phrase(2) == "12.5% off for twelve bills"
    assert odd.offer_reason(2) == "12.5 % offer"
    with pytest.raises(ValueError, match="offer_level must be 0-3"):
        c.offer_cost(4, 100.0)


def test_period_keys_and_progress_are_utc_calendar_periods():
    assert period_key(datetime(2027, 1, 1, tzinfo=UTC), "week") == "2026-W53"  # ISO year
    ny_eve = datetime(2027, 1, 1, 2, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert ny_eve.month == 12 and period_key(ny_eve, "month") == "2027-01"
    assert period_key(datetime(2026, 11, 5, tzinfo=UTC), "quarter") == "2026-Q4"
    assert period_key(datetime(2026, 12, 31, 23, 59, tzinfo=UTC), "quarter") == "2026-Q4"
    assert period_progress(datetime(2026, 4, 16, tzinfo=UTC), "month") == pytest.approx(0.5)
    assert period_progress(datetime(2026, 1, 1, tzinfo=UTC), "quarter") == 0.0
    with pytest.raises(ValueError, match="timezone-aware"):
        period_key(datetime(2026, 1, 1), "month")


def test_quiet_hours_wrap_midnight_and_start_equal_to_end_means_none():
    day = datetime(2026, 3, 2, tzinfo=UTC)
    lim = ContactLimits(quiet_start_hour=22, quiet_end_hour=8)
    assert [in_quiet_hours(day.replace(hour=h), lim) for h in (21, 22, 23, 0, 7, 8)] == [
        False, True, True, True, True, False,
    ]  # fmt: skip
    kolkata = day + timedelta(hours=16, minutes=30)  # 22:00 in UTC+05:30
    assert in_quiet_hours(kolkata, lim, "Asia/Kolkata") and not in_quiet_hours(kolkata, lim)
    tokyo_default = ContactLimits(default_timezone="Asia/Tokyo")
    assert in_quiet_hours(day.replace(hour=14), tokyo_default)  # 23:00 in Tokyo
    daytime = ContactLimits(quiet_start_hour=9, quiet_end_hour=17)
    assert [in_quiet_hours(day.replace(hour=h), daytime) for h in (8, 9, 16, 17)] == [
        False, True, True, False,
    ]  # fmt: skip
    never = ContactLimits(quiet_start_hour=5, quiet_end_hour=5)
    assert not any(in_quiet_hours(day.replace(hour=h), never) for h in range(24))
    with pytest.raises(ValueError, match="timezone: unknown IANA time zone"):
        in_quiet_hours(day, lim, "Mars/Olympus_Mons")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "contract.offers=[{discount: 0, months: 0}, {discount: 0.1, months: 2}, "
            "{discount: 0.2, months: 2}]",
            "key 'contract.offers': needs exactly 4 offer levels",
        ),
        (
            "contract.offers=[{discount: 0, months: 0}, {discount: 0.1, months: 2}, "
            "{discount: 0.1, months: 2}, {discount: 0.3, months: 2}]",
            "key 'contract.offers': discounts must increase with the level",
        ),
        (
            "contract.limits.default_timezone=Mars/Olympus_Mons",
            "key 'contract.limits.default_timezone': .*unknown IANA time zone 'Mars/Olympus_Mons'",
        ),
    ],
    ids=["three levels", "not increasing", "unknown zone"],
)
def test_a_bad_contract_is_an_error_naming_the_field(override, message):
    with pytest.raises(ConfigError, match=message):
        load_profile("tiny", overrides=[override])


def test_the_env_needs_the_contract():
    book = Book(np.array([0.3]), np.full((1, 4), 0.5), np.array([1200.0]))
    config = make_env_config(book, RetentionEnvConfig(), ContactContract())
    del config["contract"]
    with pytest.raises(ValueError, match=re.escape("env_config['contract']")):
        RetentionEnv(config)


def test_serving_refuses_a_policy_trained_under_another_contract(new_offers):
    from retention.decision.policy import check_contract

    meta = {"contract": ContactContract().model_dump()}
    check_contract(meta, ContactContract())
    # Quiet hours and the absolute budget do not change what the policy observes.
    calmer = ContactContract(limits=ContactLimits(quiet_start_hour=21, budget_per_period=5.0))
    check_contract(meta, calmer)
    with pytest.raises(ValueError, match=r"contract\.offers differ"):
        check_contract(meta, new_offers)
    monthly = ContactContract(limits=ContactLimits(period="month", fatigue_cap=2))
    with pytest.raises(
        ValueError, match=r"contract\.limits\.fatigue_cap, contract\.limits\.period"
    ):
        check_contract(meta, monthly)
    with pytest.raises(ValueError, match="no contract recorded"):
        check_contract({}, ContactContract())
