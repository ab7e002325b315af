"""What ``/retain`` (and ``/v1/models/retention:predict``) accepts and answers, as typed models.

The request models are what the routes validate and what the OpenAPI document publishes, so a
caller reads the same limits the server enforces: the profile's ``serving.limits`` (extra facts
bounded in count, key and value size; ``send_at`` inside a window around now) are built into the
model classes by :func:`request_models`, the defaults into :class:`RetainRequest` itself.

Every number is finite and within ±``serving.protocol.MAX_NUMBER``: JSON's ``NaN`` and
``Infinity`` literals and ``1e999`` are refused where the body is parsed
(:func:`serving.protocol.loads_finite`) and again here, for callers that hand over Python
objects. Error messages name the field and never echo more than a bounded prefix of what was
sent.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, ClassVar, Literal
from zoneinfo import available_timezones

from kserve.errors import InvalidInput
from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainValidator,
    Tag,
    ValidationError,
    WithJsonSchema,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from retention.config import RequestLimits
from retention.contract import LIMITS, N_LEVELS
from retention.decision.rules import RiskLevel
from retention.models.ltv import CustomerValue
from serving.protocol import MAX_NUMBER, is_finite_number

Scalar = str | int | float | bool | None

ID_PATTERN = r"^[A-Za-z0-9._:@-]+$"
# A key is a feature or fact name: printable, so that it cannot forge log lines or messages.
KEY_PATTERN = r"^[^\x00-\x1f\x7f]+$"
# How much of a bad key or value an error message repeats.
ECHO_CHARS = 40
# How many field errors one 400 lists.
MAX_ERRORS = 10


@cache
def time_zones() -> frozenset[str]:
    """The IANA time zones a request may name: the ones this machine's zone data has."""
    return frozenset(available_timezones())


def clip(text: Any, n: int = ECHO_CHARS) -> str:
    """At most ``n`` characters of ``text``, non-printable ones escaped: safe to repeat."""
    s = str(text)
    s = s if len(s) <= n else s[:n] + "…"
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in s)


def finite_number(v: int | float) -> int | float:
    """``v`` if it is a number a model can use, else the error that says why not."""
    if not is_finite_number(v):
        raise PydanticCustomError(
            "finite_number", "expected a finite number within ±{max}", {"max": f"{MAX_NUMBER:g}"}
        )
    return v


def fact_type(limits: RequestLimits) -> Any:
    """One extra fact or journey value: a bounded string, a finite number, a boolean or null."""
    n = limits.max_fact_value_chars

    def check(v: Any) -> Scalar:
        if v is None or isinstance(v, bool):
            return v
        if isinstance(v, (int, float)):
            return finite_number(v)
        if isinstance(v, str):
            if len(v) > n:
                raise PydanticCustomError(
                    "fact_too_long",
                    "{length} characters, at most {max} (serving.limits.max_fact_value_chars)",
                    {"length": len(v), "max": n},
                )
            return v
        raise PydanticCustomError("fact_type", "expected a string, number, boolean or null")

    schema = {
        "anyOf": [
            {"type": "string", "maxLength": n},
            {"type": "number", "minimum": -MAX_NUMBER, "maximum": MAX_NUMBER},
            {"type": "boolean"},
            {"type": "null"},
        ]
    }
    return Annotated[Any, PlainValidator(check), WithJsonSchema(schema)]


def check_keys(keys: list[str], limits: RequestLimits, what: str) -> None:
    """The count and shape of fact keys, or the error naming the limit broken."""
    if len(keys) > limits.max_extra_facts:
        raise PydanticCustomError(
            "too_many_facts",
            "{count} {what}, at most {max} (serving.limits.max_extra_facts)",
            {"count": len(keys), "what": what, "max": limits.max_extra_facts},
        )
    for key in keys:
        if not isinstance(key, str) or not 0 < len(key) <= limits.max_fact_key_chars:
            raise PydanticCustomError(
                "fact_key",
                "the key '{key}' has {length} characters, expected 1-{max} "
                "(serving.limits.max_fact_key_chars)",
                {"key": clip(key), "length": len(str(key)), "max": limits.max_fact_key_chars},
            )
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key):
            raise PydanticCustomError(
                "fact_key", "the key '{key}' has control characters", {"key": clip(key)}
            )


def _key_schema(limits: RequestLimits) -> dict[str, Any]:
    return {"maxLength": limits.max_fact_key_chars, "minLength": 1, "pattern": KEY_PATTERN}


