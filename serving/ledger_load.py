"""A concurrent mixed load on the contact ledger, and the invariants it must keep.

Shared by the tests (small numbers) and the serving benchmark (5,000 requests): many threads decide
for a skewed population of customers (a few hot customers get many requests), across several budget
periods and time zones, with some requests retried under the same request id while the first
attempt may still be in flight. Afterwards the invariants are checked from the table itself, not
from what the threads saw: no lost decision, no period over budget, no two contacts of one customer
inside the cooldown, no customer over the fatigue cap, no contact in quiet hours, every retry
answered exactly as the first attempt.

``check_invariants`` (the re-count from the tables) and ``retry_mismatches`` are what the serving
benchmark checks too, on the ledger its transformer wrote.
"""

from __future__ import annotations

import operator
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import numpy as np

from retention.contract import days_between
from serving.ledger import MICROS, Answered, ContactLedger, LedgerDecision, Proposal

ZONES = (None, "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney")
HORIZON_DAYS = 90
_A = TypeVar("_A")


@dataclass(frozen=True)
class LedgerInvariants:
    """The ledger's limits re-counted from its own rows (money in micros, so exact)."""

    decisions: int
    contacts: int
    blocked: dict[str, int]
    spend_by_period: dict[str, float]
    budget_per_period: float
    overspent_periods: list[str]
    spend_counter_mismatches: list[str]  # the running spend differs from the rows' sum
    cooldown_violations: int
    min_gap_days: float | None  # the closest two contacts of one customer
    fatigue_violations: int
    quiet_hours_violations: int

    @property
    def ok(self) -> bool:
        return not (
            self.overspent_periods
            or self.spend_counter_mismatches
            or self.cooldown_violations
            or self.fatigue_violations
            or self.quiet_hours_violations
        )

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


def check_invariants(
    ledger: ContactLedger, timezones: Mapping[str, str | None] | None = None
) -> LedgerInvariants:
    """Re-count the limits from the ledger's rows: no period over budget (and the running spend
    equal to the rows' sum), no two contacts of one customer inside the cooldown, none over the
    fatigue cap in a period, none in quiet hours. ``timezones`` maps a request id to the zone it
    named (missing: the ledger's default zone).

    Sums and counts are the database's; only the contacts are streamed (oldest first, without
    their answers), keeping one last-contact time per customer.
    """
    limits, zones = ledger.limits, timezones or {}
    summary = ledger.summary()
    last: dict[str, datetime] = {}
    per_period: dict[tuple[str, str], int] = defaultdict(int)
    min_gap: float | None = None
    cooldown = quiet = 0
    for d in ledger.decisions(contacts_only=True):
        prev = last.get(d.customer_id)
        if prev is not None:
            gap = days_between(prev, d.decided_at)
            cooldown += gap < limits.cooldown_days
            min_gap = gap if min_gap is None else min(min_gap, gap)
        last[d.customer_id] = d.decided_at
        per_period[(d.customer_id, ledger.period_key(d.decided_at))] += 1
        quiet += ledger.in_quiet_hours(d.decided_at, zones.get(d.request_id))
    spend, counters = summary.spend_by_period_micros, summary.counter_by_period_micros
    budget = round(limits.budget_per_period * MICROS)
    return LedgerInvariants(
        decisions=summary.decisions,
        contacts=summary.contacts,
        blocked=summary.blocked,
        spend_by_period={p: s / MICROS for p, s in spend.items()},
        budget_per_period=limits.budget_per_period,
        overspent_periods=sorted(p for p, s in spend.items() if s > budget),
        spend_counter_mismatches=sorted(
            p for p in {*spend, *counters} if spend.get(p, 0) != counters.get(p, 0)
        ),
        cooldown_violations=cooldown,
        min_gap_days=None if min_gap is None else round(min_gap, 4),
        fatigue_violations=sum(n > limits.fatigue_cap for n in per_period.values()),
        quiet_hours_violations=quiet,
    )


def retry_mismatches(
    answers: Iterable[tuple[str, _A]], same: Callable[[_A, _A], bool] = operator.eq
) -> int:
    """Request ids answered more than once where a later answer is not ``same`` as the first."""
    first: dict[str, _A] = {}
    wrong: set[str] = set()
    for request_id, answer in answers:
        if request_id not in first:
            first[request_id] = answer
        elif not same(first[request_id], answer):
            wrong.add(request_id)
    return len(wrong)


@dataclass(frozen=True)
class _Request:
    request_id: str
    customer_id: str
    proposal: Proposal
    now: datetime
    timezone: str | None


