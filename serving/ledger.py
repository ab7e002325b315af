"""The contact ledger: the one place where serving-time contact limits are enforced.

A decision costs the ledger one read and one write transaction.

* :meth:`ContactLedger.view` is ONE statement, without locks: the stored answer of the request id
  (an idempotent retry returns it and nothing is re-decided), and this customer's history in the
  budget period (contacts, the last contact, the last offer) with the period's spend, which the
  policy's observation needs.
* :meth:`ContactLedger.answer` (and :meth:`ContactLedger.decide`, the same without an answer) is
  ONE transaction that

  1. replays the recorded decision if the request id was seen before (a retry never re-checks or
     re-spends: the first answer is the answer),
  2. checks quiet hours, cooldown, the fatigue cap and the period budget: the contact contract's
     limits (``retention.contract.ContactLimits``), judged by ``retention.contract.breaches``, the
     same function the simulated env calls,
  3. records the decision row *with its answer*, built by the caller's pure ``respond`` callback
     from the verdict, and, for a contact, adds its cost to the period's spend,

  and commits before it returns, so an answer that reached a caller is always on disk, and two
  racing retries of one request id get the one stored answer.

Concurrency. Several transformer replicas (and many threads of one) decide at once, so the checks
and the write must not interleave. PostgreSQL: the transaction takes a per-customer advisory lock
(two requests for one customer serialize; two customers do not) and then, only when the contact is
still allowed, locks the period's budget row, always in that order so no two transactions wait on
each other in a cycle; under READ COMMITTED each statement after a lock sees what the previous
holder committed. SQLite has one writer at a time anyway (WAL lets readers go on);
``BEGIN IMMEDIATE`` takes the write lock at the start, so the reads that feed a check cannot go
stale before the write lands, and threads of one process queue on a lock in front of it rather
than in SQLite's busy handler. The decision is inserted with ON CONFLICT DO NOTHING: a racing
attempt of the same request id that committed first turns this one into a replay of the stored
row, inside the same transaction. Lost races (deadlock, serialization failure, a busy SQLite file,
a dropped connection) are retried: the transaction is idempotent by request id, so a retry is safe.

Pooling. The engine's pool holds ``pool_size`` connections and the ledger runs blocking calls for
async callers in as many threads of its own (:meth:`ContactLedger.run`), so a call never waits for
a connection and never runs on an event loop. PostgreSQL's ``max_connections`` must cover
``serving.ledger.pool_size`` x transformer processes. psycopg prepares a statement on the server
the second time a connection runs it (``prepare_threshold``), and the statements are SQLAlchemy
constructs built once, so their compiled SQL is cached too.

Money is stored as integer millionths so that "the budget is never overspent" is exact: float sums
depend on the order of their terms, so the running spend and a re-count of the rows could disagree.
The budget check runs in micros too (spend, cost and budget all integers).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Row

from retention import catalogue, contract
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
MAX_RELEASE_LENGTH = 64
MAX_ATTEMPTS = 12
DEFAULT_POOL_SIZE = LedgerConfig().pool_size
# psycopg prepares a statement server-side once a connection has run it this many times.
PREPARE_THRESHOLD = 1
# Cloud SQL proxies and NAT drop idle connections; recycling is cheaper than pinging at each
# checkout (one more round trip per call), and a connection dropped anyway is retried.
POOL_RECYCLE_S = 240
# The ledger's advisory-lock key ("LEDG"): the customer locks are (key, hash of the customer id),
# table creation takes the key alone; other users of advisory locks pick other keys.
_LOCK_KEY = 0x4C454447
_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_T = TypeVar("_T")


# --------------------------------------------------------------------------------------- values


@dataclass(frozen=True)
class Proposal:
    """What the policy (or the fallback rules) wants to do; the ledger may still say no.

    ``offer_cost`` is what the budget is charged if the contact is made (already the expected
    cost); ``propensity`` is the acting policy's probability of this action, kept for off-policy
    evaluation of later policies on the logged decisions. ``churn_probability`` (the served risk
    score, None when the risk model was down) and ``release`` (the production release that
    proposed it, :func:`release_of`) are recorded with the decision for the monitor.
    """

    contact: bool
    offer_level: int
    offer_cost: float
    followup_days: int
    arm: str
    propensity: float
    source: str
    churn_probability: float | None = None
    release: str | None = None

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
        p = self.churn_probability
        if p is not None and (not _is_number(p) or not 0 <= p <= 1):
            raise ValueError(f"proposal.churn_probability: expected 0..1 or None, got {p!r}")
        r = self.release
        if r is not None and (not isinstance(r, str) or not r or len(r) > MAX_RELEASE_LENGTH):
            raise ValueError(
                f"proposal.release: expected a release name of 1-{MAX_RELEASE_LENGTH} "
                f"characters or None, got {r!r}"
            )


def release_of(versions: Mapping[str, str | None]) -> str | None:
    """The release that served ``versions`` (served model -> its version, as an answer's
    ``models`` names them): a push stores every model of a release under the release's name
    (``retention.registry.release.push_models``), so it is the one version they all share; None
    when there is none or they disagree (no single release served it)."""
    distinct = {v for v in versions.values() if v}
    return distinct.pop() if len(distinct) == 1 else None


@dataclass(frozen=True)
class LedgerDecision:
    """The recorded, final decision for one request id (the verdict, without its answer).

    When ``contact`` is False nothing is charged: ``offer_level`` is 0 and ``offer_cost`` 0.0 (the
    proposal itself stays in the table for the export). ``blocked`` names the limits that turned a
    proposed contact into no contact, in the order quiet_hours, cooldown, fatigue, budget.
    ``replay`` is True when this request id had already been decided: the fields are the first
    answer's.
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
    replay: bool


