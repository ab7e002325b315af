"""Batch decisions: the serving decision path over a whole customer base (``decide-batch``).

Every chunk of customers (``batch.chunk_rows``) goes through the steps of one ``/retain``
request, each done for the whole chunk at once, with the production models and the profile's
contract:

1. the rows are checked (a missing or unusable id, a value of the wrong type, a number that is not
   finite, a negative amount, an unknown time zone, text over the request limits): a bad row is
   reported by row and column in the rejects file, never silently dropped;
2. risk (calibrated, ``inplace_predict`` on the prepared matrix) with its TreeSHAP factors, the
   accept curve (the four levels of a customer in one prediction), the 12-month value with its
   interval (``LtvModel.customer_values``, the function the customer book and the LTV predictor
   use), the A/B arm;
3. the ledger's view of the chunk's customers (their period history and the period's spend, read
   in a few statements), the policy's observation and action (the served policy predictor's own
   code), or the rules (control arm: business as usual; no policy: the fallback rules), priced by
   the contract (``make_proposal``);
4. the contract's limits against the ledger, recording each decision as serving does, in short
   write transactions (``batch.ledger_rows``) so serving never waits long behind a batch; the
   request id is ``batch:RUN_ID:CUSTOMER_ID``, so re-running a run replays its decisions and
   never charges twice;
5. the template message of each contact, shielded.

The same chunk function, :func:`decide_chunk`, runs in this process (``engine: local``) or on Ray
Data (``engine: ray``: ``read_parquet(...).map_batches(...)`` in actors, Ray in-process unless
``batch.ray_address`` names a KubeRay cluster), and in the KFP batch pipeline
(``pipelines/batch.py``). A chunk answers one record per input row, in input order, so the
driver numbers rows the same way whichever engine ran it. Outputs are written to temporary files
moved into place when the run ends.

The policy sees the period's spend as it was when the run started, for every customer, so the
decisions do not depend on how the base is chunked or on which chunk a Ray actor reaches first;
the ledger's limits are exact, and when the budget binds, the customers it reaches first in input
order (on Ray, in the order chunks reach the ledger) are the ones contacted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, Field

from retention.config import Profile
from retention.contract import aware_utc
from retention.decision.observe import observation
from retention.decision.rules import RuleDecision, business_as_usual, next_best_action, risk_level
from retention.experiments.ab import assign_arm
from retention.fileio import atomic_path, write_json
from retention.messaging.shield import shielded, template_message
from retention.models.accept import OFFER, curve_of_rows
from retention.models.binary import BinaryModel
from retention.models.columnar import ColumnEncoder, decoded
from retention.models.ltv import GIVEN, LtvModel
from retention.models.preprocess import display_value, parse_number
from retention.progress import Progress
from serving.ledger import ContactLedger, LedgerDecision, Proposal, release_of
from serving.transformer import PolicyContext, live_customer, make_proposal

log = logging.getLogger(__name__)

RUN_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
MAX_CUSTOMER_ID = 128  # serving's customer_facts.customer_id
MAX_NAME, MAX_PLAN = 200, 100  # serving's customer_facts.name / .plan
# Serving's named facts that are not model features.
NAME, PLAN, TENURE, TIMEZONE = "name", "plan", "tenure", "timezone"
REJECTS = "rejects"  # the chunk's per-row problems (JSON), null for a row that was decided

OUTPUT_SCHEMA = pa.schema(
    [
        ("customer_id", pa.string()),
        ("request_id", pa.string()),
        ("arm", pa.string()),
        ("churn_probability", pa.float64()),
        ("risk_level", pa.string()),
        ("risk_factors", pa.string()),  # JSON: [{"feature", "value", "shap"}], top first
        ("accept_probability", pa.list_(pa.float64())),  # offer levels 0..3
        ("value", pa.float64()),
        ("value_low", pa.float64()),
        ("value_high", pa.float64()),
        ("value_source", pa.string()),
        ("source", pa.string()),  # policy | rules | bau
        ("propensity", pa.float64()),
        ("contact", pa.bool_()),
        ("offer_level", pa.int8()),  # null without a contact
        ("offer_discount_percent", pa.float64()),
        ("offer_cost", pa.float64()),  # charged to the budget (0 without a contact)
        ("followup_days", pa.int32()),
        ("blocked_by", pa.list_(pa.string())),
        ("message", pa.string()),
        ("shield_passed", pa.bool_()),
        ("replaced_by_template", pa.bool_()),
        ("replayed", pa.bool_()),  # decided before under this run id: the recorded decision
        ("decided_at", pa.timestamp("us", tz="UTC")),
        ("release", pa.string()),  # the production release that scored it (ledger.release_of)
    ]
)
CHUNK_SCHEMA = OUTPUT_SCHEMA.append(pa.field(REJECTS, pa.string()))
REJECT_SCHEMA = pa.schema(
    [
        ("row", pa.int64()),  # 0-based position in the input
        ("customer_id", pa.string()),  # as given, when it could be read
        ("column", pa.string()),
        ("value", pa.string()),  # as given, shortened
        ("reason", pa.string()),
    ]
)


# ------------------------------------------------------------------------------------- models


@dataclass
class BatchModels:
    """The production release, loaded for chunks: boosters on ``batch.threads`` threads."""

    risk: BinaryModel
    accept: BinaryModel
    ltv: LtvModel
    policy: Any | None  # serving.predictors.PolicyPredictor, loaded
    context: PolicyContext
    versions: dict[str, str]
    # Each model's features read straight from the chunk's Arrow columns.
    risk_columns: ColumnEncoder = field(init=False)
    accept_columns: ColumnEncoder = field(init=False)

    def __post_init__(self) -> None:
        self.risk_columns = ColumnEncoder(self.risk.pre)
        self.accept_columns = ColumnEncoder(self.accept.pre)

    @property
    def release(self) -> str | None:
        """The production release these models are, named as serving names it."""
        return release_of(self.versions)

    @classmethod
    def load(cls, profile: Profile) -> BatchModels:
        from serving.predictors import PolicyPredictor
        from serving.server import model_dir_for, policy_context, production_versions

        def load_binary(service: str) -> BinaryModel:
            model = BinaryModel.load(model_dir_for(profile, service))
            model.set_threads(profile.batch.threads)
            return model

        context = policy_context(profile)
        policy = None
        if context.available:
            policy = PolicyPredictor(model_dir_for(profile, PolicyPredictor.service))
            policy.load()
        return cls(
            risk=load_binary("risk"),
            accept=load_binary("accept"),
            ltv=LtvModel(model_dir_for(profile, "ltv")),
            policy=policy,
            context=context,
            versions=production_versions(profile),
        )

    def missing_features(self, columns: list[str]) -> dict[str, list[str]]:
        """By served model: the features an input with ``columns`` lacks entirely (missing for
        every customer, as a request that does not send them)."""
        have = set(columns)
        wanted = {
            "risk": self.risk.pre.features,
            "accept": [f for f in self.accept.pre.features if f != OFFER],
            "ltv": [*self.ltv.order_facts, *self._ltv_key()],
        }
        return {m: [f for f in fs if f not in have] for m, fs in wanted.items()}

    def _ltv_key(self) -> list[str]:
        m = self.ltv.book_mapping
        return [m.column] if m is not None and m.column else []

    def numeric_columns(self) -> set[str]:
        """Columns a model reads as numbers (numeric strings allowed, as serving allows them)."""
        return {*self.risk.pre.numeric, *self.accept.pre.numeric} - {OFFER}

    def amount_columns(self) -> set[str]:
        """Columns that are amounts or counts: numbers >= 0, not flags."""
        return {*self.ltv.order_facts, GIVEN, *self._ltv_key()}


@dataclass
class BatchRun:
    """One run's fixed inputs: the models, the ledger, the run id and the send time."""

    profile: Profile
    run_id: str
    send_at: datetime
    models: BatchModels
    ledger: ContactLedger
    id_column: str
    # The period's spend when the run started: what the policy sees for every customer.
    spent_at_start: int  # micros

    @classmethod
    def open(
        cls, profile: Profile, run_id: str, send_at: datetime, spent_at_start: int | None = None
    ) -> BatchRun:
        """The run, its spend at the start read from the ledger unless given (a Ray actor is
        given the driver's, so every chunk sees the same)."""
        if not RUN_ID.match(run_id):
            raise ValueError(f"run id: expected 1-64 of A-Z a-z 0-9 . _ -, got {run_id!r}")
        send_at = aware_utc(send_at, "send_at")
        ledger = ContactLedger.for_store(
            profile.model_store, profile.serving.ledger, profile.contract.limits
        )
        if spent_at_start is None:
            spent_at_start = round(ledger.spent(ledger.period_key(send_at)) * 1_000_000)
        return cls(
            profile, run_id, send_at, BatchModels.load(profile), ledger, id_column_of(profile),
            spent_at_start,
        )  # fmt: skip

    def close(self) -> None:
        self.ledger.close()


