"""``retention``: the orchestrating transformer behind ``/v1/models/retention:predict``.

One request: validate, read the ledger once (a retry's stored answer is returned as it is; else
the customer's period so far), pick the A/B arm, ask ``risk`` and ``accept`` (and ``phase-health``
when the journey is given) at once, let the policy (treatment) or the business-as-usual rule
(control) propose an action, ask ``writer`` for the message of a proposed contact and shield it,
then have the contact ledger apply the hard limits and record the decision with its complete
answer in one transaction (a blocked contact's message is not sent). Ledger calls run in the
ledger's own threads, never on the event loop. Predictors are called through ``serving.hops``:
in this process when co-located (``serving.mode``), else over HTTP. Any predictor that fails,
times out or is not ready is replaced by the rules engine or the template message, and named in
``degraded``; the shield is never skipped and the writer never blocks a decision.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kserve import Model
from kserve.errors import InvalidInput
from pydantic import ValidationError

from retention import catalogue
from retention.config import RetentionEnvConfig, ServingConfig
from retention.contract import ContactContract, period_progress
from retention.decision.observe import LiveCustomer, observation, uplift_by_level
from retention.decision.rules import RuleDecision, business_as_usual, next_best_action, risk_level
from retention.experiments.ab import assign_arm
from retention.insights.segments import SegmentModel
from retention.messaging.shield import shielded, template_message
from retention.models.ltv import CustomerValue
from serving import metrics
from serving.hops import Hop, Hops
from serving.ledger import (
    MICROS,
    ContactLedger,
    LedgerDecision,
    LedgerView,
    Proposal,
    RequestIdConflictError,
    release_of,
)
from serving.schema import CustomerFacts, RetainRequest, parse_request

if TYPE_CHECKING:
    from serving.predictors import Predictor

log = logging.getLogger(__name__)


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
LTV = _service("ltv")


@dataclass
class PolicyContext:
    """What the transformer needs from the exported policy's metadata to build observations."""

    env: RetentionEnvConfig = field(default_factory=RetentionEnvConfig)
    mean_value: float = 1000.0
    available: bool = False


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
        local: Mapping[str, Predictor] | None = None,
        segments: SegmentModel | None = None,
    ):
        super().__init__(name)
        self.cfg = cfg
        # Co-located predictors (``local``) are called in this process; the others over HTTP.
        self.hops = Hops(predictor_urls, local)
        self.ledger = ledger
        self.policy = policy
        # Prices, messages and the shield follow it; the ledger enforces its limits.
        self.contract = contract
        self.versions = versions or {}
        # The released segmentation: a customer's segment from the RFM facts it sends.
        self.segments = segments

    def load(self) -> bool:
        self.ready = True
        return self.ready

    def served_models(self) -> list[Model]:
        """What its server registers: itself and its co-located predictors (each still answers
        on its own /v1/models/NAME routes)."""
        return [self, *self.hops.local.values()]

    async def close(self) -> None:
        await self.hops.close()

    async def call(self, predictor: str, rows: list[dict[str, Any]], timeout_ms: int) -> Hop:
        """One predictor hop, in-process or HTTP (:class:`serving.hops.Hops`): never raises."""
        return await self.hops.call(predictor, rows, timeout_ms)

    async def predict(self, payload, headers=None, response_headers=None):
        return await self.retain(parse_request(payload, self.cfg.limits))

    # ------------------------------------------------------------------------------- decision

    async def retain(self, req: RetainRequest) -> dict[str, Any]:
        t0 = time.perf_counter()
        facts = req.customer_facts
        now = req.send_at or datetime.now(UTC)
        # Without a request id a retry cannot be recognised: each call is a new decision.
        request_id = req.request_id or f"auto-{uuid.uuid4().hex}"
        # One read, in a ledger thread: the stored answer and the customer's period so far.
        t = time.perf_counter()
        try:
            view = await self.ledger.run(self.ledger.view, request_id, facts.customer_id, now)
        except RequestIdConflictError as err:
            raise InvalidInput(str(err)) from None
        metrics.HOP_SECONDS.labels("ledger_read").observe(time.perf_counter() - t)
        if view.answer is not None:
            return view.answer  # an idempotent retry: the first answer, nothing re-decided
        features = {**facts.extras(), "tenure": facts.tenure, "plan": facts.plan}
        segment = None
        if self.segments is not None:
            try:
                segment = self.segments.segment_of(features)
            except ValueError as err:
                raise InvalidInput(f"customer_facts: {err}") from None
        arm = assign_arm(facts.customer_id, self.cfg.experiment)
        degraded: list[str] = []

        timeout = self.cfg.predictor_timeout_ms
        calls = [self.call(RISK, [features], timeout), self.call(ACCEPT, [features], timeout)]
        if req.journey:
            calls.append(self.call(PHASE_HEALTH, list(req.journey), timeout))
        # The value hop runs beside the others; a value the caller gives needs none.
        ltv_call = self.call(LTV, [features], timeout) if facts.value is None else _no_hop()
        *hops, ltv_hop = await asyncio.gather(*calls, ltv_call)
        risk_hop, accept_hop = hops[0], hops[1]
        for name, hop in zip((RISK, ACCEPT, PHASE_HEALTH), hops, strict=False):
            if not hop.ok:
                degraded.append(name)
                metrics.FALLBACKS.labels(name).inc()
                log.warning("%s unavailable (%s): falling back", name, hop.error)
        churn = risk_hop.rows[0]["churn_probability"] if risk_hop.ok else None
        accept = accept_hop.rows[0]["accept_probability"] if accept_hop.ok else None
        valued, unavailable = _value(facts, ltv_hop, self.policy.mean_value)
        if unavailable:
            degraded.append(LTV)
            metrics.FALLBACKS.labels(LTV).inc()
            log.warning("%s unavailable (%s): the book's mean value", LTV, unavailable)
        value = valued.value
        uplift, live = None, None
        if churn is not None and accept is not None:
            # What the policy observes and the answer's uplift are built from this one view.
            live = live_customer(view, churn, accept, value, now, self.policy.env, self.contract)
            gains = uplift_by_level(live, self.policy.env, self.contract)
            uplift = {"expected_net_value": [round(float(g), 4) for g in gains],
                      "offer_effect": live.effect}  # fmt: skip

        proposal = await self.propose(arm, facts, churn, live, value, degraded, timeout)
        # Recorded with the decision, for the monitor: the served score and the deciding release.
        proposal = replace(proposal, churn_probability=churn, release=release_of(self.versions))
        # The message exists (written or templated, and shielded) before the write, so the one
        # write transaction can store the complete answer. A limit the read already shows broken
        # stays broken in the write: such a contact gets no message that would never be sent.
        level = None
        if view.recorded:
            # Decided before without an answer (a batch run): the write replays that decision.
            recorded = await self.ledger.run(self.ledger.get, request_id)
            level = recorded.offer_level if recorded is not None and recorded.contact else None
        elif proposal.contact and not self.ledger.foreseen_blocks(
            view, proposal, now, facts.timezone
        ):
            level = proposal.offer_level
        message, safety = None, None
        if level is not None:
            message, safety = await self.message(facts, level, now, degraded)

        def respond(decided: LedgerDecision) -> dict[str, Any]:
            """The answer for the ledger's verdict (a replayed one's own fields, not this
            proposal's): pure, it runs inside the write transaction. A blocked contact sends
            nothing, so its message is not in the answer."""
            sent = decided.contact and decided.offer_level == level
            return {
                "request_id": request_id,
                "decision": {
                    "contact": decided.contact,
                    "offer_level": decided.offer_level if decided.contact else None,
                    "offer_discount_percent": (
                        self.contract.level(decided.offer_level).percent
                        if decided.contact
                        else None
                    ),
                    "followup_days": decided.followup_days,
                    "source": decided.source,
                    "blocked_by": list(decided.blocked),
                },
                "message": message if sent else None,
                "safety": safety if sent else None,
                "risk": {
                    "churn_probability": churn,
                    "risk_level": risk_level(churn),
                    "factors": risk_hop.rows[0].get("factors", []) if risk_hop.ok else [],
                },
                "accept_probability": accept,
                "value": valued.model_dump(),
                "phase_health": _phase_health(hops[2]) if len(hops) > 2 and hops[2].ok else None,
                "uplift": uplift,
                "segment": segment,
                "experiment": {
                    "name": self.cfg.experiment.name,
                    "arm": decided.arm,
                    "propensity": decided.propensity,
                },
                "models": self.versions,
                "degraded": list(degraded),
            }

        t = time.perf_counter()
        try:
            answered = await self.ledger.run(
                self.ledger.answer,
                request_id,
                facts.customer_id,
                proposal,
                now,
                facts.timezone,
                respond,
            )
        except RequestIdConflictError as err:  # a racing request with this id, another customer
            raise InvalidInput(str(err)) from None
        metrics.HOP_SECONDS.labels("ledger").observe(time.perf_counter() - t)
        decided = answered.decision
        if not decided.replay:  # a racing retry's answer was counted where it was decided
            for rule in decided.blocked:
                metrics.LEDGER_BLOCKS.labels(rule).inc()
            offer = str(decided.offer_level) if decided.contact else "none"
            metrics.DECISIONS.labels(arm, offer).inc()
        metrics.HOP_SECONDS.labels("total").observe(time.perf_counter() - t0)
        return answered.response

    async def propose(
        self, arm, facts, churn, live: LiveCustomer | None, value, degraded, timeout
    ) -> Proposal:
        """``live``: the customer as the policy observes it, None when risk or accept is down."""
        if arm == "control":
            rule = business_as_usual(churn, self.contract)
            return self._proposal(rule, value, arm, 1.0, "bau")
        if live is not None and self.policy.available:
            obs = observation(live, self.policy.env, self.contract, self.policy.mean_value)
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


