"""The contact ledger on SQLite and PostgreSQL: every limit, idempotency, concurrency, durability.

PostgreSQL tests use ``tests.ledger_backends`` (``RETENTION_TEST_POSTGRES_URL``, default the local
server's database ``test``), each ledger in its own schema, dropped afterwards, so parallel runs
never collide. They skip when the server is unreachable, except in CI (``CI=true``).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from sqlalchemy import event

from retention.config import LedgerConfig
from retention.contract import ContactLimits
from serving.ledger import (
    Answered,
    ContactLedger,
    LedgerDecision,
    Proposal,
    RequestIdConflictError,
)
from serving.ledger_load import check_invariants, run_ledger_load
from tests.ledger_backends import PG_URL, drop_schema, new_schema_name, require_postgres

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday noon: outside quiet hours in UTC


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request) -> str:
    if request.param == "postgresql":
        require_postgres()
    return request.param


@pytest.fixture
def make_ledger(backend, tmp_path):
    made: list[ContactLedger] = []

    def make(**overrides) -> ContactLedger:
        sync = overrides.pop("sqlite_synchronous", "FULL")
        limits = ContactLimits(
            **{"budget_per_period": 1000.0, "cooldown_days": 14, "fatigue_cap": 3, **overrides}
        )
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path}/ledger-{len(made)}.sqlite"
            ledger = ContactLedger(url, limits, sqlite_synchronous=sync)
        else:
            ledger = ContactLedger(PG_URL, limits, schema=new_schema_name())
        made.append(ledger)
        return ledger

    yield make
    for ledger in made:
        ledger.close()
        if ledger.schema:
            drop_schema(ledger.schema)


def offer(cost: float = 10.0, level: int = 1, contact: bool = True) -> Proposal:
    return Proposal(contact, level, cost, 7, "treatment", 0.4, "policy")


def _same(a: LedgerDecision, b: LedgerDecision) -> bool:
    return replace(a, replay=False) == replace(b, replay=False)


# ------------------------------------------------------------------------------------- limits


def test_contact_is_recorded_and_charged(make_ledger):
    ledger = make_ledger()
    d = ledger.decide("r1", "c1", offer(12.5, level=2), T0, None)
    assert d.contact and d.blocked == () and not d.replay
    assert (d.offer_level, d.offer_cost, d.decided_at) == (2, 12.5, T0)
    assert (d.arm, d.propensity, d.source) == ("treatment", 0.4, "policy")
    assert ledger.spent(ledger.period_key(T0)) == 12.5
    assert [c.request_id for c in ledger.contacts("c1")] == ["r1"]
    assert ledger.get("r1") == replace(d, replay=True)


def test_proposal_without_contact_is_recorded_and_free(make_ledger):
    ledger = make_ledger()
    d = ledger.decide("r1", "c1", offer(50.0, contact=False), T0, None)
    assert (d.contact, d.blocked, d.offer_cost, d.offer_level) == (False, (), 0.0, 0)
    assert ledger.spent(ledger.period_key(T0)) == 0.0
    assert ledger.get("r1") is not None and ledger.contacts("c1") == []


def test_quiet_hours_wrap_midnight_on_the_customers_clock(make_ledger):
    ledger = make_ledger()
    zone = "Asia/Kolkata"  # UTC+05:30: quiet 22:00-08:00 local is 16:30-02:30 UTC
    day = datetime(2026, 3, 2, tzinfo=UTC)
    cases = [
        (day + timedelta(hours=16, minutes=29), False),  # 21:59 local
        (day + timedelta(hours=16, minutes=30), True),  # 22:00 local
        (day + timedelta(hours=19), True),  # 00:30 local, the next day
        (day + timedelta(hours=26, minutes=29), True),  # 07:59 local
        (day + timedelta(hours=26, minutes=30), False),  # 08:00 local
    ]
    for i, (now, quiet) in enumerate(cases):
        d = ledger.decide(f"r{i}", f"c{i}", offer(1.0), now, zone)
        assert d.contact is not quiet, now
        assert d.blocked == (("quiet_hours",) if quiet else ())
    # The same instant is mid-afternoon in UTC, and UTC is the configured default zone.
    assert ledger.decide("r-utc", "c-utc", offer(1.0), cases[1][0], None).contact


def test_default_timezone_applies_when_the_request_names_none(make_ledger):
    ledger = make_ledger(default_timezone="America/New_York")
    late = datetime(2026, 3, 3, 3, 30, tzinfo=UTC)  # 22:30 in New York (EST)
    assert ledger.decide("r1", "c1", offer(), late, None).blocked == ("quiet_hours",)
    assert ledger.decide("r2", "c2", offer(), late, "Asia/Tokyo").contact  # 12:30 in Tokyo


def test_bad_timezone_names_the_field_and_records_nothing(make_ledger):
    ledger = make_ledger()
    for bad in ("Mars/Olympus_Mons", "../etc/passwd"):
        with pytest.raises(ValueError, match="timezone"):
            ledger.decide("r1", "c1", offer(), T0, bad)
    assert ledger.get("r1") is None


def test_naive_time_and_bad_proposal_are_rejected(make_ledger):
    ledger = make_ledger()
    with pytest.raises(ValueError, match="now"):
        ledger.decide("r1", "c1", offer(), T0.replace(tzinfo=None), None)
    with pytest.raises(ValueError, match=r"proposal\.offer_level"):
        Proposal(True, 4, 1.0, 7, "treatment", 0.5, "policy")
    with pytest.raises(ValueError, match=r"proposal\.arm"):
        Proposal(True, 1, 1.0, 7, "both", 0.5, "policy")
    with pytest.raises(ValueError, match=r"proposal\.offer_cost"):
        Proposal(True, 1, float("nan"), 7, "control", 0.5, "rules")
    with pytest.raises(ValueError, match="request_id"):
        ledger.decide("", "c1", offer(), T0, None)


def test_cooldown_blocks_until_it_has_passed(make_ledger):
    ledger = make_ledger(cooldown_days=14, fatigue_cap=10)
    assert ledger.decide("r1", "c1", offer(), T0, None).contact
    early = ledger.decide("r2", "c1", offer(), T0 + timedelta(days=14, seconds=-1), None)
    assert (early.contact, early.blocked) == (False, ("cooldown",))
    before = ledger.decide("r3", "c1", offer(), T0 - timedelta(days=1), None)  # clock behind
    assert before.blocked == ("cooldown",)
    assert ledger.decide("r4", "c2", offer(), T0 + timedelta(hours=1), None).contact  # others free
    assert ledger.decide("r5", "c1", offer(), T0 + timedelta(days=14), None).contact


def test_fatigue_cap_counts_contacts_in_the_period(make_ledger):
    ledger = make_ledger(cooldown_days=0, fatigue_cap=2, period="month")
    for i in range(2):
        assert ledger.decide(f"r{i}", "c1", offer(), T0 + timedelta(hours=i), None).contact
    third = ledger.decide("r2", "c1", offer(), T0 + timedelta(hours=2), None)
    assert (third.contact, third.blocked) == (False, ("fatigue",))
    next_month = datetime(2026, 4, 1, 12, tzinfo=UTC)
    assert ledger.decide("r3", "c1", offer(), next_month, None).contact


def test_budget_is_never_overspent_and_resets_each_period(make_ledger):
    ledger = make_ledger(budget_per_period=100.0, cooldown_days=0, period="week")
    period = ledger.period_key(T0)
    assert ledger.decide("r1", "c1", offer(60.0), T0, None).contact
    over = ledger.decide("r2", "c2", offer(50.0), T0, None)
    assert (over.contact, over.blocked, over.offer_cost) == (False, ("budget",), 0.0)
    assert ledger.spent(period) == 60.0
    assert ledger.decide("r3", "c3", offer(40.0), T0, None).contact  # exactly the budget
    assert ledger.decide("r4", "c4", offer(0.000001), T0, None).blocked == ("budget",)
    assert ledger.decide("r5", "c5", offer(0.0, level=0), T0, None).contact  # free contact
    assert ledger.spent(period) == 100.0
    assert ledger.decide("r6", "c6", offer(60.0), T0 + timedelta(days=7), None).contact


def test_every_limit_that_applies_is_named(make_ledger):
    ledger = make_ledger(budget_per_period=10.0, fatigue_cap=1, cooldown_days=14)
    assert ledger.decide("r1", "c1", offer(10.0), T0, None).contact
    night = T0.replace(hour=23)
    d = ledger.decide("r2", "c1", offer(5.0), night, None)
    assert d.blocked == ("quiet_hours", "cooldown", "fatigue", "budget")


def test_period_keys(make_ledger):
    ledger = make_ledger(period="week")
    assert ledger.period_key(datetime(2027, 1, 1, tzinfo=UTC)) == "2026-W53"  # ISO year
    # Local New Year's Eve in New York is already January in UTC: periods are UTC.
    ny = datetime(2027, 1, 1, 2, tzinfo=UTC).astimezone(ZoneInfo("America/New_York"))
    assert ny.month == 12 and make_ledger(period="month").period_key(ny) == "2027-01"
    assert make_ledger(period="quarter").period_key(datetime(2026, 11, 5, tzinfo=UTC)) == "2026-Q4"


# --------------------------------------------------------------------------------- idempotency


def test_retry_returns_the_first_answer_and_spends_once(make_ledger):
    ledger = make_ledger()
    first = ledger.decide("r1", "c1", offer(30.0), T0, None)
    again = ledger.decide("r1", "c1", offer(99.0, level=3), T0 + timedelta(days=20), None)
    assert again.replay and _same(again, first)
    assert ledger.spent(ledger.period_key(T0)) == 30.0
    blocked = ledger.decide("r2", "c1", offer(), T0 + timedelta(days=1), None)
    assert blocked.blocked == ("cooldown",)
    # The cooldown has long passed, but the request was already answered: the answer stands.
    later = ledger.decide("r2", "c1", offer(), T0 + timedelta(days=30), None)
    assert later.replay and _same(later, blocked)
    assert len(list(ledger.decisions())) == 2
    with pytest.raises(ValueError, match="request_id"):  # never another customer's answer
        ledger.decide("r1", "c2", offer(), T0, None)


def _echo(tag: str, calls: list | None = None):
    """An answer naming who built it, so a retry handed its own answer would show."""

    def respond(d: LedgerDecision) -> dict:
        if calls is not None:
            calls.append(d)
        return {"contact": d.contact, "blocked": list(d.blocked), "by": tag, "text": "¡hola! ☺"}

    return respond


def test_the_answer_is_stored_with_the_decision_and_replayed(make_ledger):
    ledger = make_ledger()
    first = ledger.answer("r1", "c1", offer(30.0), T0, None, _echo("first"))
    assert isinstance(first, Answered) and not first.decision.replay
    assert first.response == {"contact": True, "blocked": [], "by": "first", "text": "¡hola! ☺"}
    calls: list = []
    again = ledger.answer("r1", "c1", offer(99.0, 3), T0 + timedelta(days=20), None,
                          _echo("again", calls))  # fmt: skip
    assert again.decision.replay and _same(again.decision, first.decision)
    assert again.response == first.response and calls == []  # stored, not rebuilt
    assert ledger.view("r1", "c1", T0).answer == first.response
    assert ledger.spent(ledger.period_key(T0)) == 30.0
    with pytest.raises(RequestIdConflictError, match="already used for another customer"):
        ledger.answer("r1", "c2", offer(), T0, None, _echo("other"))


def test_a_decision_recorded_without_an_answer_gets_one_answer_on_replay(make_ledger):
    # A batch run records decisions without answers; a later /retain of the same id replays it.
    ledger = make_ledger()
    d = ledger.decide("r1", "c1", offer(5.0), T0, None)
    assert ledger.view("r1", "c1", T0).recorded and ledger.view("r1", "c1", T0).answer is None
    calls: list = []
    a = ledger.answer("r1", "c1", offer(), T0, None, _echo("late", calls))
    assert a.decision.replay and _same(a.decision, d) and calls == [a.decision]
    b = ledger.answer("r1", "c1", offer(), T0, None, _echo("later"))
    assert b.response == a.response and a.response["by"] == "late"


def test_an_answer_that_is_not_strict_json_records_nothing(make_ledger):
    ledger = make_ledger()
    for bad in ({"value": float("inf")}, {"bad": object()}):
        with pytest.raises(ValueError, match="response"):
            ledger.answer("r1", "c1", offer(), T0, None, lambda d, bad=bad: bad)
    with pytest.raises(ValueError, match="response: expected a JSON object"):
        ledger.answer("r1", "c1", offer(), T0, None, lambda d: ["a list"])
    assert ledger.get("r1") is None and ledger.spent(ledger.period_key(T0)) == 0.0


def test_the_view_is_one_statement_with_history_spend_and_the_stored_answer(make_ledger):
    ledger = make_ledger(cooldown_days=1, fatigue_cap=5, period="month")
    march = datetime(2026, 3, 10, 12, tzinfo=UTC)
    ledger.decide("feb", "c1", offer(4.0, level=2), march - timedelta(days=20), None)  # February
    ledger.answer("m1", "c1", offer(3.0, level=2), march, None, _echo("m1"))
    ledger.decide("m2", "c1", offer(2.0, level=0), march + timedelta(days=2), None)
    ledger.decide("m3", "c1", offer(contact=False), march + timedelta(days=3), None)
    ledger.decide("x", "c2", offer(1.0), march, None)
    statements = _count_statements(ledger)
    later = march + timedelta(days=5)
    v = ledger.view("m1", "c1", later)
    assert statements() == 1
    assert (v.recorded, v.answer["by"], v.period) == (True, "m1", "2026-03")
    assert v.contacts_in_period == 2  # February's contact and the non-contact do not count
    assert v.last_contact == v.last_contact_in_period == march + timedelta(days=2)
    assert v.last_offer_in_period == march  # m2 was a check-in (level 0)
    assert v.spent == 6.0 and v.spent_micros == 6_000_000
    fresh = ledger.view("new", "c3", later)
    assert (fresh.recorded, fresh.answer, fresh.contacts_in_period, fresh.last_contact) == (
        False, None, 0, None)  # fmt: skip
    assert ledger.view("new", "c3", datetime(2026, 4, 1, tzinfo=UTC)).spent == 0.0
    with pytest.raises(RequestIdConflictError):
        ledger.view("m1", "c2", later)


def _count_statements(ledger: ContactLedger):
    seen: list[str] = []
    event.listen(
        ledger._base_engine, "before_cursor_execute", lambda *a: seen.append(a[2]), named=False
    )

    def count() -> int:
        n = len(seen)
        seen.clear()
        return n

    return count


def test_one_decision_is_one_short_transaction(make_ledger, backend):
    ledger = make_ledger()
    ledger.decide("warm", "c0", offer(1.0), T0, None)  # the period's budget row exists now
    begins: list = []
    event.listen(ledger._base_engine, "begin", lambda conn: begins.append(1))
    statements = _count_statements(ledger)
    ledger.answer("r1", "c1", offer(2.0), T0, None, _echo("r1"))
    # SQLite: BEGIN IMMEDIATE, the view, the insert with the answer, the spend.
    # PostgreSQL (BEGIN is the driver's): the customer lock, the view, the budget lock, insert,
    # spend.
    assert (len(begins), statements()) == (1, 4 if backend == "sqlite" else 5)
    ledger.answer("r2", "c2", offer(contact=False), T0, None, _echo("r2"))
    assert statements() == (2 if backend == "sqlite" else 1)  # no contact: no locks, no view


def test_a_block_foreseen_in_the_view_is_the_writes_verdict(make_ledger):
    ledger = make_ledger(budget_per_period=10.0, cooldown_days=14, fatigue_cap=1)
    assert ledger.decide("r1", "c1", offer(8.0), T0, None).contact
    later = T0 + timedelta(days=1)
    cases = [
        ("c1", offer(1.0), later, None, ("cooldown", "fatigue")),
        ("c2", offer(5.0), later, None, ("budget",)),
        ("c3", offer(1.0), later.replace(hour=23), None, ("quiet_hours",)),
        ("c4", offer(1.0), later, None, ()),
        ("c5", offer(50.0, contact=False), later, None, ()),
    ]
    for i, (customer, proposal, now, zone, expected) in enumerate(cases):
        view = ledger.view(f"q{i}", customer, now)
        assert ledger.foreseen_blocks(view, proposal, now, zone) == expected
        written = ledger.decide(f"q{i}", customer, proposal, now, zone)
        assert written.blocked == expected


def test_decisions_are_read_in_pages_oldest_first(make_ledger):
    ledger = make_ledger(cooldown_days=0, fatigue_cap=100)
    made = [ledger.decide(f"r{i:02d}", f"c{i % 3}", offer(0.5, contact=i % 4 != 0),
                          T0 + timedelta(minutes=i // 2), None) for i in range(11)]  # fmt: skip
    assert [d.request_id for d in ledger.decisions(page=2)] == [d.request_id for d in made]
    assert list(ledger.decisions(page=3)) == [replace(d, replay=True) for d in made]
    mine = [d.request_id for d in made if d.customer_id == "c1" and d.contact]
    assert [d.request_id for d in ledger.decisions("c1", contacts_only=True, page=1)] == mine
    assert [d.request_id for d in ledger.contacts("c1")] == mine
    summary = ledger.summary()
    assert (summary.decisions, summary.contacts) == (11, sum(d.contact for d in made))
    assert (
        summary.spend_by_period_micros
        == summary.counter_by_period_micros
        == {ledger.period_key(T0): 500_000 * summary.contacts}
    )


def test_calls_from_async_code_run_in_the_ledgers_own_threads(make_ledger):
    ledger = make_ledger()

    def where() -> str:
        return threading.current_thread().name

    async def go():
        names = await asyncio.gather(*(ledger.run(where) for _ in range(20)))
        view = await ledger.run(ledger.view, "r1", "c1", T0)
        return names, view, threading.current_thread().name

    names, view, loop_thread = asyncio.run(go())
    assert all(n.startswith("ledger") for n in names) and loop_thread not in names
    assert len(set(names)) <= ledger.pool_size and not view.recorded


# --------------------------------------------------------------------------------- concurrency


def _hammer(n: int, fn) -> tuple[list, list]:
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list = []

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results, errors


def test_200_concurrent_requests_for_one_customer_make_one_contact(make_ledger):
    ledger = make_ledger(cooldown_days=14, fatigue_cap=3)
    results, errors = _hammer(200, lambda i: ledger.decide(f"r{i}", "hot", offer(1.0), T0, None))
    assert errors == []
    assert sum(d.contact for d in results) == 1
    assert all(d.blocked == ("cooldown",) for d in results if not d.contact)
    assert len(list(ledger.decisions("hot"))) == 200 and len(ledger.contacts("hot")) == 1
    assert ledger.spent(ledger.period_key(T0)) == 1.0


def test_concurrent_retries_of_one_request_id_decide_once(make_ledger):
    ledger = make_ledger()
    results, errors = _hammer(50, lambda i: ledger.decide("r-dup", "c1", offer(7.0), T0, None))
    assert errors == []
    assert sum(not d.replay for d in results) == 1
    assert all(_same(d, results[0]) for d in results)
    assert len(list(ledger.decisions())) == 1 and ledger.spent(ledger.period_key(T0)) == 7.0


def test_concurrent_identical_requests_get_the_one_stored_answer(make_ledger):
    # Each attempt builds an answer naming itself (and a proposal of its own, as a retry that
    # re-predicted would): every one must come back with the single stored answer.
    ledger = make_ledger()
    n = 40
    results, errors = _hammer(
        n,
        lambda i: ledger.answer(
            "r-same", "c1", offer(1.0 + i % 3, level=i % 4), T0, None, _echo(f"attempt-{i}")
        ),
    )
    assert errors == []
    assert len(list(ledger.decisions())) == 1
    stored = ledger.view("r-same", "c1", T0).answer
    assert stored is not None and all(a.response == stored for a in results)
    assert all(_same(a.decision, results[0].decision) for a in results)
    assert sum(not a.decision.replay for a in results) == 1
    assert ledger.spent(ledger.period_key(T0)) == results[0].decision.offer_cost


def test_the_invariant_check_sees_a_row_written_around_the_ledger(make_ledger):
    # The load's invariants must be able to fail: a contact inserted behind the ledger's back,
    # inside the cooldown and over the budget, is reported.
    from serving.ledger import decisions

    ledger = make_ledger(budget_per_period=10.0, cooldown_days=14)
    ledger.decide("r1", "c1", offer(8.0), T0, None)
    assert check_invariants(ledger).ok
    row = {c: v for c, v in _row(ledger, "r1").items()}
    row.update(request_id="sneaky", decided_at=T0 + timedelta(days=1), cost_micros=5_000_000)
    with ledger._engine.begin() as conn:
        conn.execute(decisions.insert(), row)
    inv = check_invariants(ledger)
    assert not inv.ok
    assert inv.cooldown_violations == 1 and inv.overspent_periods == [ledger.period_key(T0)]
    assert inv.spend_counter_mismatches == [ledger.period_key(T0)]


def _row(ledger: ContactLedger, request_id: str) -> dict:
    from serving.ledger import decisions

    with ledger._engine.connect() as conn:
        return dict(
            conn.execute(sa.select(decisions).where(decisions.c.request_id == request_id))
            .one()
            ._mapping
        )


def test_batch_chunks_and_live_decisions_on_the_same_customers_keep_the_limits(make_ledger):
    # A batch chunk locks all its customers before any budget, in one order; live decisions
    # lock one customer then the budget: neither waits on the other in a cycle.
    ledger = make_ledger(budget_per_period=1000.0, cooldown_days=14)
    customers = [f"c{k}" for k in range(30)]

    def work(i: int):
        if i == 0:
            return [
                ledger.decide_many(
                    [(f"b-{c}", c, offer(1.0), None) for c in customers[s : s + 10]], T0
                )
                for s in range(0, len(customers), 10)
            ]
        return [
            ledger.answer(f"live-{i}-{c}", c, offer(1.0), T0, None, _echo(f"{i}"))
            for c in reversed(customers)
        ]

    _, errors = _hammer(5, work)
    assert errors == []
    assert all(len(ledger.contacts(c)) == 1 for c in customers)
    assert check_invariants(ledger).ok
    again = ledger.decide_many([(f"b-{c}", c, offer(1.0), None) for c in customers[:10]], T0)
    assert all(d.replay for d in again)  # re-running a batch never charges twice
    assert ledger.spent(ledger.period_key(T0)) == 30.0


_WORKER = """
import sys, time
from datetime import datetime
from pathlib import Path
from retention.contract import ContactLimits
from serving.ledger import ContactLedger, Proposal
url, schema, sync_dir, name, t0 = sys.argv[1:6]
led = ContactLedger(url, ContactLimits(), **({"schema": schema} if schema else {}))
Path(sync_dir, name).touch()
while len(list(Path(sync_dir).iterdir())) < 4:  # start together: the race is the point
    time.sleep(0.005)