def id_column_of(profile: Profile) -> str:
    return profile.batch.id_column or profile.data.customers.id_column or "customer_id"


# --------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Problem:
    column: str
    value: str | None  # as given, shortened; None for a missing value
    reason: str


def _shown(v: Any) -> str | None:
    if v is None:
        return None
    text = v if isinstance(v, str) else repr(v)
    return text if len(text) <= 80 else text[:77] + "..."


def _flag(
    out: dict[int, list[Problem]], rows: np.ndarray, col: pa.ChunkedArray, name: str, why: str
) -> None:
    values = col.take(pa.array(rows)).to_pylist() if len(rows) else []
    for i, v in zip(rows.tolist(), values, strict=True):
        out.setdefault(i, []).append(Problem(name, _shown(v), why))


def _mask(arr) -> np.ndarray:
    return np.asarray(pc.fill_null(arr, False).to_numpy(zero_copy_only=False), dtype=bool)


def check_rows(table: pa.Table, models: BatchModels, id_column: str) -> dict[int, list[Problem]]:
    """Row index (in ``table``) -> what is wrong with it; rows not listed are usable."""
    out: dict[int, list[Problem]] = {}
    names = table.column_names
    if id_column not in names:
        raise ValueError(
            f"the input has no customer id column {id_column!r} (batch.id_column, else "
            f"data.customers.id_column); its columns: {', '.join(names)}"
        )
    ids = decoded(table.column(id_column))
    if pa.types.is_string(ids.type) or pa.types.is_large_string(ids.type):
        stripped = pc.utf8_trim_whitespace(ids)
        _flag(out, np.flatnonzero(_mask(pc.is_null(ids))), ids, id_column, "missing")
        _flag(out, np.flatnonzero(_mask(pc.equal(stripped, ""))), ids, id_column, "empty")
        long = pc.greater(pc.utf8_length(ids), MAX_CUSTOMER_ID)
        _flag(out, np.flatnonzero(_mask(long)), ids, id_column, f"over {MAX_CUSTOMER_ID} chars")
    elif pa.types.is_integer(ids.type):
        _flag(out, np.flatnonzero(_mask(pc.is_null(ids))), ids, id_column, "missing")
    else:
        every = np.arange(table.num_rows)
        _flag(out, every, ids, id_column, f"wrong type {ids.type}: expected text or an integer")

    numeric, amounts = models.numeric_columns(), models.amount_columns()
    for name in sorted((numeric | amounts | {TENURE}) & set(names)):
        col = decoded(table.column(name))
        _check_number(out, col, name, amount=name in amounts or name == TENURE)
    for name, limit in ((NAME, MAX_NAME), (PLAN, MAX_PLAN)):
        if name in names:
            col = decoded(table.column(name))
            if not pa.types.is_string(col.type):
                _flag(out, np.flatnonzero(_mask(pc.is_valid(col))), col, name, "expected text")
            else:
                long = pc.greater(pc.utf8_length(col), limit)
                _flag(out, np.flatnonzero(_mask(long)), col, name, f"over {limit} chars")
    if TIMEZONE in names:
        col = decoded(table.column(TIMEZONE))
        bad = [
            i
            for i, z in enumerate(col.to_pylist())
            if z is not None and not (isinstance(z, str) and _known_zone(z))
        ]
        _flag(out, np.asarray(bad, dtype=np.int64), col, TIMEZONE, "unknown IANA time zone")
    return out


