"""``retention``: the orchestrating transformer behind ``/v1/models/retention:predict``.

One request: validate, pick the A/B arm, ask ``risk`` and ``accept`` (and ``phase-health`` when
the journey is given) at once, let the policy (treatment) or the business-as-usual rule (control)
propose an action, have the contact ledger apply the hard limits and record the decision in one
transaction, then ask ``writer`` for the message and shield it. Predictors are called with
aiohttp (KServe's own client was measured ~3.6x slower for this hop). Any predictor that fails,
times out or is not ready is replaced by the rules engine or the template message, and named in
``degraded``; the shield is never skipped and the writer never blocks a decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import aiohttp
from kserve import Model
from kserve.errors import InvalidInput
from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from retention import catalogue
from retention.config import RetentionEnvConfig, ServingConfig
from retention.contract import ContactContract, period_progress
from retention.decision.observe import LiveCustomer, observation
from retention.decision.rules import RuleDecision, business_as_usual, next_best_action, risk_level
from retention.experiments.ab import assign_arm
from retention.messaging.shield import shielded, template_message
from serving import metrics
from serving.ledger import ContactLedger, Proposal

log = logging.getLogger(__name__)

Scalar = str | int | float | bool | None


def _service(model: str) -> str:
    service = catalogue.spec(model).service
    if service is None:
        raise ValueError(f"the transformer calls {model!r}, which the catalogue does not serve")
    return service


# The predictors this orchestrator calls, by catalogue model: their names here (the predictor
# URLs' keys, ``degraded``, the hop metrics) are the catalogue's service names.
RISK, ACCEPT, PHASE_HEALTH, POLICY, WRITER = (
    _service(m) for m in ("risk", "accept", "phase_health", "policy", "writer")
)


class CustomerFacts(BaseModel):
    """What the caller knows about the customer; model features may be added as extra keys."""

    model_config = ConfigDict(extra="allow")

    customer_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:@-]+$")
    name: str | None = Field(default=None, max_length=200)
    tenure: float | None = Field(default=None, ge=0)
    plan: str | None = Field(default=None, max_length=100)
    timezone: str | None = None
    value: float | None = Field(default=None, ge=0, description="12-month value, if known.")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                ZoneInfo(v)
            except (ZoneInfoNotFoundError, ValueError) as err:
                raise ValueError(f"unknown IANA time zone {v!r}") from err
        return v

    def extras(self) -> dict[str, Scalar]:
        out = dict(self.model_extra or {})
        for key, value in out.items():
            if not isinstance(value, Scalar):
                raise ValueError(f"customer_facts.{key}: expected a string, number or null")
        return out


class RetainRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Idempotency key."
    )
    customer_facts: CustomerFacts
    journey: list[dict[str, Scalar]] | None = Field(
        default=None, max_length=12, description="One row per journey phase, for phase-health."
    )
    send_at: AwareDatetime | None = None


def parse_request(payload: Any) -> RetainRequest:
    """The validated request, or ``InvalidInput`` (HTTP 400) naming each bad field."""
    if isinstance(payload, dict) and "instances" in payload:
        rows = payload["instances"]
        if not isinstance(rows, list) or len(rows) != 1:
            raise InvalidInput("instances: exactly one request per call")
        payload = rows[0]
    try:
        req = RetainRequest.model_validate(payload)
        req.customer_facts.extras()
    except ValidationError as err:
        parts = []
        for e in err.errors():
            where = ".".join(str(x) for x in e["loc"]) or "body"
            parts.append(f"{where}: {e['msg']}")
        raise InvalidInput("invalid request: " + "; ".join(parts)) from None
    except ValueError as err:
        raise InvalidInput(f"invalid request: {err}") from None
    return req


@dataclass
class PolicyContext:
    """What the transformer needs from the exported policy's metadata to build observations."""

    env: RetentionEnvConfig = field(default_factory=RetentionEnvConfig)
    mean_value: float = 1000.0
    available: bool = False


@dataclass
class Hop:
    ok: bool
    rows: list[dict[str, Any]] | None
    error: str | None = None