@dataclass(frozen=True)
class Answered:
    """A decision and the answer stored with it: this call's, or on a replay the first one's."""

    decision: LedgerDecision
    response: dict[str, Any]


@dataclass(frozen=True)
class LedgerView:
    """What the ledger holds before a decision, read in one statement without locks.

    The write transaction reads it again under its locks; contacts and spend only grow, so a limit
    this view already breaks stays broken (:meth:`ContactLedger.foreseen_blocks`).
    ``recorded``: the request id was decided before; ``answer`` its stored answer (None when it
    was decided without one, e.g. by a batch run: :meth:`ContactLedger.answer` then builds it).
    The ``*_in_period`` fields and ``contacts_in_period`` count this budget period only;
    ``last_contact`` (what the cooldown counts from) any period.
    """

    request_id: str
    customer_id: str
    period: str
    recorded: bool
    answer: dict[str, Any] | None
    contacts_in_period: int
    last_contact: datetime | None
    last_contact_in_period: datetime | None
    last_offer_in_period: datetime | None
    spent_micros: int

    @property
    def spent(self) -> float:
        """Currency spent in the period so far."""
        return self.spent_micros / MICROS


@dataclass(frozen=True)
class LedgerSummary:
    """Aggregates over every row, computed by the database (no row is loaded)."""

    decisions: int
    contacts: int
    blocked: dict[str, int]  # by limit: proposed contacts it blocked
    spend_by_period_micros: dict[str, int]  # the sum of the contact rows' costs
    counter_by_period_micros: dict[str, int]  # the running spend the budget check reads


class RequestIdConflictError(ValueError):
    """A request id already decided for another customer: replaying would hand one customer's
    answer (and message) to another, so it is a client error."""


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


def _conflict(request_id: str) -> RequestIdConflictError:
    return RequestIdConflictError(
        f"request_id: {request_id!r} was already used for another customer"
    )


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
    # When the answer was stored: with the decision, or later by a replay of a batch decision.
    sa.Column("completed_at", UTCDateTime, nullable=True),
    # What the monitor reads: the served risk score and the release that decided. Added after the
    # first ledgers were made: ContactLedger._migrate adds them to an older table.
    sa.Column("release", sa.String(MAX_RELEASE_LENGTH), nullable=True),
    sa.Column("churn_probability", sa.Float, nullable=True),
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