_ZONES: dict[str, bool] = {}


def _known_zone(name: str) -> bool:
    if name not in _ZONES:
        try:
            ZoneInfo(name)
            _ZONES[name] = True
        except (ZoneInfoNotFoundError, ValueError):
            _ZONES[name] = False
    return _ZONES[name]


def _check_number(out: dict[int, list[Problem]], col: pa.ChunkedArray, name: str, amount: bool):
    t = col.type
    if pa.types.is_boolean(t):
        if amount:
            _flag(out, np.flatnonzero(_mask(pc.is_valid(col))), col, name, "a flag is no amount")
        return
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        x = col.to_numpy(zero_copy_only=False).astype(float)
    elif pa.types.is_string(t) or pa.types.is_large_string(t):
        # Serving's grammar for numbers in text; blank text is missing, as the public Telco
        # file writes a missing TotalCharges.
        raw = col.to_pylist()
        blank = [v is not None and not v.strip(" \t\n\r") for v in raw]
        parsed = [
            0.0 if v is None or b else parse_number(v) for v, b in zip(raw, blank, strict=True)
        ]
        text = np.asarray([i for i, v in enumerate(parsed) if v is None], dtype=np.int64)
        _flag(out, text, col, name, "not a number")
        # Blank text and unreadable text (reported above) pass the finite checks below.
        x = np.asarray([0.0 if v is None else v for v in parsed], dtype=float)
    else:
        rows = np.flatnonzero(_mask(pc.is_valid(col)))
        _flag(out, rows, col, name, f"wrong type {t}: expected a number")
        return
    valid = _mask(pc.is_valid(col))
    _flag(out, np.flatnonzero(valid & ~np.isfinite(x)), col, name, "not a finite number")
    if amount:
        _flag(out, np.flatnonzero(valid & np.isfinite(x) & (x < 0)), col, name, "negative")