class CustomerFacts(BaseModel):
    """What the caller knows about the customer; model features may be added as extra keys
    (bounded in count, key length and value size by ``serving.limits``)."""

    limits: ClassVar[RequestLimits] = RequestLimits()

    model_config = ConfigDict(
        extra="allow",
        allow_inf_nan=False,
        json_schema_extra=lambda schema, cls: cls._limit_schema(schema),
    )
    __pydantic_extra__: dict[str, fact_type(RequestLimits())] = Field(init=False)

    customer_id: str = Field(min_length=1, max_length=128, pattern=ID_PATTERN)
    name: str | None = Field(default=None, max_length=200)
    tenure: float | None = Field(default=None, ge=0, le=MAX_NUMBER)
    plan: str | None = Field(default=None, max_length=100)
    timezone: str | None = Field(
        default=None,
        max_length=64,
        description="IANA time zone (for quiet hours); the contract's default zone if absent.",
        json_schema_extra=lambda schema: schema.update(enum=[*sorted(time_zones()), None]),
    )
    value: float | None = Field(
        default=None, ge=0, le=MAX_NUMBER, description="12-month value, if known."
    )

    @classmethod
    def _limit_schema(cls, schema: dict[str, Any]) -> None:
        schema["maxProperties"] = len(cls.model_fields) + cls.limits.max_extra_facts
        schema["propertyNames"] = _key_schema(cls.limits)

    @model_validator(mode="before")
    @classmethod
    def _bounded(cls, data: Any) -> Any:
        if isinstance(data, dict):
            extra = [k for k in data if k not in cls.model_fields]
            check_keys(extra, cls.limits, "extra facts")
        return data

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str | None) -> str | None:
        if v is not None and v not in time_zones():
            raise ValueError(f"unknown IANA time zone {clip(v)!r}")
        return v

    def extras(self) -> dict[str, Scalar]:
        """The facts beyond the named fields (model features), as validated."""
        return dict(self.model_extra or {})


def _journey_row(limits: RequestLimits) -> Any:
    def bounded(row: Any) -> Any:
        if isinstance(row, dict):
            check_keys(list(row), limits, "fields in a journey row")
        return row

    return Annotated[
        dict[str, fact_type(limits)],
        BeforeValidator(bounded),
        Field(json_schema_extra={"propertyNames": _key_schema(limits)}),
    ]


class RetainRequest(BaseModel):
    """One decision: who the customer is, optionally their journey, and when a message would go."""

    limits: ClassVar[RequestLimits] = RequestLimits()

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        pattern=ID_PATTERN,
        description="Idempotency key: a retry with the same id gets the first answer.",
    )
    customer_facts: CustomerFacts
    journey: list[_journey_row(RequestLimits())] | None = Field(
        default=None, max_length=12, description="One row per journey phase, for phase-health."
    )
    send_at: AwareDatetime | None = Field(
        default=None,
        description="When the message would go out (timezone-aware): within "
        "serving.limits.send_at_max_behind_days before and send_at_max_ahead_days after now.",
    )

    @field_validator("send_at")
    @classmethod
    def _in_window(cls, v: datetime | None) -> datetime | None:
        if v is None:
            return v
        lim = cls.limits
        now = datetime.now(UTC)
        try:
            ahead = v - now
        except OverflowError:
            ahead = timedelta.max
        if (
            not -timedelta(days=lim.send_at_max_behind_days)
            <= ahead
            <= timedelta(days=lim.send_at_max_ahead_days)
        ):
            raise ValueError(
                f"must be at most {lim.send_at_max_behind_days} day(s) before and "
                f"{lim.send_at_max_ahead_days} days after now ({now:%Y-%m-%dT%H:%M}Z) "
                "(serving.limits.send_at_max_behind_days / send_at_max_ahead_days)"
            )
        return v


class RetainInstances(BaseModel):
    """The V1 protocol's form of a request: ``{"instances": [request]}``."""

    model_config = ConfigDict(extra="forbid")

    instances: list[RetainRequest] = Field(
        min_length=1, max_length=1, description="Exactly one request per call."
    )


def _v1_form(v: Any) -> str:
    v1 = isinstance(v, RetainInstances) or (isinstance(v, dict) and "instances" in v)
    return "instances" if v1 else "request"


@dataclass(frozen=True)
class RequestModels:
    """The request models under one set of limits."""

    request: type[RetainRequest]
    instances: type[RetainInstances]

    @property
    def v1_body(self) -> Any:
        """What ``/v1/models/retention:predict`` accepts: the bare request or the V1 form."""
        return Annotated[
            Annotated[self.instances, Tag("instances")] | Annotated[self.request, Tag("request")],
            Discriminator(_v1_form),
        ]


def _build(limits: RequestLimits) -> RequestModels:
    facts = type(
        "CustomerFacts",
        (CustomerFacts,),
        {
            "__module__": __name__,
            "__qualname__": "CustomerFacts",
            "__annotations__": {"__pydantic_extra__": dict[str, fact_type(limits)]},
            "limits": limits,
        },
    )
    request = create_model(
        "RetainRequest",
        __base__=RetainRequest,
        __module__=__name__,
        customer_facts=(facts, RetainRequest.model_fields["customer_facts"]),
        journey=(
            list[_journey_row(limits)] | None,
            RetainRequest.model_fields["journey"],
        ),
    )
    request.limits = limits
    instances = create_model(
        "RetainInstances",
        __base__=RetainInstances,
        __module__=__name__,
        instances=(list[request], RetainInstances.model_fields["instances"]),
    )
    return RequestModels(request, instances)


