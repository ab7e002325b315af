"""The contact ledger: the one place where serving-time contact limits are enforced.

Every decision the transformer makes goes through :meth:`ContactLedger.decide`, which in ONE
database transaction

1. returns the recorded answer if the request id was seen before (a retry never re-checks or
   re-spends: the first answer is the answer),
2. checks quiet hours, cooldown, the fatigue cap and the period budget: the contact contract's
   limits (``retention.contract.ContactLimits``), judged by ``retention.contract.breaches``, the
   same function the simulated env calls,
3. records the decision row and, for a contact, adds its cost to the period's spend,

and commits before it returns, so an answer that reached a caller is always on disk.

Concurrency. Several transformer replicas (and many threads of one) decide at once, so the checks
and the write must not interleave. PostgreSQL: the transaction locks the customer's row (two
requests for one customer serialize; two customers do not) and then, only when the contact is still
allowed, the period's budget row, always in that order so no two transactions wait on each other in
a cycle. SQLite has one writer at a time anyway (WAL lets readers go on); ``BEGIN IMMEDIATE`` takes
the write lock at the start, so the reads that feed a check cannot go stale before the write lands,
and threads of one process queue on a lock in front of it rather than in SQLite's busy handler.
Lost races (deadlock, serialization failure, a busy SQLite file, a duplicate request id inserted by
a racing retry) are retried: the transaction is idempotent by request id, so a retry is safe.

Money is stored as integer millionths so that "the budget is never overspent" is exact: float sums
depend on the order of their terms, so the running spend and a re-count of the rows could disagree.
The budget check runs in micros too (spend, cost and budget all integers).
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from retention import contract
from retention.config import LedgerConfig
from retention.contract import LIMITS, N_LEVELS, ContactHistory, ContactLimits, aware_utc
from retention.fileio import atomic_path

log = logging.getLogger(__name__)

URL_FIELD = "serving.ledger.url"
SQLITE_FILE = "ledger.sqlite"
ARMS = ("treatment", "control")
SOURCES = ("policy", "rules", "bau")
BLOCK_REASONS = LIMITS
MICROS = 1_000_000
MAX_ID_LENGTH = 200
MAX_ATTEMPTS = 12
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Proposal:
    """What the policy (or the fallback rules) wants to do; the ledger may still say no.

    ``offer_cost`` is what the budget is charged if the contact is made (already the expected
    cost); ``propensity`` is the acting policy's probability of this action, kept for off-policy
    evaluation of later policies on the logged decisions.
    """

    contact: bool
    offer_level: int
    offer_cost: float
    followup_days: int
    arm: str
    propensity: float
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.contact, bool):
            raise ValueError(f"proposal.contact: expected a bool, got {self.contact!r}")
        if not _is_int(self.offer_level) or not 0 <= self.offer_level < N_LEVELS:
            raise ValueError(
                f"proposal.offer_level: expected 0..{N_LEVELS - 1}, got {self.offer_level!r}"
            )
        if not _is_number(self.offer_cost) or self.offer_cost < 0:
            raise ValueError(
                f"proposal.offer_cost: expected a finite amount >= 0, got {self.offer_cost!r}"
            )
        if not _is_int(self.followup_days) or self.followup_days < 0:
            raise ValueError(
                f"proposal.followup_days: expected an integer >= 0, got {self.followup_days!r}"
            )
        if self.arm not in ARMS:
            raise ValueError(f"proposal.arm: expected one of {ARMS}, got {self.arm!r}")
        if not _is_number(self.propensity) or not 0 <= self.propensity <= 1:
            raise ValueError(f"proposal.propensity: expected 0..1, got {self.propensity!r}")
        if self.source not in SOURCES:
            raise ValueError(f"proposal.source: expected one of {SOURCES}, got {self.source!r}")


@dataclass(frozen=True)
class LedgerDecision:
    """The recorded, final decision for one request id.

    When ``contact`` is False nothing is charged: ``offer_level`` is 0 and ``offer_cost`` 0.0 (the
    proposal itself stays in the table for the export). ``blocked`` names the limits that turned a
    proposed contact into no contact, in the order quiet_hours, cooldown, fatigue, budget.
    ``replay`` is True when this request id had already been decided: the fields are the first
    answer's, ``response`` its completed JSON if :meth:`ContactLedger.complete` was called.
    """

    request_id: str
    customer_id: str
    contact: bool
    offer_level: int
    offer_cost: float
    followup_days: int
    blocked: tuple[str, ...]
    arm: str
    propensity: float
    source: str
    decided_at: datetime
    response: dict[str, Any] | None
    replay: bool


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def _to_micros(amount: float) -> int:
    return round(amount * MICROS)


def _check_id(field: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: expected a non-empty string, got {value!r}")
    if len(value) > MAX_ID_LENGTH:
        raise ValueError(f"{field}: longer than {MAX_ID_LENGTH} characters")
    return value


# -------------------------------------------------------------------------------------- tables


class UTCDateTime(sa.TypeDecorator):
    """Aware UTC datetimes in and out on every backend.

    SQLite keeps no offset and hands back naive values; PostgreSQL would read a naive value in the
    session's zone. Normalising here keeps cooldown arithmetic free of either surprise.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        value = aware_utc(value, "datetime")
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, str):  # aggregates over the column on SQLite may skip the type
            value = datetime.fromisoformat(value)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = sa.MetaData()