# ------------------------------------------------------------------------------------- chunks


def _factors(model: BinaryModel, x: np.ndarray, frame: pd.DataFrame, k: int) -> list[str]:
    """Each row's top ``k`` factors (TreeSHAP of the tree members, the linear member's exact
    contributions, by the blend weights) among the features it gave a usable value for
    (``rank_factors``'s order: largest push first, ties in feature order), as JSON."""
    contrib = model.contributions_matrix(x)[:, :-1]
    usable = ~np.isnan(x)
    ranked = np.where(usable, contrib, -np.inf)
    order = np.argsort(-ranked, axis=1, kind="stable")[:, :k]
    names = model.pre.features
    columns = {f: frame[f].to_numpy(dtype=object) for f in names if f in frame.columns}
    out = []
    for i in range(len(x)):
        row = [
            {
                "feature": names[j],
                "value": display_value(columns[names[j]][i]),
                "shap": round(float(contrib[i, j]), 4),
            }
            for j in order[i]
            if usable[i, j]
        ]
        out.append(json.dumps(row, default=str))
    return out


def _proposals(run: BatchRun, frame, ids, churn, curve, value, views) -> list[Proposal]:
    """What each customer is proposed, as ``RetentionTransformer.propose`` would propose it."""
    p, m = run.profile, run.models
    contract, ctx = p.contract, m.context
    arms = [assign_arm(c, p.serving.experiment) for c in ids]
    tenure = (
        pd.to_numeric(frame[TENURE], errors="coerce").to_numpy(dtype=float)
        if TENURE in frame.columns
        else np.full(len(ids), np.nan)
    )
    out: list[Proposal | None] = [None] * len(ids)
    treated = [i for i, a in enumerate(arms) if a == "treatment"]
    if m.policy is not None and treated:
        obs = [
            observation(
                live_customer(
                    views[i],
                    churn[i],
                    curve[i],
                    value[i],
                    run.send_at,
                    ctx.env,
                    contract,
                    spent_micros=run.spent_at_start,
                ),  # fmt: skip
                ctx.env,
                contract,
                ctx.mean_value,
            ).tolist()
            for i in treated
        ]
        actions = m.policy.predict_rows([{"observation": o} for o in obs])
        for i, a in zip(treated, actions, strict=True):
            rule = RuleDecision(
                bool(a["contact"]), int(a["offer_level"]), int(a["followup_days"]), "policy"
            )
            out[i] = make_proposal(
                rule, value[i], "treatment", float(a["action_probability"]), "policy", contract
            )
    for i, arm in enumerate(arms):
        if out[i] is not None:
            continue
        t = None if math.isnan(tenure[i]) else float(tenure[i])
        if arm == "control":
            rule, source = business_as_usual(float(churn[i]), contract), "bau"
        else:
            rule = next_best_action(float(churn[i]), value[i], t, ctx.mean_value, contract)
            source = "rules"
        out[i] = make_proposal(rule, value[i], arm, 1.0, source, contract)
    return out  # type: ignore[return-value]


def _facts(frame: pd.DataFrame, rows: list[int], id_column: str) -> list[dict[str, Any]]:
    """Rows as the facts a message is written and shielded with: what the row gives, no id."""
    cols = [c for c in frame.columns if c != id_column]
    part = frame.iloc[rows][cols]
    return [
        {k: display_value(v) for k, v in r.items() if v is not None and v == v}
        for r in part.to_dict("records")
    ]


def decide_chunk(run: BatchRun, batch: pa.Table | pa.RecordBatch) -> pa.Table:
    """One record per input row (``CHUNK_SCHEMA``, in order): a decision, or its problems."""
    table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
    n = table.num_rows
    problems = check_rows(table, run.models, run.id_column)
    good = np.asarray([i for i in range(n) if i not in problems], dtype=np.int64)
    cols: dict[str, list[Any]] = {f.name: [None] * n for f in CHUNK_SCHEMA}
    for i, found in problems.items():
        cols[REJECTS][i] = json.dumps(
            [{"column": q.column, "value": q.value, "reason": q.reason} for q in found]
        )
        raw_id = table.column(run.id_column)[i].as_py()
        cols["customer_id"][i] = None if raw_id is None else str(raw_id)
    if len(good):
        usable = table.take(pa.array(good))
        _decide_rows(run, usable, usable.to_pandas(), good, cols)
    arrays = [pa.array(cols[f.name], type=f.type) for f in CHUNK_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=CHUNK_SCHEMA)