# Built once: the decision path runs them thousands of times a second, and constructing and
# cache-keying a statement per call cost more CPU than executing it.
_b = sa.bindparam
_d = decisions.c
_VERDICT = (
    _d.request_id,
    _d.customer_id,
    _d.contact,
    _d.offer_level,
    _d.cost_micros,
    _d.followup_days,
    _d.blocked,
    _d.arm,
    _d.propensity,
    _d.source,
    _d.decided_at,
)
_in_period = _d.period == _b("period")
_by_id = _d.request_id == _b("request_id")
# The whole view in one statement: an aggregate without GROUP BY always returns one row, and the
# scalar subqueries are primary-key lookups.
_VIEW = sa.select(
    sa.select(_d.customer_id).where(_by_id).scalar_subquery().label("known_customer"),
    sa.select(_d.response).where(_by_id).scalar_subquery().label("response"),
    sa.select(budgets.c.spent_micros)
    .where(budgets.c.period == _b("period"))
    .scalar_subquery()
    .label("spent"),
    sa.func.coalesce(sa.func.sum(sa.case((_in_period, 1), else_=0)), 0).label("n_period"),
    sa.func.max(_d.decided_at).label("last"),
    sa.func.max(sa.case((_in_period, _d.decided_at))).label("last_in_period"),
    sa.func.max(sa.case((sa.and_(_in_period, _d.offer_level > 0), _d.decided_at))).label(
        "last_offer_in_period"
    ),
).where(_d.customer_id == _b("customer"), _d.contact.is_(True))
_DECISION_BY_ID = sa.select(*_VERDICT, _d.response).where(_by_id)
_STORE_ANSWER = (
    decisions.update()
    .where(_d.request_id == _b("rid"), _d.response.is_(None))
    .values(response=_b("answer"), completed_at=_b("at"))
)
_RESPONSE_BY_ID = sa.select(_d.response).where(_by_id)
_LOCK_CUSTOMER = sa.select(
    sa.func.pg_advisory_xact_lock(
        sa.literal(_LOCK_KEY, sa.Integer), sa.func.hashtext(_b("customer"))
    )
)
# Many customers' locks in their sorted order: a sorted subquery fixes the order in which the
# outer query calls the lock function.
_LOCK_CUSTOMERS = sa.text(
    "SELECT count(pg_advisory_xact_lock(CAST(:space AS integer), hashtext(c))) "
    "FROM (SELECT unnest(CAST(:customers AS text[])) AS c ORDER BY 1) AS sorted_customers"
).bindparams(space=_LOCK_KEY)
_LOCK_BUDGET = sa.select(budgets).where(budgets.c.period == _b("key")).with_for_update()
# A batch chunk's views: its known request ids, and its customers' histories in one GROUP BY.
BATCH_IDS = 500
_KNOWN_IDS = sa.select(_d.request_id, _d.customer_id, _d.response).where(
    _d.request_id.in_(_b("ids", expanding=True))
)
_HISTORIES = (
    sa.select(
        _d.customer_id,
        sa.func.sum(sa.case((_in_period, 1), else_=0)).label("n_period"),
        sa.func.max(_d.decided_at).label("last"),
        sa.func.max(sa.case((_in_period, _d.decided_at))).label("last_in_period"),
        sa.func.max(sa.case((sa.and_(_in_period, _d.offer_level > 0), _d.decided_at))).label(
            "last_offer_in_period"
        ),
    )
    .where(_d.customer_id.in_(_b("ids", expanding=True)), _d.contact.is_(True))
    .group_by(_d.customer_id)
)
_READ_SPENT = sa.select(budgets.c.spent_micros).where(budgets.c.period == _b("key"))
# Columns added after the first ledgers: _migrate adds them to an older table, and fills them
# from the stored answers as the transformer wrote them, the SQL of release_of: the one version
# every served model of ``models`` shares (a missing key is no disagreement).
_MIGRATED = (_d.release, _d.churn_probability)
_ANSWER_SCORE = _d.response[("risk", "churn_probability")].as_float()


def _answer_release() -> sa.ColumnElement:
    versions = [_d.response[("models", s)].as_string() for s in catalogue.services()]
    first = sa.func.coalesce(*versions)
    same = sa.and_(*(sa.func.coalesce(v, first) == first for v in versions))
    return sa.case((same, first), else_=None)


_ANSWER_RELEASE = _answer_release()


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
        kind = conn.get_execution_options().get("ledger_read", "write")
        if kind == "one":
            return  # a single statement is its own transaction in SQLite's autocommit mode
        conn.exec_driver_sql("BEGIN" if kind == "many" else "BEGIN IMMEDIATE")


def _retryable(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True  # idempotency makes a retry safe even if the commit had landed
    code = getattr(exc.orig, "sqlstate", None)
    if code in ("40001", "40P01", "23505", "55P03"):
        return True  # serialization failure, deadlock, racing duplicate insert, lock not available
    text = str(exc.orig).lower()
    return "database is locked" in text or "database is busy" in text or "unique constraint" in text


class _Encoded(str):
    """An answer already encoded (and so checked) by :func:`_encode_answer`."""


def _serialize(value: Any) -> str:
    if isinstance(value, _Encoded):
        return str(value)  # encoded once, where the error could name the answer
    # Strict JSON: NaN or Infinity in an answer would be stored, then fail every client's parser.
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def _encode_answer(response: Any) -> _Encoded:
    """The answer's JSON, or a ValueError naming it: the driver's own encoding would fail the same
    way, mid-transaction, with a message naming nothing."""
    if not isinstance(response, dict):
        raise ValueError(f"response: expected a JSON object, got {type(response).__name__}")
    try:
        return _Encoded(_serialize(response))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"response: not strict JSON ({exc})") from None


class LedgerUnavailableError(ConnectionError):
    """The ledger database could not be reached; the message names ``serving.ledger.url``."""


# -------------------------------------------------------------------------------------- ledger