decisions = sa.Table(
    "ledger_decisions",
    metadata,
    sa.Column("request_id", sa.String(MAX_ID_LENGTH), primary_key=True),
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), nullable=False),
    sa.Column("period", sa.String(16), nullable=False),
    sa.Column("decided_at", UTCDateTime, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    sa.Column("proposed_contact", sa.Boolean, nullable=False),
    sa.Column("proposed_offer_level", sa.SmallInteger, nullable=False),
    sa.Column("proposed_cost_micros", sa.BigInteger, nullable=False),
    sa.Column("contact", sa.Boolean, nullable=False),
    sa.Column("offer_level", sa.SmallInteger, nullable=False),
    sa.Column("cost_micros", sa.BigInteger, nullable=False),
    sa.Column("followup_days", sa.Integer, nullable=False),
    sa.Column("blocked", sa.String(64), nullable=False),
    sa.Column("arm", sa.String(16), nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("source", sa.String(16), nullable=False),
    sa.Column("response", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("completed_at", UTCDateTime, nullable=True),
    sa.Index("ix_ledger_decisions_customer", "customer_id", "contact"),
)

# One row per period: the lock that serializes spending, and the running spend.
budgets = sa.Table(
    "ledger_budgets",
    metadata,
    sa.Column("period", sa.String(16), primary_key=True),
    sa.Column("spent_micros", sa.BigInteger, nullable=False, default=0, server_default="0"),
    sa.Column("contacts", sa.Integer, nullable=False, default=0, server_default="0"),
)

# One row per customer: only a lock, so requests for one customer serialize and others do not.
customers = sa.Table(
    "ledger_customers",
    metadata,
    sa.Column("customer_id", sa.String(MAX_ID_LENGTH), primary_key=True),
)


# Built once: the decision path runs them thousands of times a second, and constructing and
# cache-keying a statement per call cost more CPU than executing it.
_b = sa.bindparam
_DECISION_BY_ID = sa.select(decisions).where(decisions.c.request_id == _b("request_id"))
_CUSTOMER_HISTORY = sa.select(
    sa.func.max(decisions.c.decided_at),
    sa.func.coalesce(sa.func.sum(sa.case((decisions.c.period == _b("p_period"), 1), else_=0)), 0),
).where(decisions.c.customer_id == _b("p_customer"), decisions.c.contact.is_(True))
_LOCK_CUSTOMER = sa.select(customers).where(customers.c.customer_id == _b("key")).with_for_update()
_LOCK_BUDGET = sa.select(budgets).where(budgets.c.period == _b("key")).with_for_update()
_READ_SPENT = sa.select(budgets.c.spent_micros).where(budgets.c.period == _b("key"))
_ADD_SPEND = (
    budgets.update()
    .where(budgets.c.period == _b("key"))
    .values(spent_micros=budgets.c.spent_micros + _b("cost"), contacts=budgets.c.contacts + 1)
)


# -------------------------------------------------------------------------------------- engine


def _parse_url(url: str | sa.URL) -> sa.URL:
    try:
        parsed = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError, TypeError) as exc:
        raise ValueError(f"{URL_FIELD}: not a database URL ({exc})") from None
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise ValueError(
            f"{URL_FIELD}: unsupported database {backend!r} in "
            f"{parsed.render_as_string(hide_password=True)}; use sqlite:///PATH or "
            "postgresql+psycopg://USER@HOST/DB"
        )
    if backend == "postgresql" and parsed.drivername == "postgresql":
        # Plain postgresql:// would mean psycopg2, which the serving extra does not install.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite":
        db = parsed.database or ""
        if db in ("", ":memory:") or "mode=memory" in db or parsed.query.get("mode") == "memory":
            raise ValueError(
                f"{URL_FIELD}: an in-memory SQLite database is private to one connection, so "
                "the pooled ledger would lose decisions; give a file path (sqlite:///PATH)"
            )
        if not db.startswith("file:") and not Path(db).parent.is_dir():
            raise ValueError(f"{URL_FIELD}: folder of the SQLite file does not exist: {db}")
    return parsed


def _sqlite_events(engine: sa.Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        # Take BEGIN away from the sqlite3 module so that _begin below decides its kind.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        # WAL (persistent in the file): readers never block the writer nor the writer them. It must
        # be set outside a transaction, which only this hook guarantees.
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA synchronous={synchronous}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get("ledger_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True  # idempotency makes a retry safe even if the commit had landed
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40001", "40P01", "23505", "55P03"):
        return True  # serialization failure, deadlock, racing duplicate insert, lock not available
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text or "unique constraint" in text


class LedgerUnavailableError(ConnectionError):
    """The ledger database could not be reached; the message names ``serving.ledger.url``."""


# -------------------------------------------------------------------------------------- ledger


class ContactLedger:
    """Thread-safe contact ledger over a pooled SQLAlchemy engine (SQLite file or PostgreSQL).

    ``schema`` (PostgreSQL only) puts the tables in their own schema, created if missing: tests and
    several environments can share one database without seeing each other's rows.
    ``sqlite_synchronous``: FULL (default) syncs every commit to disk, so an answered decision
    survives power loss as well as a crash; NORMAL survives a process crash only, for less latency.
    """

    def __init__(
        self,
        url: str | sa.URL,
        limits: ContactLimits,
        *,
        schema: str | None = None,
        pool_size: int = 8,
        max_overflow: int = 24,
        busy_timeout_s: float = 30.0,
        sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if not isinstance(limits, ContactLimits):
            raise ValueError(
                f"limits: expected the contract's ContactLimits, got {type(limits).__name__}"
            )
        self.limits = limits
        self.url = _parse_url(url)
        self.dialect = self.url.get_backend_name()
        self._budget_micros = _to_micros(limits.budget_per_period)
        if schema is not None and (self.dialect != "postgresql" or not _SCHEMA_NAME.match(schema)):
            raise ValueError(
                f"schema: a lower-case SQL identifier, PostgreSQL only; got {schema!r} "
                f"for {self.dialect}"
            )
        self.schema = schema
        kwargs: dict[str, Any] = {"pool_size": pool_size, "max_overflow": max_overflow}
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
        else:
            kwargs["pool_pre_ping"] = True  # Cloud SQL proxies drop idle connections
            kwargs["connect_args"] = {"connect_timeout": 10}
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ValueError(f"{URL_FIELD}: no driver for {self.url.drivername} ({exc})") from None
        if self.dialect == "sqlite":
            if sqlite_synchronous not in ("FULL", "NORMAL"):
                raise ValueError(f"sqlite_synchronous: FULL or NORMAL, got {sqlite_synchronous!r}")
            _sqlite_events(engine, sqlite_synchronous)
        # SQLite admits one writer at a time; threads of this process queue on a lock instead of
        # in SQLite's busy handler, whose growing sleeps turn contention into second-long stalls.
        # Other processes on the same file still wait in the busy handler (busy_timeout_s).
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.dialect == "sqlite" else nullcontext()
        )
        self._base_engine = engine
        self._engine = (
            engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        )
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        self._new_customer = (
            insert(customers).values(customer_id=_b("key")).on_conflict_do_nothing()
        )
        self._new_budget = insert(budgets).values(period=_b("key")).on_conflict_do_nothing()
        try:
            self._create_tables()
        except sa.exc.OperationalError as exc:
            engine.dispose()
            raise LedgerUnavailableError(
                f"{URL_FIELD}: cannot open the ledger at "
                f"{self.url.render_as_string(hide_password=True)}: {exc.orig}"
            ) from None

    @classmethod
    def for_store(
        cls, model_store: str | Path, cfg: LedgerConfig, limits: ContactLimits, **kwargs: Any
    ) -> ContactLedger:
        """The ledger a deployment uses: ``cfg.url`` if set, else a SQLite file in the model store;
        it enforces ``limits`` (the profile's ``contract.limits``).

        A SQLite file cannot live in a bucket, so a remote model store needs an explicit URL.
        """
        if cfg.url:
            return cls(cfg.url, limits, **kwargs)
        store = str(model_store)
        if "://" in store and not store.startswith("file://"):
            raise ValueError(
                f"{URL_FIELD}: model_store {store!r} is not a local folder, so there is no place "
                "for the SQLite ledger; set serving.ledger.url (postgresql+psycopg://USER@HOST/DB)"
            )
        folder = Path(store.removeprefix("file://")).resolve()
        folder.mkdir(parents=True, exist_ok=True)
        return cls(
            sa.URL.create("sqlite+pysqlite", database=str(folder / SQLITE_FILE)), limits, **kwargs
        )

    def _create_tables(self) -> None:
        if self.dialect == "sqlite":
            with self._engine.begin() as conn:  # BEGIN IMMEDIATE: one creator at a time
                metadata.create_all(conn)
            return
        with self._engine.begin() as conn:
            # Replicas starting together would race on CREATE TABLE; one advisory lock orders them.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(0x4C454447)))
            if self.schema:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            metadata.create_all(conn)

    def close(self) -> None:
        self._base_engine.dispose()

    def __enter__(self) -> ContactLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---------------------------------------------------------------------------- transactions

    def _write(self, fn: Callable[[Connection], _T]) -> _T:
        """Run ``fn`` in one write transaction, retrying lost races with jittered backoff."""
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                with self._write_lock, self._engine.begin() as conn:
                    return fn(conn)
            except sa.exc.DBAPIError as exc:
                if attempt == MAX_ATTEMPTS or not _retryable(exc):
                    raise
                log.debug(
                    "ledger: retrying after %s (attempt %d)", type(exc.orig).__name__, attempt
                )
                time.sleep(random.uniform(0, min(0.2, 0.002 * 2**attempt)))
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        with self._engine.connect() as conn:
            conn = conn.execution_options(ledger_read_only=True)
            with conn.begin():
                yield conn

    @staticmethod
    def _lock_row(conn: Connection, lock: sa.Select, create: sa.Executable, key: str) -> Row:
        """Lock and return the row ``key`` (SELECT ... FOR UPDATE), creating it if missing.

        Selecting first costs one statement for a known key; a new key needs the insert (ON
        CONFLICT DO NOTHING, which waits for a racing insert of the same key to finish) and a second
        select to lock it.
        """
        row = conn.execute(lock, {"key": key}).first()
        if row is None:
            conn.execute(create, {"key": key})
            row = conn.execute(lock, {"key": key}).one()
        return row

    # ------------------------------------------------------------------------------- decisions

    def period_key(self, now: datetime) -> str:
        """The budget period containing ``now``, in UTC: ``2026-W07``, ``2026-02`` or ``2026-Q1``."""
        return contract.period_key(now, self.limits.period)

    def in_quiet_hours(self, now: datetime, timezone: str | None = None) -> bool:
        """Whether ``now`` is inside the contract's quiet hours on the customer's local clock
        (``timezone``, else ``contract.limits.default_timezone``)."""
        return contract.in_quiet_hours(now, self.limits, timezone)

    def decide(
        self,
        request_id: str,
        customer_id: str,
        proposal: Proposal,
        now: datetime,
        timezone: str | None = None,
    ) -> LedgerDecision:
        """Check the limits and record the decision in one transaction; replay a known request id.

        ``timezone`` is the customer's IANA zone (``Europe/Berlin``); none means
        ``contract.limits.default_timezone``. The decision is committed before this returns.
        A request id seen before for a different customer is a ValueError, not a replay.
        """
        _check_id("request_id", request_id)
        _check_id("customer_id", customer_id)
        if not isinstance(proposal, Proposal):
            raise ValueError(f"proposal: expected a Proposal, got {type(proposal).__name__}")
        now = aware_utc(now)
        quiet = self.in_quiet_hours(now, timezone)  # validates the zone before any write
        period = self.period_key(now)
        return self._write(
            lambda conn: self._decide(conn, request_id, customer_id, proposal, now, period, quiet)
        )

    def _decide(
        self,
        conn: Connection,
        request_id: str,
        customer_id: str,
        proposal: Proposal,
        now: datetime,
        period: str,
        quiet: bool,
    ) -> LedgerDecision:
        row = conn.execute(_DECISION_BY_ID, {"request_id": request_id}).first()
        if row is not None:
            if row.customer_id != customer_id:
                # Replaying would hand one customer's answer (and message) to another: a client bug.
                raise ValueError(
                    f"request_id: {request_id!r} was already used for another customer"
                )
            return _from_row(row, replay=True)

        cost = _to_micros(proposal.offer_cost)
        blocked: tuple[str, ...] = ()
        if proposal.contact:
            self._lock_row(conn, _LOCK_CUSTOMER, self._new_customer, customer_id)
            last, n_period = conn.execute(
                _CUSTOMER_HISTORY, {"p_customer": customer_id, "p_period": period}
            ).one()
            # A contact stamped later than `now` (a replica's clock ahead) gives a negative gap,
            # which the cooldown also blocks: two contacts never land closer than the cooldown.
            since = None if last is None else contract.days_between(last, now)

            def verdict(spent: int, charge: int) -> tuple[str, ...]:
                # In micros, spend, cost and budget alike: the budget comparison is exact.
                history = ContactHistory(since, int(n_period), spent)
                return contract.breaches(
                    history, charge, self.limits, budget=self._budget_micros, quiet=quiet
                )

            if verdict(0, 0):  # blocked already: no spend follows, reading unlocked is enough
                spent = conn.execute(_READ_SPENT, {"key": period}).scalar()
            else:
                spent = self._lock_row(conn, _LOCK_BUDGET, self._new_budget, period).spent_micros
            blocked = verdict(spent or 0, cost)

        contact = proposal.contact and not blocked
        values = {
            "request_id": request_id,
            "customer_id": customer_id,
            "period": period,
            "decided_at": now,
            "recorded_at": datetime.now(UTC),
            "proposed_contact": proposal.contact,
            "proposed_offer_level": proposal.offer_level,
            "proposed_cost_micros": cost,
            "contact": contact,
            "offer_level": proposal.offer_level if contact else 0,
            "cost_micros": cost if contact else 0,
            "followup_days": proposal.followup_days,
            "blocked": ",".join(blocked),
            "arm": proposal.arm,
            "propensity": float(proposal.propensity),
            "source": proposal.source,
        }
        # A racing retry of this request id makes this insert fail; _write retries and replays.
        conn.execute(decisions.insert(), values)
        if contact:
            conn.execute(_ADD_SPEND, {"key": period, "cost": cost})
        return LedgerDecision(
            request_id=request_id,
            customer_id=customer_id,
            contact=contact,
            offer_level=values["offer_level"],
            offer_cost=values["cost_micros"] / MICROS,
            followup_days=proposal.followup_days,
            blocked=tuple(blocked),
            arm=proposal.arm,
            propensity=float(proposal.propensity),
            source=proposal.source,
            decided_at=now,
            response=None,
            replay=False,
        )

    def complete(self, request_id: str, response: dict[str, Any]) -> bool:
        """Store the final JSON answer of a decided request; only the first completion is kept.

        Returns True when this call stored it, False when an earlier completion already had.
        """
        _check_id("request_id", request_id)
        if not isinstance(response, dict):
            raise ValueError(f"response: expected a JSON object, got {type(response).__name__}")
        try:
            json.dumps(response, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"response: not JSON-serialisable ({exc})") from None

        def tx(conn: Connection) -> bool:
            done = conn.execute(
                decisions.update()
                .where(decisions.c.request_id == request_id, decisions.c.response.is_(None))
                .values(response=response, completed_at=datetime.now(UTC))
            )
            if done.rowcount == 1:
                return True
            known = conn.execute(
                sa.select(decisions.c.request_id).where(decisions.c.request_id == request_id)
            ).first()
            if known is None:
                raise KeyError(f"request_id {request_id!r}: no decision recorded to complete")
            return False

        return self._write(tx)

    # ---------------------------------------------------------------------------------- reading

    def get(self, request_id: str) -> LedgerDecision | None:
        """The recorded decision of ``request_id`` (``replay`` True), or None."""
        with self._read() as conn:
            row = conn.execute(
                sa.select(decisions).where(decisions.c.request_id == request_id)
            ).first()
        return None if row is None else _from_row(row, replay=True)

    def spent(self, period: str) -> float:
        """Currency spent in ``period`` (a :meth:`period_key`)."""
        with self._read() as conn:
            micros = conn.execute(
                sa.select(budgets.c.spent_micros).where(budgets.c.period == period)
            ).scalar()
        return (micros or 0) / MICROS

    def contacts(self, customer_id: str) -> list[LedgerDecision]:
        """The contacts made with one customer, oldest first."""
        return [d for d in self.decisions(customer_id) if d.contact]

    def decisions(self, customer_id: str | None = None) -> list[LedgerDecision]:
        """Every recorded decision (of one customer, if given), oldest first."""
        stmt = sa.select(decisions).order_by(decisions.c.decided_at, decisions.c.request_id)
        if customer_id is not None:
            stmt = stmt.where(decisions.c.customer_id == customer_id)
        with self._read() as conn:
            return [_from_row(r, replay=True) for r in conn.execute(stmt)]

    def export_decisions(self, path: str | Path) -> Path:
        """Write every decision, with arm, propensity and the original proposal, for off-policy
        evaluation: Parquet if ``path`` ends in ``.parquet``/``.pq``, else CSV.

        Streams in chunks and moves a finished temporary file into place, so a reader never sees
        half an export.
        """
        import pandas as pd
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = Path(path)
        parquet = path.suffix.lower() in (".parquet", ".pq")
        stmt = sa.select(*[decisions.c[c] for c in EXPORT_SOURCE]).order_by(
            decisions.c.decided_at, decisions.c.request_id
        )
        with atomic_path(path) as tmp, self._read() as conn:
            writer: pq.ParquetWriter | None = None
            wrote_header = False
            result = conn.execution_options(yield_per=5000).execute(stmt)
            for chunk in result.partitions():
                frame = _export_frame(pd.DataFrame(chunk, columns=list(EXPORT_SOURCE)))
                if parquet:
                    table = pa.Table.from_pandas(frame, preserve_index=False)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                else:
                    frame.to_csv(tmp, mode="a", header=not wrote_header, index=False)
                    wrote_header = True
            if parquet:
                if writer is None:
                    empty = _export_frame(pd.DataFrame(columns=list(EXPORT_SOURCE)))
                    pq.write_table(pa.Table.from_pandas(empty, preserve_index=False), tmp)
                else:
                    writer.close()
            elif not wrote_header:
                pd.DataFrame(columns=list(EXPORT_COLUMNS)).to_csv(tmp, index=False)
        return path


EXPORT_SOURCE = (
    "request_id",
    "customer_id",
    "period",
    "decided_at",
    "arm",
    "source",
    "propensity",
    "proposed_contact",
    "proposed_offer_level",
    "proposed_cost_micros",
    "contact",
    "offer_level",
    "cost_micros",
    "followup_days",
    "blocked",
    "completed_at",
)
EXPORT_COLUMNS = (
    *EXPORT_SOURCE[:9],
    "proposed_offer_cost",
    "contact",
    "offer_level",
    "offer_cost",
    "followup_days",
    "blocked",
    "completed",
)


def _export_frame(frame: Any) -> Any:
    import pandas as pd

    out = frame.copy()
    out["decided_at"] = pd.to_datetime(out["decided_at"], utc=True)
    out["proposed_offer_cost"] = out.pop("proposed_cost_micros").astype("int64") / MICROS
    out["offer_cost"] = out.pop("cost_micros").astype("int64") / MICROS
    out["completed"] = out.pop("completed_at").notna()
    for col in ("proposed_contact", "contact"):
        out[col] = out[col].astype(bool)
    for col in ("proposed_offer_level", "offer_level", "followup_days"):
        out[col] = out[col].astype("int64")
    out["propensity"] = out["propensity"].astype(float)
    return out[list(EXPORT_COLUMNS)]


def _from_row(row: Row, *, replay: bool) -> LedgerDecision:
    m = row._mapping
    return LedgerDecision(
        request_id=m["request_id"],
        customer_id=m["customer_id"],
        contact=bool(m["contact"]),
        offer_level=int(m["offer_level"]),
        offer_cost=int(m["cost_micros"]) / MICROS,
        followup_days=int(m["followup_days"]),
        blocked=tuple(b for b in m["blocked"].split(",") if b),
        arm=m["arm"],
        propensity=float(m["propensity"]),
        source=m["source"],
        decided_at=m["decided_at"],
        response=m["response"],
        replay=replay,
    )