def risk_scores(models: BatchModels, table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """The chunk's prepared matrix and calibrated P(churn): the chunk's columns read by the risk
    model's ``ColumnEncoder`` (a feature it lacks is missing for every row), one
    ``inplace_predict``, the calibrator."""
    x = models.risk_columns.encode(table)
    return x, models.risk.proba_matrix(x)


def _decide_rows(
    run: BatchRun, table: pa.Table, frame: pd.DataFrame, at: np.ndarray, cols: dict
) -> None:
    p, m = run.profile, run.models
    contract = p.contract
    ids = [str(c) for c in frame[run.id_column].tolist()]
    risk_x, churn = risk_scores(m, table)
    factors = _factors(m.risk, risk_x, frame, p.risk.shap_top_k) if p.batch.factors else None
    curve = curve_of_rows(m.accept, m.accept_columns.encode(table))  # its offer level set there
    values = m.ltv.customer_values(frame)
    request_ids = [f"batch:{run.run_id}:{c}" for c in ids]
    views = run.ledger.views(list(zip(request_ids, ids, strict=True)), run.send_at)
    proposals = [
        # Recorded with each decision, as serving records them, for the monitor.
        replace(q, churn_probability=float(churn[i]), release=m.release)
        for i, q in enumerate(_proposals(run, frame, ids, churn, curve, values.value, views))
    ]
    tz = (
        [z if isinstance(z, str) else None for z in frame[TIMEZONE].tolist()]
        if TIMEZONE in frame.columns
        else [None] * len(ids)
    )
    decided: list[LedgerDecision] = []
    step = p.batch.ledger_rows
    for s in range(0, len(ids), step):
        items = list(
            zip(request_ids[s : s + step], ids[s : s + step], proposals[s : s + step],
                tz[s : s + step], strict=True)
        )  # fmt: skip
        decided += run.ledger.decide_many(items, run.send_at)

    contacts = [i for i, d in enumerate(decided) if d.contact]
    if p.batch.messages and contacts:
        for i, facts in zip(contacts, _facts(frame, contacts, run.id_column), strict=True):
            level = decided[i].offer_level
            text = template_message(facts, level, contract)
            sent, verdict = shielded(text, facts, level, contract, send_at=run.send_at)
            j = int(at[i])
            cols["message"][j] = sent
            cols["shield_passed"][j] = verdict.passed
            cols["replaced_by_template"][j] = sent != text
    for i, d in enumerate(decided):
        j = int(at[i])
        cols["customer_id"][j] = ids[i]
        cols["request_id"][j] = request_ids[i]
        cols["arm"][j] = d.arm
        cols["churn_probability"][j] = float(churn[i])
        cols["risk_level"][j] = risk_level(float(churn[i]))
        cols["risk_factors"][j] = factors[i] if factors is not None else None
        cols["accept_probability"][j] = [float(a) for a in curve[i]]
        cols["value"][j] = float(values.value[i])
        cols["value_low"][j] = None if np.isnan(values.low[i]) else float(values.low[i])
        cols["value_high"][j] = None if np.isnan(values.high[i]) else float(values.high[i])
        cols["value_source"][j] = values.source[i]
        cols["source"][j] = d.source
        cols["propensity"][j] = d.propensity
        cols["contact"][j] = d.contact
        cols["offer_level"][j] = d.offer_level if d.contact else None
        cols["offer_discount_percent"][j] = (
            float(contract.level(d.offer_level).percent) if d.contact else None
        )
        cols["offer_cost"][j] = d.offer_cost
        cols["followup_days"][j] = d.followup_days
        cols["blocked_by"][j] = list(d.blocked)
        cols["replayed"][j] = d.replay
        cols["decided_at"][j] = d.decided_at
        cols["release"][j] = m.release


# ---------------------------------------------------------------------------------- the run


class BatchSummary(BaseModel):
    """What a batch run decided, every figure counted from its output files."""

    model_config = ConfigDict(extra="forbid")

    run_id: str
    engine: str
    input: str
    decisions: str
    rejects: str
    send_at: datetime
    period: str
    rows: int = Field(description="Input rows.")
    decided: int
    rejected: int = Field(description="Rows in the rejects file (each with its problems).")
    replayed: int = Field(description="Decided before under this run id: nothing charged again.")
    contacts: int
    contact_rate: float
    spend: float = Field(description="What this run's contacts charge the budget.")
    period_spent: float = Field(description="The ledger's spend in the period after the run.")
    budget: float
    budget_used: float = Field(description="period_spent / budget.")
    offer_mix: dict[str, int] = Field(description="Contacts by offer level.")
    arms: dict[str, int]
    sources: dict[str, int]
    blocked: dict[str, int] = Field(description="Proposed contacts each limit blocked.")
    value_sources: dict[str, int]
    missing_features: dict[str, list[str]] = Field(
        description="By model: features the input lacks for every customer."
    )
    models: dict[str, str]
    release: str | None = Field(description="The production release that decided.")
    wall_s: float
    rows_per_s: float

    def format(self, offer_names: list[str]) -> str:
        mix = ", ".join(f"{offer_names[int(k)]}: {v}" for k, v in sorted(self.offer_mix.items()))
        lines = [
            f"decide-batch {self.run_id} ({self.engine}): {self.rows} rows in {self.wall_s:.1f} s "
            f"({self.rows_per_s:,.0f} rows/s), release {self.release or 'unknown'}",
            f"  decided {self.decided}, rejected {self.rejected} (see {self.rejects}), "
            f"replayed {self.replayed}",
            f"  contacts {self.contacts} ({100 * self.contact_rate:.1f} %): {mix or 'none'}",
            f"  spend {self.spend:,.2f}; period {self.period} spent {self.period_spent:,.2f} of "
            f"{self.budget:,.2f} ({100 * self.budget_used:.1f} %)",
            f"  blocked: {self._counts(self.blocked)}; sources: {self._counts(self.sources)}; "
            f"values: {self._counts(self.value_sources)}",
        ]
        lacking = {m: f for m, f in self.missing_features.items() if f}
        if lacking:
            lines.append(
                "  the input lacks (missing for every customer): "
                + "; ".join(f"{m}: {', '.join(f)}" for m, f in lacking.items())
            )
        lines.append(f"  wrote {self.decisions}")
        return "\n".join(lines)

    @staticmethod
    def _counts(c: dict[str, int]) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(c.items())) or "none"