def live_customer(
    view: LedgerView,
    churn: float,
    accept,
    value: float,
    now: datetime,
    env: RetentionEnvConfig,
    contract: ContactContract,
    spent_micros: int | None = None,
) -> LiveCustomer:
    """The customer as the policy saw customers in training, from the ledger's read; the budget
    left after ``spent_micros`` (default: the view's spend; a batch run passes its start's)."""
    limits = contract.limits
    last, offer = view.last_contact_in_period, view.last_offer_in_period
    day = int(period_progress(now, limits.period) * limits.period_days)
    spent = view.spent_micros if spent_micros is None else spent_micros
    return LiveCustomer(
        churn_risk=float(churn),
        accept_probs=tuple(float(x) for x in accept),
        value=float(value),
        day=min(day, limits.period_days - 1),
        contacts=view.contacts_in_period,
        days_since_contact=None if last is None else (now - last).days,
        # The latest offer is the one still running, if any is.
        offer_active=offer is not None and (now - offer).days < env.offer_effect_days,
        budget_left_share=1.0 - spent / MICROS / limits.budget_per_period,
    )


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


async def _no_hop() -> None:
    return None


def _value(
    facts: CustomerFacts, hop: Hop | None, mean_value: float
) -> tuple[CustomerValue, str | None]:
    """The customer's 12-month value on the scale the policy was trained on, and why the LTV
    predictor could not give it (None when it did, or was not needed).

    Given by the caller; else the LTV predictor's answer (``LtvModel.customer_values``: the
    model on order facts, or the customer book's own mapping, the function the book used); else
    the book's mean value that the policy's metadata records.
    """
    if facts.value is not None:
        return CustomerValue(value=float(facts.value), source="given"), None
    why = "not called" if hop is None else hop.error
    if hop is not None and hop.ok:
        try:
            return CustomerValue.model_validate(hop.rows[0]), None
        except (ValidationError, IndexError, TypeError) as err:
            why = f"unusable answer: {err}"
    return CustomerValue(value=float(mean_value), source="book_mean"), why


def _phase_health(hop: Hop) -> dict[str, Any]:
    scores = {r["phase"]: r["health"] for r in hop.rows}
    return {"phases": scores, "overall": sum(scores.values()) / max(len(scores), 1)}