_DEFAULT_LIMITS = RequestLimits()
_MODELS: dict[str, RequestModels] = {
    _DEFAULT_LIMITS.model_dump_json(): RequestModels(RetainRequest, RetainInstances)
}


def request_models(limits: RequestLimits | None = None) -> RequestModels:
    """The request models enforcing ``limits`` (built once per distinct set of limits)."""
    key = (limits or _DEFAULT_LIMITS).model_dump_json()
    if key not in _MODELS:
        _MODELS[key] = _build(limits)
    return _MODELS[key]


def describe_errors(errors: list[dict[str, Any]]) -> str:
    """``invalid request: field.path: what is wrong; ...``, bounded in length."""
    parts = []
    for e in errors[:MAX_ERRORS]:
        loc = [clip(x) for x in e["loc"] if x != "[key]"]
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{'.'.join(loc) or 'body'}: {msg}")
    more = len(errors) - MAX_ERRORS
    if more > 0:
        parts.append(f"and {more} more")
    return "invalid request: " + "; ".join(parts)


def parse_request(payload: Any, limits: RequestLimits | None = None) -> RetainRequest:
    """The validated request (bare or ``{"instances": [request]}``), or ``InvalidInput`` (HTTP
    400) naming each bad field."""
    models = request_models(limits)
    form = models.instances if _v1_form(payload) == "instances" else models.request
    try:
        req = form.model_validate(payload)
    except ValidationError as err:
        raise InvalidInput(describe_errors(err.errors())) from None
    return req.instances[0] if isinstance(req, RetainInstances) else req


# ------------------------------------------------------------------------------------- the answer


class Answer(BaseModel):
    # An answer field the model does not declare fails the tests, not silently the caller.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class Decision(Answer):
    contact: bool
    offer_level: int | None = Field(ge=0, lt=N_LEVELS, description="Null without a contact.")
    offer_discount_percent: int | float | None = Field(ge=0, le=100)
    followup_days: int = Field(ge=0)
    source: Literal["policy", "rules", "bau"] = Field(
        description="Who proposed it: the policy (treatment), the rules engine (treatment "
        "without a policy), business as usual (control)."
    )
    blocked_by: list[Literal[LIMITS]] = Field(
        description="The contract's limits that turned a proposed contact down."
    )


class ShieldViolation(Answer):
    rule: str
    detail: str


class Safety(Answer):
    passed: bool = Field(description="Whether the first message (writer or template) passed.")
    violations: list[ShieldViolation]
    replaced_by_template: bool


class RiskFactor(Answer):
    feature: str
    value: Scalar
    shap: float


class Risk(Answer):
    churn_probability: float | None = Field(ge=0, le=1, description="Null when risk is down.")
    risk_level: RiskLevel
    factors: list[RiskFactor]


class PhaseHealth(Answer):
    phases: dict[str, float]
    overall: float


class Experiment(Answer):
    name: str
    arm: Literal["treatment", "control"]
    propensity: float = Field(ge=0, le=1, description="P(this action) under the acting policy.")


class Uplift(Answer):
    expected_net_value: list[float] = Field(
        description="Per offer level: the expected value saved minus the expected spend of a "
        "contact now (currency), from the risk, accept and value models: what the policy weighs."
    )
    offer_effect: float = Field(
        ge=0,
        description="The offer's effect on this customer relative to the average one (the "
        "uplift model's scale); 1.0, the average, when the request carries no campaign facts.",
    )


class RetainAnswer(Answer):
    """The decision, the message (shielded) and everything it was based on."""

    request_id: str
    decision: Decision
    message: str | None = Field(description="What may be sent; null without a contact.")
    safety: Safety | None
    risk: Risk
    accept_probability: list[float] | None = Field(
        description="P(accept) at each offer level; null when accept is down."
    )
    value: CustomerValue | None = Field(
        default=None, description="The 12-month value offers were priced with, and its interval."
    )
    phase_health: PhaseHealth | None
    uplift: Uplift | None = Field(
        default=None, description="Null when the risk or accept model is down."
    )
    segment: str | None = Field(
        default=None,
        description="The released RFM segment of the customer's order facts (days_since_last, "
        "frequency, total_spend); null when it sent none or the release has no segments.",
    )
    experiment: Experiment
    models: dict[str, str] = Field(description="Predictor name -> the model version it serves.")
    degraded: list[str] = Field(description="Predictors that failed and were replaced by rules.")


class ErrorBody(BaseModel):
    error: str