@dataclass
class _Collector:
    """Numbers the chunks' records by input row, splits decisions from rejects, writes both, and
    counts the summary from what it wrote."""

    decisions_path: Path
    rejects_path: Path
    id_column: str
    rows: int = 0
    decided: int = 0
    rejected: int = 0
    replayed: int = 0
    contacts: int = 0
    spend_micros: int = 0
    offer_mix: Counter = field(default_factory=Counter)
    arms: Counter = field(default_factory=Counter)
    sources: Counter = field(default_factory=Counter)
    blocked: Counter = field(default_factory=Counter)
    value_sources: Counter = field(default_factory=Counter)
    _seen: dict[str, int] = field(default_factory=dict)
    _writers: dict[str, Any] = field(default_factory=dict)

    def _write(self, key: str, table: pa.Table) -> None:
        import pyarrow.parquet as pq

        if key not in self._writers:
            path = self.decisions_path if key == "decisions" else self.rejects_path
            self._writers[key] = pq.ParquetWriter(path, table.schema)
        self._writers[key].write_table(table)

    def add(self, chunk: pa.Table) -> None:
        start, n = self.rows, chunk.num_rows
        self.rows += n
        rejects = chunk.column(REJECTS).to_pylist()
        ids = chunk.column("customer_id").to_pylist()
        keep = np.zeros(n, dtype=bool)
        bad: list[dict[str, Any]] = []
        for i, (problems, cid) in enumerate(zip(rejects, ids, strict=True)):
            row = start + i
            if problems is not None:
                bad += [{"row": row, "customer_id": cid, **q} for q in json.loads(problems)]
            elif cid in self._seen:
                # The ledger replayed the first row's decision for it (one request id per
                # customer and run): reported here, decided once.
                why = f"duplicate customer id: first at row {self._seen[cid]}"
                bad.append(
                    {"row": row, "customer_id": cid, "column": self.id_column, "value": cid,
                     "reason": why}
                )  # fmt: skip
            else:
                self._seen[cid] = row
                keep[i] = True
        self.rejected += n - int(keep.sum())
        if bad:
            self._write("rejects", pa.Table.from_pylist(bad, schema=REJECT_SCHEMA))
        out = chunk.filter(pa.array(keep)).drop_columns([REJECTS])
        if out.num_rows:
            self._count(out)
            self._write("decisions", out)

    def _count(self, out: pa.Table) -> None:
        def tally(counter: Counter, column) -> None:
            for item in pc.value_counts(column).to_pylist():
                counter[str(item["values"])] += item["counts"]

        self.decided += out.num_rows
        tally(self.arms, out["arm"])
        tally(self.sources, out["source"])
        tally(self.value_sources, out["value_source"])
        tally(self.blocked, pc.list_flatten(out["blocked_by"]))
        self.replayed += int(pc.sum(out["replayed"]).as_py() or 0)
        contacts = out.filter(out["contact"])
        self.contacts += contacts.num_rows
        tally(self.offer_mix, contacts["offer_level"])
        # The ledger charges whole micros: summing them is exact, in any order.
        micros = pc.round(pc.multiply(contacts["offer_cost"], 1_000_000.0))
        self.spend_micros += int(pc.sum(micros).as_py() or 0)

    def close(self) -> None:
        import pyarrow.parquet as pq

        for key, schema, path in (
            ("decisions", OUTPUT_SCHEMA, self.decisions_path),
            ("rejects", REJECT_SCHEMA, self.rejects_path),
        ):
            if key in self._writers:
                self._writers.pop(key).close()
            else:
                pq.write_table(schema.empty_table(), path)