def _requests(
    ledger: ContactLedger, n_requests: int, n_customers: int, seed: int, retry_share: float
) -> list[_Request]:
    rng = random.Random(seed)
    start = datetime(2026, 1, 5, tzinfo=UTC)
    hot = max(1, n_customers // 40)
    zone_of = {f"c-{k}": rng.choice(ZONES) for k in range(n_customers)}
    times = sorted(rng.uniform(0, HORIZON_DAYS * 86400) for _ in range(n_requests))
    periods = {ledger.period_key(start + timedelta(seconds=t)) for t in times}
    # Size offers so that demand left after quiet hours, cooldown and fatigue is about twice the
    # budget: the budget must bind, or "never overspent" would be checked vacuously.
    per_customer = HORIZON_DAYS / max(ledger.limits.cooldown_days, 1)
    allowed = min(n_requests * 0.85 * 0.55, n_customers * min(per_customer, 10) * 0.6)
    unit = 2 * ledger.limits.budget_per_period * len(periods) / max(allowed, 1) / 1.7
    tag = f"{seed}-{rng.getrandbits(32):08x}"
    out: list[_Request] = []
    for i, t in enumerate(times):
        if out and rng.random() < retry_share:
            # Retry a recent request verbatim: it may be racing its first attempt right now.
            out.append(out[max(0, len(out) - 1 - rng.randrange(32))])
            continue
        k = rng.randrange(hot) if rng.random() < 0.2 else rng.randrange(n_customers)
        level = rng.randrange(4)
        proposal = Proposal(
            contact=rng.random() < 0.85,
            offer_level=level,
            offer_cost=round(unit * (0.2 + level) * rng.uniform(0.5, 1.5), 4),
            followup_days=rng.choice((1, 3, 7, 14, 30)),
            arm=rng.choice(("treatment", "control")),
            propensity=rng.uniform(0.05, 1.0),
            source=rng.choice(("policy", "rules", "bau")),
        )
        now = start + timedelta(seconds=t)
        out.append(_Request(f"r-{tag}-{i}", f"c-{k}", proposal, now, zone_of[f"c-{k}"]))
    return out


def _same_answer(a: Answered, b: Answered) -> bool:
    return replace(a.decision, replay=False) == replace(b.decision, replay=False) and (
        a.response == b.response
    )


def run_ledger_load(
    ledger: ContactLedger,
    n_requests: int = 5000,
    n_customers: int = 500,
    threads: int = 16,
    seed: int = 0,
    *,
    retry_share: float = 0.05,
) -> dict[str, Any]:
    """Fire ``n_requests`` decisions from ``threads`` threads, then check the invariants.

    Each attempt goes through :meth:`ContactLedger.answer` with an answer naming the attempt, so
    a retry handed its own answer instead of the stored one shows up as a mismatch. Use a fresh
    ledger: the checks read every row of its tables. Returns counts, timing and violations;
    ``ok`` is True when every invariant holds and no request raised.
    """
    requests = _requests(ledger, n_requests, n_customers, seed, retry_share)
    answers: list[list[tuple[_Request, Answered]]] = [[] for _ in range(threads)]
    latencies: list[list[float]] = [[] for _ in range(threads)]
    errors: list[str] = []
    cursor = iter(range(len(requests)))
    lock = threading.Lock()
    barrier = threading.Barrier(threads)

    def worker(w: int) -> None:
        barrier.wait()
        while True:
            with lock:  # hand out in time order so simulated time moves forward as it would live
                i = next(cursor, None)
            if i is None:
                return
            r = requests[i]

            def respond(d: LedgerDecision, attempt: int = i) -> dict[str, Any]:
                return {"contact": d.contact, "blocked": list(d.blocked), "attempt": attempt}

            t0 = time.perf_counter()
            try:
                a = ledger.answer(
                    r.request_id, r.customer_id, r.proposal, r.now, r.timezone, respond
                )
            except Exception as exc:  # the load reports failures instead of dying on the first
                with lock:
                    errors.append(f"{r.request_id}: {type(exc).__name__}: {exc}")
                continue
            latencies[w].append(time.perf_counter() - t0)
            answers[w].append((r, a))

    pool = [threading.Thread(target=worker, args=(w,), daemon=True) for w in range(threads)]
    t0 = time.perf_counter()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - t0

    answered = [(r.request_id, a) for chunk in answers for r, a in chunk]
    replays = sum(a.decision.replay for _, a in answered)
    submitted = {r.request_id: r for r in requests}
    inv = check_invariants(ledger, {i: r.timezone for i, r in submitted.items()})
    stored = {d.request_id: d for d in ledger.decisions()}
    lost = sorted(set(submitted) - set(stored))
    # What the table holds for each id first, then every answer handed out: all must equal it.
    recorded = []
    for i in dict(answered):
        if i in stored:
            r = submitted[i]
            view = ledger.view(i, r.customer_id, r.now)
            recorded.append((i, Answered(stored[i], view.answer or {})))
    replay_mismatches = retry_mismatches([*recorded, *answered], _same_answer)

    lat = np.array([x for chunk in latencies for x in chunk] or [0.0]) * 1000
    checks = {
        "lost": len(lost),
        "errors": len(errors),
        "overspent_periods": len(inv.overspent_periods),
        "spend_counter_mismatches": len(inv.spend_counter_mismatches),
        "cooldown_violations": inv.cooldown_violations,
        "fatigue_violations": inv.fatigue_violations,
        "quiet_hours_violations": inv.quiet_hours_violations,
        "replay_mismatches": replay_mismatches,
    }
    return {
        "ok": not any(checks.values()),
        **checks,
        "backend": ledger.dialect,
        "requests": len(requests),
        "distinct_request_ids": len(submitted),
        "customers": n_customers,
        "threads": threads,
        "rows": inv.decisions,
        "replays": replays,
        "contacts": inv.contacts,
        "blocked": inv.blocked,
        "budget_bound": inv.blocked.get("budget", 0) > 0,
        "spend_by_period": inv.spend_by_period,
        "budget_per_period": inv.budget_per_period,
        "elapsed_s": round(elapsed, 3),
        "decisions_per_s": round(len(requests) / elapsed, 1) if elapsed > 0 else None,
        "latency_ms": {
            "p50": round(float(np.percentile(lat, 50)), 2),
            "p95": round(float(np.percentile(lat, 95)), 2),
            "p99": round(float(np.percentile(lat, 99)), 2),
        },
        "error_samples": errors[:5],
        "lost_samples": lost[:5],
    }