class ContactLedger:
    """Thread-safe contact ledger over a pooled SQLAlchemy engine (SQLite file or PostgreSQL).

    ``schema`` (PostgreSQL only) puts the tables in their own schema, created if missing: tests and
    several environments can share one database without seeing each other's rows.
    ``pool_size``: database connections, and the threads :meth:`run` uses (one each);
    ``max_overflow`` extra connections for callers with threads of their own (tests, loads).
    ``sqlite_synchronous``: FULL (default) syncs every commit to disk, so an answered decision
    survives power loss as well as a crash; NORMAL survives a process crash only, for less latency.
    """

    def __init__(
        self,
        url: str | sa.URL,
        limits: ContactLimits,
        *,
        schema: str | None = None,
        pool_size: int = DEFAULT_POOL_SIZE,
        max_overflow: int = 0,
        pool_timeout_s: float = 30.0,
        busy_timeout_s: float = 30.0,
        sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        if not isinstance(limits, ContactLimits):
            raise ValueError(
                f"limits: expected the contract's ContactLimits, got {type(limits).__name__}"
            )
        if not _is_int(pool_size) or pool_size < 1:
            raise ValueError(f"pool_size: expected an integer >= 1, got {pool_size!r}")
        if not _is_int(max_overflow) or max_overflow < 0:
            raise ValueError(f"max_overflow: expected an integer >= 0, got {max_overflow!r}")
        self.limits = limits
        self.url = _parse_url(url)
        self.dialect = self.url.get_backend_name()
        self.pool_size = pool_size
        self._budget_micros = _to_micros(limits.budget_per_period)
        if schema is not None and (self.dialect != "postgresql" or not _SCHEMA_NAME.match(schema)):
            raise ValueError(
                f"schema: a lower-case SQL identifier, PostgreSQL only; got {schema!r} "
                f"for {self.dialect}"
            )
        self.schema = schema
        kwargs: dict[str, Any] = {
            "pool_size": pool_size,
            "max_overflow": max_overflow,
            "pool_timeout": pool_timeout_s,
            "json_serializer": _serialize,
        }
        if self.dialect == "sqlite":
            kwargs["connect_args"] = {"timeout": busy_timeout_s, "check_same_thread": False}
        else:
            kwargs["pool_recycle"] = POOL_RECYCLE_S
            kwargs["connect_args"] = {"connect_timeout": 10, "prepare_threshold": PREPARE_THRESHOLD}
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
        base = engine.execution_options(schema_translate_map={None: schema}) if schema else engine
        self._engine = base
        # One statement needs no transaction: PostgreSQL autocommit saves BEGIN and COMMIT, two
        # of the read's three round trips; SQLite skips BEGIN (see _sqlite_events).
        self._one_reader = base.execution_options(
            ledger_read="one",
            **({"isolation_level": "AUTOCOMMIT"} if self.dialect != "sqlite" else {}),
        )
        self._reader = base.execution_options(ledger_read="many")
        insert = postgresql.insert if self.dialect == "postgresql" else sqlite.insert
        # rowcount tells an insert from a conflict; SQLAlchemy keeps it for INSERT only if asked.
        self._insert = (
            insert(decisions)
            .on_conflict_do_nothing(index_elements=["request_id"])
            .execution_options(preserve_rowcount=True)
        )
        self._new_budget = insert(budgets).values(period=_b("key")).on_conflict_do_nothing()
        new_spend = insert(budgets).values(period=_b("key"), spent_micros=_b("cost"), contacts=1)
        self._add_spend = new_spend.on_conflict_do_update(
            index_elements=["period"],
            set_={
                "spent_micros": budgets.c.spent_micros + new_spend.excluded.spent_micros,
                "contacts": budgets.c.contacts + 1,
            },
        )
        self._threads: ThreadPoolExecutor | None = None
        self._threads_lock = threading.Lock()
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
        it enforces ``limits`` (the profile's ``contract.limits``) with ``cfg.pool_size``
        connections and threads.

        A SQLite file cannot live in a bucket, so a remote model store needs an explicit URL.
        """
        kwargs.setdefault("pool_size", cfg.pool_size)
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
                self._migrate(conn)
            return
        with self._engine.begin() as conn:
            # Replicas starting together would race on CREATE TABLE; one advisory lock orders them.
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(_LOCK_KEY)))
            if self.schema:
                conn.exec_driver_sql(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            metadata.create_all(conn)
            self._migrate(conn)

    def _migrate(self, conn: Connection) -> None:
        """Bring a decisions table made by an older version up to this one, in the creating
        transaction (under its lock): add the columns it lacks, and fill ``churn_probability``
        and ``release`` of the rows decided before from their stored answers (``risk`` and
        ``models``, as the transformer writes them; rows without an answer keep nulls)."""
        have = {c["name"] for c in sa.inspect(conn).get_columns(decisions.name, self.schema)}
        added = [c for c in _MIGRATED if c.name not in have]
        if not added:
            return
        q = conn.dialect.identifier_preparer
        table = q.quote(decisions.name)
        if self.schema:
            table = f"{q.quote_schema(self.schema)}.{table}"
        for col in added:
            ddl = col.type.compile(dialect=conn.dialect)
            conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {q.quote(col.name)} {ddl}")
        fill = {"churn_probability": _ANSWER_SCORE, "release": _ANSWER_RELEASE}
        done = conn.execute(
            decisions.update()
            .where(_d.response.is_not(None))
            .values({c.name: fill[c.name] for c in added})
        ).rowcount
        log.info("ledger: added %s to %s (%d answers read)", [c.name for c in added], table, done)

    def close(self) -> None:
        with self._threads_lock:
            if self._threads is not None:
                self._threads.shutdown(wait=True)
                self._threads = None
        self._base_engine.dispose()

    def __enter__(self) -> ContactLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def run(self, fn: Callable[..., _T], /, *args: Any) -> _T:
        """Await a blocking ledger call (``ledger.view``, ``ledger.answer``, ...) run in one of the
        ledger's ``pool_size`` threads: never on the event loop, and never more threads than
        pooled connections, so no call waits for one."""
        with self._threads_lock:
            if self._threads is None:
                self._threads = ThreadPoolExecutor(self.pool_size, thread_name_prefix="ledger")
            threads = self._threads
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(threads, functools.partial(fn, *args))

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

    def _read_one(self, stmt: sa.Executable, params: dict[str, Any]) -> Row | None:
        """One statement's first row; a connection the server dropped is retried once."""
        for attempt in (1, 2):
            try:
                with self._one_reader.connect() as conn:
                    return conn.execute(stmt, params).first()
            except sa.exc.DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """Several statements over one snapshot (SQLite) or one transaction (PostgreSQL)."""
        with self._reader.connect() as conn, conn.begin():
            yield conn

    # ------------------------------------------------------------------------------- decisions

    def period_key(self, now: datetime) -> str:
        """The budget period containing ``now``, in UTC: ``2026-W07``, ``2026-02`` or ``2026-Q1``."""
        return contract.period_key(now, self.limits.period)

    def in_quiet_hours(self, now: datetime, timezone: str | None = None) -> bool:
        """Whether ``now`` is inside the contract's quiet hours on the customer's local clock
        (``timezone``, else ``contract.limits.default_timezone``)."""
        return contract.in_quiet_hours(now, self.limits, timezone)

    def view(self, request_id: str, customer_id: str, now: datetime) -> LedgerView:
        """Before deciding, in one statement: the stored answer of ``request_id`` and the
        customer's history and the spend in the period of ``now``.

        A request id already decided for another customer is a :class:`RequestIdConflictError`.
        """
        _check_id("request_id", request_id)
        _check_id("customer_id", customer_id)
        period = self.period_key(now)
        row = self._read_one(
            _VIEW, {"request_id": request_id, "customer": customer_id, "period": period}
        )
        assert row is not None  # an aggregate always has its row
        if row.known_customer is not None and row.known_customer != customer_id:
            raise _conflict(request_id)
        return LedgerView(
            request_id=request_id,
            customer_id=customer_id,
            period=period,
            recorded=row.known_customer is not None,
            answer=row.response,
            contacts_in_period=int(row.n_period),
            last_contact=row.last,
            last_contact_in_period=row.last_in_period,
            last_offer_in_period=row.last_offer_in_period,
            spent_micros=int(row.spent or 0),
        )

    def _breaches(
        self,
        now: datetime,
        quiet: bool,
        last: datetime | None,
        n_period: int,
        spent_micros: int,
        cost_micros: int,
    ) -> tuple[str, ...]:
        # A contact stamped later than `now` (a replica's clock ahead) gives a negative gap,
        # which the cooldown also blocks: two contacts never land closer than the cooldown.
        since = None if last is None else contract.days_between(last, now)
        # In micros, spend, cost and budget alike: the budget comparison is exact.
        history = ContactHistory(since, int(n_period), spent_micros)
        return contract.breaches(
            history, cost_micros, self.limits, budget=self._budget_micros, quiet=quiet
        )

    def foreseen_blocks(
        self, view: LedgerView, proposal: Proposal, now: datetime, timezone: str | None = None
    ) -> tuple[str, ...]:
        """The limits that already block ``proposal`` by ``view`` (read for the same ``now``).

        Contacts, the last contact and the spend only grow, so the write transaction will block
        it too: a caller can skip writing a message that would never be sent. An empty tuple
        promises nothing: the write decides.
        """
        if not proposal.contact:
            return ()
        return self._breaches(
            aware_utc(now),
            self.in_quiet_hours(now, timezone),
            view.last_contact,
            view.contacts_in_period,
            view.spent_micros,
            _to_micros(proposal.offer_cost),
        )

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
        A request id seen before for a different customer is a :class:`RequestIdConflictError`.
        No answer is stored; :meth:`answer` stores one with the decision.
        """
        return self._decide(request_id, customer_id, proposal, now, timezone, None)[0]

    def answer(
        self,
        request_id: str,
        customer_id: str,
        proposal: Proposal,
        now: datetime,
        timezone: str | None,
        respond: Callable[[LedgerDecision], dict[str, Any]],
    ) -> Answered:
        """:meth:`decide`, storing ``respond(decision)`` with the decision in the same transaction.

        ``respond`` builds the caller's answer from the verdict; it runs inside the transaction
        (under its locks), so it must be quick and do no I/O, and it may run more than once if a
        lost race is retried. On a replay the stored answer is returned and ``respond`` is not
        called, unless the decision was recorded without an answer (:meth:`decide`): then the
        answer built from the recorded verdict is stored and returned, once, to every retry.
        """
        decision, response = self._decide(request_id, customer_id, proposal, now, timezone, respond)
        assert response is not None
        return Answered(decision, response)

    def _decide(
        self,
        request_id: str,
        customer_id: str,
        proposal: Proposal,
        now: datetime,
        timezone: str | None,
        respond: Callable[[LedgerDecision], dict[str, Any]] | None,
    ) -> tuple[LedgerDecision, dict[str, Any] | None]:
        _check_id("request_id", request_id)
        _check_id("customer_id", customer_id)
        if not isinstance(proposal, Proposal):
            raise ValueError(f"proposal: expected a Proposal, got {type(proposal).__name__}")
        now = aware_utc(now)
        quiet = self.in_quiet_hours(now, timezone)  # validates the zone before any write
        period = self.period_key(now)
        return self._write(
            lambda conn: self._transaction(
                conn, request_id, customer_id, proposal, now, period, quiet, respond
            )
        )

    def _transaction(
        self,
        conn: Connection,
        request_id: str,
        customer_id: str,
        proposal: Proposal,
        now: datetime,
        period: str,
        quiet: bool,
        respond: Callable[[LedgerDecision], dict[str, Any]] | None,
    ) -> tuple[LedgerDecision, dict[str, Any] | None]:
        cost = _to_micros(proposal.offer_cost)
        blocked: tuple[str, ...] = ()
        if proposal.contact:
            if self.dialect == "postgresql":
                conn.execute(_LOCK_CUSTOMER, {"customer": customer_id})
            # After the customer's lock (PostgreSQL) or under the write lock (SQLite): the
            # history cannot change before this transaction commits.
            v = conn.execute(
                _VIEW, {"request_id": request_id, "customer": customer_id, "period": period}
            ).one()
            if v.known_customer is not None:
                return self._replay(conn, request_id, customer_id, respond)
            spent = int(v.spent or 0)  # exact on SQLite; unlocked on PostgreSQL

            def verdict(spent: int, charge: int) -> tuple[str, ...]:
                return self._breaches(now, quiet, v.last, int(v.n_period), spent, charge)

            if self.dialect == "postgresql" and not verdict(0, 0):
                # Only a contact that may still spend locks the budget: blocked ones report
                # "budget" from the unlocked read above, which is all they need.
                spent = self._lock_row(conn, _LOCK_BUDGET, self._new_budget, period).spent_micros
            blocked = verdict(spent, cost)

        contact = proposal.contact and not blocked
        decision = LedgerDecision(
            request_id=request_id,
            customer_id=customer_id,
            contact=contact,
            offer_level=proposal.offer_level if contact else 0,
            offer_cost=(cost if contact else 0) / MICROS,
            followup_days=proposal.followup_days,
            blocked=blocked,
            arm=proposal.arm,
            propensity=float(proposal.propensity),
            source=proposal.source,
            decided_at=now,
            replay=False,
        )
        response = respond(decision) if respond is not None else None
        encoded = None if response is None else _encode_answer(response)
        recorded_at = datetime.now(UTC)
        inserted = conn.execute(
            self._insert,
            {
                "request_id": request_id,
                "customer_id": customer_id,
                "period": period,
                "decided_at": now,
                "recorded_at": recorded_at,
                "proposed_contact": proposal.contact,
                "proposed_offer_level": proposal.offer_level,
                "proposed_cost_micros": cost,
                "contact": contact,
                "offer_level": decision.offer_level,
                "cost_micros": cost if contact else 0,
                "followup_days": proposal.followup_days,
                "blocked": ",".join(blocked),
                "arm": proposal.arm,
                "propensity": decision.propensity,
                "source": proposal.source,
                "response": encoded,
                "completed_at": recorded_at if response is not None else None,
                "release": proposal.release,
                "churn_probability": proposal.churn_probability,
            },
        ).rowcount
        if inserted != 1:
            # A racing attempt of this request id committed first: its answer is the answer.
            return self._replay(conn, request_id, customer_id, respond)
        if contact:
            conn.execute(self._add_spend, {"key": period, "cost": cost})
        return decision, response

    def _replay(
        self,
        conn: Connection,
        request_id: str,
        customer_id: str,
        respond: Callable[[LedgerDecision], dict[str, Any]] | None,
    ) -> tuple[LedgerDecision, dict[str, Any] | None]:
        row = conn.execute(_DECISION_BY_ID, {"request_id": request_id}).one()
        if row.customer_id != customer_id:
            raise _conflict(request_id)
        decision = _from_row(row, replay=True)
        response = row.response
        if response is None and respond is not None:
            response = respond(decision)
            encoded = _encode_answer(response)
            stored = conn.execute(
                _STORE_ANSWER,
                {"rid": request_id, "answer": encoded, "at": datetime.now(UTC)},
            ).rowcount
            if stored != 1:  # a racing replay stored its answer first (PostgreSQL)
                response = conn.execute(_RESPONSE_BY_ID, {"request_id": request_id}).scalar_one()
        return decision, response

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

    # ---------------------------------------------------------------------------------- batches

    def views(self, pairs: Sequence[tuple[str, str]], now: datetime) -> list[LedgerView]:
        """:meth:`view` for many ``(request_id, customer_id)`` pairs (a batch chunk): one read
        transaction of a few statements per ``BATCH_IDS`` pairs, whatever their number."""
        for rid, cid in pairs:
            _check_id("request_id", rid)
            _check_id("customer_id", cid)
        period = self.period_key(now)
        known: dict[str, tuple[str, Any]] = {}
        history: dict[str, Row] = {}
        with self._read() as conn:
            spent = conn.execute(_READ_SPENT, {"key": period}).scalar()
            for start in range(0, len(pairs), BATCH_IDS):
                part = pairs[start : start + BATCH_IDS]
                rids, cids = [p[0] for p in part], sorted({p[1] for p in part})
                for r in conn.execute(_KNOWN_IDS, {"ids": rids}):
                    known[r.request_id] = (r.customer_id, r.response)
                for r in conn.execute(_HISTORIES, {"ids": cids, "period": period}):
                    history[r.customer_id] = r
        out = []
        for rid, cid in pairs:
            owner, answer = known.get(rid, (None, None))
            if owner is not None and owner != cid:
                raise _conflict(rid)
            h = history.get(cid)
            out.append(
                LedgerView(
                    request_id=rid,
                    customer_id=cid,
                    period=period,
                    recorded=owner is not None,
                    answer=answer,
                    contacts_in_period=int(h.n_period) if h else 0,
                    last_contact=h.last if h else None,
                    last_contact_in_period=h.last_in_period if h else None,
                    last_offer_in_period=h.last_offer_in_period if h else None,
                    spent_micros=int(spent or 0),
                )
            )
        return out

    def decide_many(
        self, items: Sequence[tuple[str, str, Proposal, str | None]], now: datetime
    ) -> list[LedgerDecision]:
        """:meth:`decide` for many ``(request_id, customer_id, proposal, timezone)`` at one
        ``now``, in ONE write transaction (a batch chunk), in order: each is judged against the
        ledger as the ones before it left it, and a known request id is replayed, so re-running
        a batch never charges twice. No answers are stored."""
        now = aware_utc(now)
        period = self.period_key(now)
        quiet: dict[str | None, bool] = {}
        for rid, cid, proposal, tz in items:
            _check_id("request_id", rid)
            _check_id("customer_id", cid)
            if not isinstance(proposal, Proposal):
                raise ValueError(f"proposal: expected a Proposal, got {type(proposal).__name__}")
            if tz not in quiet:
                quiet[tz] = self.in_quiet_hours(now, tz)  # validates the zone before any write

        contacted = sorted({cid for _, cid, p, _ in items if p.contact})

        def tx(conn: Connection) -> list[LedgerDecision]:
            if self.dialect == "postgresql" and contacted:
                # Every customer lock before the first budget lock, in one order: one item at a
                # time would hold the budget while locking the next customer, the reverse of a
                # single decision's order, and deadlock with it.
                conn.execute(_LOCK_CUSTOMERS, {"customers": contacted})
            return [
                self._transaction(conn, rid, cid, p, now, period, quiet[tz], None)[0]
                for rid, cid, p, tz in items
            ]

        return self._write(tx)

    # ---------------------------------------------------------------------------------- reading

    def get(self, request_id: str) -> LedgerDecision | None:
        """The recorded decision of ``request_id`` (``replay`` True), or None."""
        row = self._read_one(_DECISION_BY_ID, {"request_id": request_id})
        return None if row is None else _from_row(row, replay=True)

    def spent(self, period: str) -> float:
        """Currency spent in ``period`` (a :meth:`period_key`), as the budget check reads it."""
        row = self._read_one(_READ_SPENT, {"key": period})
        return (row.spent_micros if row is not None else 0) / MICROS

    def contacts(self, customer_id: str) -> list[LedgerDecision]:
        """The contacts made with one customer, oldest first (a few: the limits see to it)."""
        return list(self.decisions(customer_id, contacts_only=True))

    def decisions(
        self, customer_id: str | None = None, *, contacts_only: bool = False, page: int = 5000
    ) -> Iterator[LedgerDecision]:
        """Every recorded decision (of one customer, only contacts, if asked), oldest first.

        Verdicts only, never the stored answers, read in pages of ``page`` rows, each page its own
        short read keyed on the last row seen: a long history never sits in memory at once and no
        connection is held while the caller works on a page.
        """
        base = sa.select(*_VERDICT).order_by(_d.decided_at, _d.request_id).limit(page)
        if customer_id is not None:
            base = base.where(_d.customer_id == customer_id)
        if contacts_only:
            base = base.where(_d.contact.is_(True))
        stmt, params = base, {}
        while True:
            with self._read() as conn:
                rows = conn.execute(stmt, params).all()
            yield from (_from_row(r, replay=True) for r in rows)
            if len(rows) < page:
                return
            last = rows[-1]
            stmt = base.where(
                sa.or_(
                    _d.decided_at > _b("t", type_=UTCDateTime),
                    sa.and_(_d.decided_at == _b("t", type_=UTCDateTime), _d.request_id > _b("r")),
                )
            )
            params = {"t": last.decided_at, "r": last.request_id}

    def summary(self) -> LedgerSummary:
        """Counts, blocks and spend by period over every row, aggregated by the database."""
        totals = sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(sa.case((_d.contact, 1), else_=0)), 0)
        )
        by_block = (
            sa.select(_d.blocked, sa.func.count()).where(_d.blocked != "").group_by(_d.blocked)
        )
        spend = (
            sa.select(_d.period, sa.func.sum(_d.cost_micros))
            .where(_d.contact.is_(True))
            .group_by(_d.period)
        )
        with self._read() as conn:
            n, n_contacts = conn.execute(totals.select_from(decisions)).one()
            blocked: dict[str, int] = {}
            for reasons, count in conn.execute(by_block):
                for reason in reasons.split(","):
                    blocked[reason] = blocked.get(reason, 0) + count
            by_period = {p: int(s) for p, s in conn.execute(spend)}
            counters = {
                p: int(s)
                for p, s in conn.execute(sa.select(budgets.c.period, budgets.c.spent_micros))
            }
        return LedgerSummary(
            decisions=int(n),
            contacts=int(n_contacts),
            blocked=dict(sorted(blocked.items())),
            spend_by_period_micros=dict(sorted(by_period.items())),
            counter_by_period_micros=dict(sorted(counters.items())),
        )

    def export_decisions(self, path: str | Path, *, release: str | None = None) -> Path:
        """Write every decision (of one ``release``, if given), with arm, propensity and the
        original proposal, for off-policy evaluation, and with the served ``churn_probability``
        (null when the risk model was down) and the ``release`` that decided, the decision log
        ``retention monitor`` reads: Parquet if ``path`` ends in ``.parquet``/``.pq``, else CSV.

        Streams in chunks (a server-side cursor on PostgreSQL, without the stored answers) and
        moves a finished temporary file into place, so a reader never sees half an export.
        """
        import pandas as pd
        import pyarrow.parquet as pq

        path = Path(path)
        parquet = path.suffix.lower() in (".parquet", ".pq")
        stmt = sa.select(*[decisions.c[c] for c in EXPORT_SOURCE]).order_by(
            decisions.c.decided_at, decisions.c.request_id
        )
        if release is not None:
            stmt = stmt.where(decisions.c.release == release)
        with atomic_path(path) as tmp, self._read() as conn:
            writer: pq.ParquetWriter | None = None
            wrote_header = False
            result = conn.execution_options(yield_per=5000).execute(stmt)
            for chunk in result.partitions():
                frame = _export_frame(pd.DataFrame(chunk, columns=list(EXPORT_SOURCE)))
                if parquet:
                    table = _export_table(frame)
                    writer = writer or pq.ParquetWriter(tmp, table.schema)
                    writer.write_table(table)
                else:
                    frame.to_csv(tmp, mode="a", header=not wrote_header, index=False)
                    wrote_header = True
            if parquet:
                if writer is None:
                    empty = _export_frame(pd.DataFrame(columns=list(EXPORT_SOURCE)))
                    pq.write_table(_export_table(empty), tmp)
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
    "release",
    "churn_probability",
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
    "release",
    "churn_probability",
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
    out["churn_probability"] = pd.to_numeric(out["churn_probability"]).astype(float)
    return out[list(EXPORT_COLUMNS)]


def _export_table(frame: Any) -> Any:
    """The frame as Arrow with one schema for every chunk: a chunk whose releases are all null
    would otherwise give the column Arrow's null type, and the Parquet writer refuse the next."""
    import pyarrow as pa

    table = pa.Table.from_pandas(frame, preserve_index=False)
    i = table.schema.get_field_index("release")
    return table.cast(table.schema.set(i, pa.field("release", pa.string())))


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
        replay=replay,
    )