def default_run_id(input: str | Path, send_at: datetime) -> str:
    """The send day and a digest of the input's bytes: a re-run of the same night's file is the
    same run (its decisions replay), another file or another day a new one."""
    digest = hashlib.sha256()
    fs, files = _source(input)
    for path in files:
        with fs.open_input_stream(path) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"{send_at:%Y%m%d}-{digest.hexdigest()[:12]}"


def _source(input: str | Path) -> tuple[Any, list[str]]:
    """(filesystem, parquet files) of a local path or a ``gs://`` URI, file or folder."""
    import pyarrow.fs as pafs

    text = str(input)
    if "://" in text:
        fs, root = pafs.FileSystem.from_uri(text)
    else:
        fs, root = pafs.LocalFileSystem(), str(Path(text).resolve())
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.Directory:
        found = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        files = sorted(f.path for f in found if f.is_file and f.path.endswith(".parquet"))
        if not files:
            raise FileNotFoundError(f"{input}: a folder with no .parquet files")
        return fs, files
    if info.type != pafs.FileType.File:
        raise FileNotFoundError(f"{input}: no such file or folder")
    return fs, [root]


def _dataset(input: str | Path, fmt: Any = "parquet"):
    import pyarrow.dataset as ds

    fs, files = _source(input)
    return ds.dataset(files, format=fmt, filesystem=fs)


def beside(out: str | Path, kind: str) -> Path:
    """``decisions.parquet`` -> ``decisions.KIND.parquet`` (the rejects and the summary)."""
    out = Path(out)
    suffix = ".json" if kind == "summary" else (out.suffix or ".parquet")
    return out.with_name(f"{out.stem}.{kind}{suffix}")


def _chunks(input: str | Path, rows: int, levels: Iterable[str] = ()) -> Iterator[pa.Table]:
    """The input in tables of exactly ``rows`` rows (the last one shorter), in file order.

    The ``levels`` columns (the models' categorical features) are read as parquet stores text,
    dictionary-encoded: a chunk's levels are then looked up once per distinct value."""
    import pyarrow.dataset as ds

    fmt = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(dictionary_columns=set(levels)))
    pending: list[pa.RecordBatch] = []
    have = 0
    for batch in _dataset(input, fmt).to_batches(batch_size=rows):
        pending.append(batch)
        have += batch.num_rows
        while have >= rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, rows).combine_chunks()
            rest = table.slice(rows)
            pending, have = rest.to_batches(), rest.num_rows
    if have:
        yield pa.Table.from_batches(pending).combine_chunks()