class RetentionTransformer(Model):
    def __init__(
        self,
        cfg: ServingConfig,
        predictor_urls: dict[str, str],
        ledger: ContactLedger,
        policy: PolicyContext,
        contract: ContactContract,
        versions: dict[str, str] | None = None,
        name: str = catalogue.ORCHESTRATOR,
    ):
        super().__init__(name)
        self.cfg = cfg
        self.urls = predictor_urls
        self.ledger = ledger
        self.policy = policy
        # Prices, messages and the shield follow it; the ledger enforces its limits.
        self.contract = contract
        self.versions = versions or {}
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> bool:
        self.ready = True
        return self.ready

    async def session(self) -> aiohttp.ClientSession:
        # An aiohttp session is bound to the loop that made it: make one per serving loop.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            )
            self._session_loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, predictor: str, rows: list[dict[str, Any]], timeout_ms: int) -> Hop:
        url = self.urls.get(predictor)
        if not url:
            return Hop(False, None, "not deployed")
        t = time.perf_counter()
        try:
            session = await self.session()
            async with session.post(
                f"{url.rstrip('/')}/v1/models/{predictor}:predict",
                json={"instances": rows},
                timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    return Hop(False, None, f"HTTP {resp.status}: {str(body)[:200]}")
                return Hop(True, body["predictions"])
        except TimeoutError:
            return Hop(False, None, f"timed out after {timeout_ms} ms")
        except (aiohttp.ClientError, ValueError, KeyError, TypeError) as err:
            return Hop(False, None, f"{type(err).__name__}: {err}")
        finally:
            metrics.HOP_SECONDS.labels(predictor).observe(time.perf_counter() - t)

    async def predict(self, payload, headers=None, response_headers=None):
        return await self.retain(parse_request(payload))

    # ------------------------------------------------------------------------------- decision

    async def retain(self, req: RetainRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        facts = req.customer_facts
        now = req.send_at or datetime.now(UTC)
        # Without a request id a retry cannot be recognised: each call is a new decision.
        request_id = req.request_id or f"auto-{uuid.uuid4().hex}"
        recorded = await asyncio.to_thread(self.ledger.get, request_id)
        if recorded is not None and recorded.customer_id != facts.customer_id:
            raise InvalidInput(f"request_id: {request_id!r} was already used for another customer")
        if recorded is not None and recorded.response is not None:
            return recorded.response  # an idempotent retry: the first answer, nothing re-decided
        features = {**facts.extras(), "tenure": facts.tenure, "plan": facts.plan}
        arm = assign_arm(facts.customer_id, self.cfg.experiment)
        degraded: list[str] = []

        timeout = self.cfg.predictor_timeout_ms
        calls = [self.call(RISK, [features], timeout), self.call(ACCEPT, [features], timeout)]
        if req.journey:
            calls.append(self.call(PHASE_HEALTH, list(req.journey), timeout))
        hops = await asyncio.gather(*calls)
        risk_hop, accept_hop = hops[0], hops[1]
        for name, hop in zip((RISK, ACCEPT, PHASE_HEALTH), hops, strict=False):
            if not hop.ok:
                degraded.append(name)
                metrics.FALLBACKS.labels(name).inc()
                log.warning("%s unavailable (%s): falling back", name, hop.error)
        churn = risk_hop.rows[0]["churn_probability"] if risk_hop.ok else None
        accept = accept_hop.rows[0]["accept_probability"] if accept_hop.ok else None
        value = _value(facts, self.policy.mean_value)

        proposal = await self.propose(
            arm, facts, churn, accept, value, now, request_id, degraded, timeout
        )
        t = time.perf_counter()
        decided = await asyncio.to_thread(
            self.ledger.decide, request_id, facts.customer_id, proposal, now, facts.timezone
        )
        metrics.HOP_SECONDS.labels("ledger").observe(time.perf_counter() - t)
        if decided.replay and decided.response is not None:
            return decided.response
        for rule in decided.blocked:
            metrics.LEDGER_BLOCKS.labels(rule).inc()

        message, safety = None, None
        if decided.contact:
            message, safety = await self.message(facts, decided.offer_level, now, degraded)
        response = {
            "request_id": request_id,
            "decision": {
                "contact": decided.contact,
                "offer_level": decided.offer_level if decided.contact else None,
                "offer_discount_percent": (
                    self.contract.level(decided.offer_level).percent if decided.contact else None
                ),
                "followup_days": proposal.followup_days,
                "source": proposal.source,
                "blocked_by": list(decided.blocked),
            },
            "message": message,
            "safety": safety,
            "risk": {
                "churn_probability": churn,
                "risk_level": risk_level(churn),
                "factors": risk_hop.rows[0].get("factors", []) if risk_hop.ok else [],
            },
            "accept_probability": accept,
            "phase_health": _phase_health(hops[2]) if len(hops) > 2 and hops[2].ok else None,
            "experiment": {
                "name": self.cfg.experiment.name,
                "arm": arm,
                "propensity": proposal.propensity,
            },
            "models": self.versions,
            "degraded": degraded,
        }
        await asyncio.to_thread(self.ledger.complete, request_id, response)
        offer = str(decided.offer_level) if decided.contact else "none"
        metrics.DECISIONS.labels(arm, offer).inc()
        metrics.HOP_SECONDS.labels("total").observe(time.perf_counter() - t0)
        return response

    async def propose(
        self, arm, facts, churn, accept, value, now, request_id, degraded, timeout
    ) -> Proposal:
        env = self.policy.env
        if arm == "control":
            rule = business_as_usual(churn, self.contract)
            return self._proposal(rule, value, arm, 1.0, "bau")
        if churn is not None and accept is not None and self.policy.available:
            obs = observation(
                self._live(facts.customer_id, churn, accept, value, now),
                env,
                self.contract,
                self.policy.mean_value,
            )
            hop = await self.call(POLICY, [{"observation": obs.tolist()}], timeout)
            if hop.ok:
                a = hop.rows[0]
                rule = RuleDecision(
                    bool(a["contact"]), int(a["offer_level"]), int(a["followup_days"]), "policy"
                )
                return self._proposal(rule, value, arm, float(a["action_probability"]), "policy")
            degraded.append(POLICY)
            metrics.FALLBACKS.labels(POLICY).inc()
            log.warning("policy unavailable (%s): rules engine", hop.error)
        elif POLICY not in degraded:
            degraded.append(POLICY)
        rule = next_best_action(churn, value, facts.tenure, self.policy.mean_value, self.contract)
        return self._proposal(rule, value, arm, 1.0, "rules")

    def _proposal(self, rule: RuleDecision, value, arm, propensity, source) -> Proposal:
        return make_proposal(rule, value, arm, propensity, source, self.contract)

    def _live(self, customer_id, churn, accept, value, now) -> LiveCustomer:
        """The customer as the policy saw customers in training, from the ledger's records."""
        env, led, limits = self.policy.env, self.ledger, self.contract.limits
        period = led.period_key(now)
        mine = [c for c in led.contacts(customer_id) if led.period_key(c.decided_at) == period]
        days = [(now - c.decided_at).days for c in mine]
        offer_active = any(
            c.offer_level > 0 and (now - c.decided_at).days < env.offer_effect_days for c in mine
        )
        day = int(period_progress(now, limits.period) * limits.period_days)
        return LiveCustomer(
            churn_risk=float(churn),
            accept_probs=tuple(float(x) for x in accept),
            value=value,
            day=min(day, limits.period_days - 1),
            contacts=len(mine),
            days_since_contact=min(days) if days else None,
            offer_active=offer_active,
            budget_left_share=1.0 - led.spent(period) / limits.budget_per_period,
        )

    async def message(self, facts: CustomerFacts, level: int, now, degraded):
        plain = {
            **facts.extras(),
            "name": facts.name,
            "tenure": facts.tenure,
            "plan": facts.plan,
            "timezone": facts.timezone,
        }
        plain = {k: v for k, v in plain.items() if v is not None}
        text = None
        if self.cfg.use_writer:
            hop = await self.call(
                WRITER, [{"facts": plain, "offer_level": level}], self.cfg.writer_timeout_ms
            )
            if hop.ok:
                text = hop.rows[0]["message"]
            else:
                degraded.append(WRITER)
                metrics.FALLBACKS.labels(WRITER).inc()
        if text is None:
            text = template_message(plain, level, self.contract)
        t = time.perf_counter()
        sent, verdict = shielded(text, plain, level, self.contract, send_at=now)
        metrics.HOP_SECONDS.labels("shield").observe(time.perf_counter() - t)
        for v in verdict.violations:
            metrics.SHIELD_BLOCKS.labels(v.rule).inc()
        return sent, {**verdict.to_dict(), "replaced_by_template": sent != text}


def make_proposal(
    rule: RuleDecision,
    value: float,
    arm: str,
    propensity: float,
    source: str,
    contract: ContactContract,
) -> Proposal:
    """What the ledger is asked to allow, priced by the contract: a contact is charged as if its
    offer were accepted (``contract.worst_case_cost``), so the budget holds in the worst case."""
    cost = contract.worst_case_cost(rule.offer_level, value) if rule.contact else 0.0
    return Proposal(
        contact=rule.contact,
        offer_level=rule.offer_level,
        offer_cost=float(cost),
        followup_days=rule.followup_days,
        arm=arm,
        propensity=float(propensity),
        source=source,
    )


def _value(facts: CustomerFacts, mean_value: float) -> float:
    """12-month value: given, or twelve monthly bills, or the book's mean."""
    if facts.value is not None:
        return float(facts.value)
    monthly = (facts.model_extra or {}).get("MonthlyCharges")
    if isinstance(monthly, (int, float)) and monthly >= 0:
        return 12.0 * float(monthly)
    return float(mean_value)


def _phase_health(hop: Hop) -> dict[str, Any]:
    scores = {r["phase"]: r["health"] for r in hop.rows}
    return {"phases": scores, "overall": sum(scores.values()) / max(len(scores), 1)}