p = Proposal(True, 1, 1.0, 7, "treatment", 0.5, "policy")
print(sum(led.decide(f"{name}-{i}", "hot", p, datetime.fromisoformat(t0), None).contact
          for i in range(40)))
"""


def test_processes_sharing_one_database_make_one_contact(make_ledger, tmp_path):
    # Threads of one process queue on an in-process lock for SQLite; other processes (several
    # transformer workers on one file) rely on BEGIN IMMEDIATE and the busy timeout alone.
    ledger = make_ledger()
    url = ledger.url.render_as_string(hide_password=False)
    sync = tmp_path / "sync"
    sync.mkdir()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, ledger.schema or "", str(sync), f"p{k}"]
            + [T0.isoformat()],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    assert sum(int(out) for out, _ in outs) == 1
    assert len(list(ledger.decisions("hot"))) == 160 and len(ledger.contacts("hot")) == 1


def test_mixed_concurrent_load_keeps_every_invariant(make_ledger):
    # NORMAL sync only shortens the test: durability does not change how writers are ordered.
    # Short cooldown, low cap: every limit binds somewhere, so no invariant is checked vacuously.
    ledger = make_ledger(
        budget_per_period=500.0, cooldown_days=2, fatigue_cap=2, sqlite_synchronous="NORMAL"
    )
    result = run_ledger_load(ledger, n_requests=1600, n_customers=200, threads=16, seed=7)
    assert result["ok"], result
    assert result["errors"] == 0 and result["lost"] == 0
    assert result["rows"] == result["distinct_request_ids"] and result["replays"] > 0
    assert set(result["blocked"]) == {"budget", "cooldown", "fatigue", "quiet_hours"}
    assert all(s <= 500.0 for s in result["spend_by_period"].values())


# ------------------------------------------------------------------------- durability, export


def test_decision_survives_a_crash_right_after_it_is_returned(make_ledger, backend, tmp_path):
    ledger = make_ledger()
    if backend == "sqlite":
        url = ledger.url.render_as_string(hide_password=False)
        schema = "None"
    else:
        url, schema = PG_URL, repr(ledger.schema)
    script = (
        "import os, sys\n"
        "from datetime import datetime, UTC\n"
        "from retention.contract import ContactLimits\n"
        "from serving.ledger import ContactLedger, Proposal\n"
        f"kw = {{'schema': {schema}}} if {schema} else {{}}\n"
        f"led = ContactLedger({url!r}, ContactLimits(), **kw)\n"
        "p = Proposal(True, 1, 3.0, 7, 'control', 0.5, 'rules')\n"
        f"d = led.decide('r-crash', 'c9', p, datetime.fromisoformat({T0.isoformat()!r}), None)\n"
        "print(d.contact, flush=True)\n"
        "os._exit(0)  # no close, no cleanup: as if the process died\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "True", proc.stderr[-2000:]
    stored = ledger.get("r-crash")
    assert stored is not None and stored.contact and stored.offer_cost == 3.0
    assert ledger.spent(ledger.period_key(T0)) == 3.0


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_holds_every_decision_with_arm_and_propensity(make_ledger, tmp_path, suffix):
    ledger = make_ledger(budget_per_period=15.0)
    ledger.decide("r1", "c1", offer(10.0, level=2), T0, None)
    ledger.decide("r2", "c2", Proposal(True, 3, 9.0, 14, "control", 0.25, "rules"), T0, None)
    ledger.decide("r3", "c3", offer(contact=False), T0 + timedelta(hours=1), None)
    ledger.answer("r1", "c1", offer(), T0, None, _echo("r1"))  # a replay that stores an answer
    out = ledger.export_decisions(tmp_path / f"decisions{suffix}")
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out, keep_default_na=False)
    assert list(df["request_id"]) == ["r1", "r2", "r3"]
    assert list(df["arm"]) == ["treatment", "control", "treatment"]
    assert list(df["propensity"]) == [0.4, 0.25, 0.4]
    assert [bool(x) for x in df["contact"]] == [True, False, False]
    assert [bool(x) for x in df["proposed_contact"]] == [True, True, False]
    assert list(df["proposed_offer_level"]) == [2, 3, 1]
    assert list(df["offer_cost"]) == [10.0, 0.0, 0.0]
    assert list(df["proposed_offer_cost"]) == [10.0, 9.0, 10.0]
    assert list(df["blocked"]) == ["", "budget", ""]
    assert [bool(x) for x in df["completed"]] == [True, False, False]
    assert list(df["source"]) == ["policy", "rules", "policy"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".decisions")] == []


def test_export_of_an_empty_ledger_has_the_header(make_ledger, tmp_path):
    out = make_ledger().export_decisions(tmp_path / "empty.csv")
    assert out.read_text().splitlines()[0].startswith("request_id,customer_id,period")


def _served(churn: float | None, versions: dict[str, str]):
    """An answer as the transformer stores it: the risk score (None: risk was down) and the
    versions of the models it served."""

    def respond(d: LedgerDecision) -> dict:
        return {"risk": {"churn_probability": churn}, "models": versions, "by": d.request_id}

    return respond


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_export_carries_the_served_score_and_the_deciding_release(make_ledger, tmp_path, suffix):
    ledger = make_ledger()
    rel = "20261201T000000Z-abc123"
    served = offer()
    ledger.answer("r1", "c1", replace(served, churn_probability=0.25, release=rel), T0, None,
                  _echo("r1"))  # fmt: skip
    # Risk was down: no score; an older release; a batch decision without an answer.
    ledger.answer("r2", "c2", replace(served, release=rel), T0 + timedelta(minutes=1), None,
                  _echo("r2"))  # fmt: skip
    ledger.decide("r3", "c3", replace(served, churn_probability=0.5, release="old"),
                  T0 + timedelta(minutes=2), None)  # fmt: skip
    ledger.decide("r4", "c4", offer(contact=False), T0 + timedelta(minutes=3), None)
    out = ledger.export_decisions(tmp_path / f"decisions{suffix}")
    df = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    assert list(df.columns[-2:]) == ["release", "churn_probability"]
    assert df["release"].where(df["release"].notna(), None).tolist() == [rel, rel, "old", None]
    churn = df["churn_probability"].tolist()
    assert churn[0] == 0.25 and pd.isna(churn[1]) and churn[2] == 0.5 and pd.isna(churn[3])
    one = ledger.export_decisions(tmp_path / f"one{suffix}", release=rel)
    df = pd.read_parquet(one) if suffix == ".parquet" else pd.read_csv(one)
    assert list(df["request_id"]) == ["r1", "r2"]
    if suffix == ".parquet":  # one schema whatever the chunk: a null release is still text
        assert str(pq.read_schema(out).field("release").type) == "string"
    with pytest.raises(ValueError, match=r"proposal\.churn_probability"):
        replace(served, churn_probability=1.5)
    with pytest.raises(ValueError, match=r"proposal\.release"):
        replace(served, release="")


def test_export_streams_without_reading_the_stored_answers(make_ledger, tmp_path):
    ledger = make_ledger()
    for i in range(3):
        ledger.answer(f"r{i}", f"c{i}", replace(offer(), churn_probability=0.1, release="R"),
                      T0 + timedelta(hours=i), None, _echo(f"r{i}"))  # fmt: skip
    seen: list[tuple[str, dict]] = []

    def record(conn, cursor, statement, params, context, executemany):
        seen.append((statement, dict(context.execution_options)))

    event.listen(ledger._base_engine, "before_cursor_execute", record)
    try:
        ledger.export_decisions(tmp_path / "decisions.parquet")
    finally:
        event.remove(ledger._base_engine, "before_cursor_execute", record)
    (select, options) = next((s, o) for s, o in seen if "FROM" in s and "ledger_decisions" in s)
    assert "response" not in select and "churn_probability" in select
    assert options.get("yield_per") == 5000 and options.get("stream_results")


def test_an_older_ledger_gains_the_columns_filled_from_its_answers(make_ledger, backend):
    """A ledger made before the release and churn_probability columns: opening it adds them
    and fills them from the stored answers, in one transaction; new decisions fill them."""
    ledger = make_ledger()
    ledger.answer("a1", "c1", offer(), T0, None, _served(0.3, {"risk": "R1", "accept": "R1"}))
    ledger.answer("a2", "c2", offer(), T0, None, _served(None, {"risk": "R1", "policy": "R1"}))
    ledger.answer("a3", "c3", offer(), T0, None, _served(0.7, {"risk": "R1", "accept": "R2"}))
    ledger.decide("a4", "c4", offer(contact=False), T0, None)  # no answer to read
    table = f'"{ledger.schema}".ledger_decisions' if ledger.schema else "ledger_decisions"
    with ledger._base_engine.begin() as conn:  # what the older version created
        for col in ("release", "churn_probability"):
            conn.exec_driver_sql(f'ALTER TABLE {table} DROP COLUMN "{col}"')
        names = {c["name"] for c in sa.inspect(conn).get_columns("ledger_decisions",
                                                                  ledger.schema)}  # fmt: skip
    assert "release" not in names
    ledger.close()
    reopened = ContactLedger(ledger.url, ledger.limits, schema=ledger.schema)
    try:
        reopened.decide("a5", "c5", replace(offer(contact=False), churn_probability=0.9,
                                              release="R3"), T0, None)  # fmt: skip
        with reopened._read() as conn:
            rows = conn.execute(
                sa.text(f"SELECT request_id, release, churn_probability FROM {table} "
                        "ORDER BY request_id")
            ).all()  # fmt: skip
        assert [tuple(r) for r in rows] == [
            ("a1", "R1", 0.3),
            ("a2", "R1", None),  # risk was down: no score
            ("a3", None, 0.7),  # versions of two releases: no one release served it
            ("a4", None, None),
            ("a5", "R3", 0.9),
        ]
        # A second opening finds nothing to migrate.
        ContactLedger(ledger.url, ledger.limits, schema=ledger.schema).close()
    finally:
        reopened.close()


def test_release_of_is_the_version_every_served_model_shares():
    from serving.ledger import release_of

    assert release_of({"risk": "R1", "accept": "R1", "writer": None}) == "R1"
    assert release_of({"risk": "R1", "accept": "R2"}) is None
    assert release_of({}) is None


# ------------------------------------------------------------------------------- configuration


def test_bad_urls_name_the_field(tmp_path):
    cfg = ContactLimits()
    for url in ("not a url", "mysql://u@h/db", "sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ValueError, match=r"serving\.ledger\.url"):
            ContactLedger(url, cfg)
    with pytest.raises(ValueError, match=r"serving\.ledger\.url"):
        ContactLedger(f"sqlite:///{tmp_path}/missing/dir/ledger.sqlite", cfg)


def test_for_store_uses_a_sqlite_file_in_a_local_store(tmp_path):
    limits = ContactLimits()
    with ContactLedger.for_store(tmp_path / "store", LedgerConfig(), limits) as ledger:
        assert ledger.dialect == "sqlite"
        ledger.decide("r1", "c1", offer(), T0, None)
    assert (tmp_path / "store" / "ledger.sqlite").is_file()
    with pytest.raises(ValueError, match=r"serving\.ledger\.url"):
        ContactLedger.for_store("gs://bucket/models", LedgerConfig(), limits)
    explicit = f"sqlite:///{tmp_path}/explicit.sqlite"
    with ContactLedger.for_store(
        "gs://bucket/models", LedgerConfig(url=explicit), limits
    ) as ledger:
        assert ledger.url.database == f"{tmp_path}/explicit.sqlite"


def test_the_pool_is_sized_by_the_profile(tmp_path):
    cfg = LedgerConfig(pool_size=3)
    with ContactLedger.for_store(tmp_path, cfg, ContactLimits()) as ledger:
        assert ledger.pool_size == 3 and ledger._base_engine.pool.size() == 3
    with pytest.raises(ValueError, match="pool_size"):
        ContactLedger(f"sqlite:///{tmp_path}/x.sqlite", ContactLimits(), pool_size=0)


def test_unreachable_postgres_names_the_field():
    from serving.ledger import LedgerUnavailableError

    with pytest.raises(LedgerUnavailableError, match=r"serving\.ledger\.url"):
        ContactLedger("postgresql://nobody@127.0.0.1:1/none", ContactLimits())