def decide_batch(
    profile: Profile,
    input: str | Path,
    out: str | Path,
    *,
    run_id: str | None = None,
    send_at: datetime | None = None,
    engine: str | None = None,
    rejects: str | Path | None = None,
    summary_path: str | Path | None = None,
) -> BatchSummary:
    """Decide for every customer of ``input`` (a parquet file or folder, local or ``gs://``);
    write the decisions to ``out``, the rejected rows beside it (``beside(out, "rejects")``) and
    the summary as JSON (``beside(out, "summary")``), unless other paths are given."""
    t0 = time.perf_counter()
    cfg = profile.batch
    engine = engine or cfg.engine
    if engine not in ("local", "ray"):
        raise ValueError(f"engine: expected local or ray, got {engine!r}")
    send_at = aware_utc(send_at or datetime.now(UTC), "send_at")
    dataset = _dataset(input)
    total, columns = dataset.count_rows(), dataset.schema.names
    run_id = run_id or default_run_id(input, send_at)
    rejects_path = Path(rejects) if rejects else beside(out, "rejects")
    summary_file = Path(summary_path) if summary_path else beside(out, "summary")
    run = BatchRun.open(profile, run_id, send_at)
    try:
        with ExitStack() as stack:
            out_tmp = stack.enter_context(atomic_path(out))
            rej_tmp = stack.enter_context(atomic_path(rejects_path))
            collector = _Collector(out_tmp, rej_tmp, run.id_column)
            chunks = max(1, math.ceil(total / cfg.chunk_rows))
            progress = Progress("decide-batch", chunks, unit="chunk")
            for chunk in (_ray_chunks if engine == "ray" else _local_chunks)(run, input, cfg):
                collector.add(chunk)
                done = min(chunks, math.ceil(collector.rows / cfg.chunk_rows))
                rate = collector.rows / max(time.perf_counter() - t0, 1e-9)
                progress.step(
                    max(done, 1),
                    f"{collector.rows}/{total} rows, {rate:,.0f} rows/s, "
                    f"{collector.contacts} contacts, {collector.rejected} rejected",
                )
            collector.close()
        spent = run.ledger.spent(run.ledger.period_key(send_at))
        missing = run.models.missing_features(columns)
        versions, release = run.models.versions, run.models.release
    finally:
        run.close()
    wall = time.perf_counter() - t0
    c = collector
    budget = profile.contract.limits.budget_per_period
    summary = BatchSummary(
        run_id=run_id,
        engine=engine,
        input=str(input),
        decisions=str(out),
        rejects=str(rejects_path),
        send_at=send_at,
        period=run.ledger.period_key(send_at),
        rows=c.rows,
        decided=c.decided,
        rejected=c.rejected,
        replayed=c.replayed,
        contacts=c.contacts,
        contact_rate=c.contacts / c.decided if c.decided else 0.0,
        spend=c.spend_micros / 1_000_000,
        period_spent=spent,
        budget=budget,
        budget_used=spent / budget,
        offer_mix=dict(sorted(c.offer_mix.items())),
        arms=dict(sorted(c.arms.items())),
        sources=dict(sorted(c.sources.items())),
        blocked=dict(sorted(c.blocked.items())),
        value_sources=dict(sorted(c.value_sources.items())),
        missing_features=missing,
        models=versions,
        release=release,
        wall_s=wall,
        rows_per_s=c.rows / wall if wall > 0 else 0.0,
    )
    write_json(summary_file, summary.model_dump(mode="json"))
    return summary


def _local_chunks(run: BatchRun, input, cfg) -> Iterator[pa.Table]:
    m = run.models
    for table in _chunks(
        input, cfg.chunk_rows, {*m.risk.pre.categorical, *m.accept.pre.categorical}
    ):
        yield decide_chunk(run, table)


# ------------------------------------------------------------------------------------ on Ray


class RayDecider:
    """A Ray Data actor: opens the run once (models, ledger), then decides chunk after chunk."""

    def __init__(self, profile_json: str, run_id: str, send_at: str, spent_at_start: int):
        profile = Profile.model_validate_json(profile_json)
        self.run = BatchRun.open(profile, run_id, datetime.fromisoformat(send_at), spent_at_start)

    def __call__(self, batch: pa.Table) -> pa.Table:
        return decide_chunk(self.run, batch)


def _ray_chunks(run: BatchRun, input, cfg) -> Iterator[pa.Table]:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import ray.data

    started_here = not ray.is_initialized()
    if started_here:
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        if cfg.ray_address:
            kwargs["address"] = cfg.ray_address
        else:
            # One core per actor and one for the read tasks feeding them: with every core held
            # by an actor, nothing reads and the actors wait forever.
            kwargs["num_cpus"] = cfg.ray_workers + 1
        ray.init(**kwargs)
    try:
        ctx = ray.data.DataContext.get_current()
        # Records come back in input order, so the driver numbers the rows as the local engine.
        ctx.execution_options.preserve_order = True
        ctx.enable_progress_bars = False
        # Streaming, no shuffle: a file of one row group would otherwise be one block, and one
        # block feeds one actor.
        fs, files = _source(input)
        data = ray.data.read_parquet(files, filesystem=fs).repartition(
            target_num_rows_per_block=cfg.chunk_rows
        )
        decided = data.map_batches(
            RayDecider,
            fn_constructor_kwargs={
                "profile_json": run.profile.model_dump_json(),
                "run_id": run.run_id,
                "send_at": run.send_at.isoformat(),
                "spent_at_start": run.spent_at_start,
            },
            batch_size=cfg.chunk_rows,
            batch_format="pyarrow",
            compute=ray.data.ActorPoolStrategy(size=cfg.ray_workers),
            num_cpus=1,
        )
        for batch in decided.iter_batches(batch_format="pyarrow", batch_size=None):
            yield batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
    finally:
        if started_here:
            ray.shutdown()


def offer_names(profile: Profile) -> list[str]:
    return [profile.contract.offer_reason(i) for i in range(len(profile.contract.offers))]
