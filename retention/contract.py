"""The contact contract: every business rule about contacting a customer, declared once.

The profile's top-level ``contract:`` holds the offer levels (discount, how many bills it runs
for, the words a message uses for it) and the contact limits (cooldown, fatigue cap, the period
budget and its period, quiet hours, the default time zone, the cost of one contact). Everything
that needs one of those facts reads it from here: the simulated env, the serving ledger (inside
its transaction), the safety shield and its template message, the rules engine's reasons, the
transformer's pricing and the synthetic data generators. Nothing else states those numbers.

The functions are pure: ``breaches`` is the one implementation of the hard limits, called by the
env on simulated days and by the ledger on recorded timestamps, so both give the same verdict for
the same history.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Period = Literal["week", "month", "quarter"]
# The env simulates one period as this many days; the ledger keys calendar periods in UTC.
PERIOD_DAYS: dict[str, int] = {"week": 7, "month": 30, "quarter": 90}
# Limits in the order the ledger reports them.
LIMITS = ("quiet_hours", "cooldown", "fatigue", "budget")
# The policy's action space and the accept model's offer feature are built for four levels.
N_LEVELS = 4

_NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
                 "ten", "eleven", "twelve")  # fmt: skip


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OfferLevel(_Strict):
    """One offer level: a share off each bill for a number of bills."""

    discount: float = Field(ge=0, lt=1, description="Share off each bill (0.10 is 10 %).")
    months: int = Field(ge=0, le=12, description="How many bills the discount runs for.")
    words: str | None = Field(
        default=None,
        description="What a message says for this offer, with {percent} and {bills} filled in; "
        "none: '{percent}% off your next {bills}'.",
    )

    @model_validator(mode="after")
    def _consistent(self) -> OfferLevel:
        if (self.discount == 0) != (self.months == 0):
            raise ValueError("a level with no discount runs for 0 months, and only that one")
        if self.words is not None:
            # The shield checks a message states exactly the decided percent: words without it
            # would make the template fail the shield.
            if self.discount and "{percent}" not in self.words:
                raise ValueError(f"words {self.words!r} must contain {{percent}}")
            try:
                self.words.format(percent=0, bills="")
            except (KeyError, IndexError, ValueError) as err:
                raise ValueError(
                    f"words {self.words!r}: only {{percent}} and {{bills}} may be filled in ({err})"
                ) from None
        return self

    @property
    def percent(self) -> int | float:
        """The discount in percent as a message states it (10, or 12.5)."""
        p = round(100 * self.discount, 4)
        return int(p) if float(p).is_integer() else p

    @property
    def bills(self) -> str:
        """'bill', 'two bills', 'three bills', ..."""
        if self.months == 1:
            return "bill"
        return f"{_NUMBER_WORDS[self.months - 1]} bills"

    def phrase(self) -> str:
        """The words a message uses for this offer ('10% off your next three bills')."""
        if not self.discount:
            return ""
        return (self.words or "{percent}% off your next {bills}").format(
            percent=self.percent, bills=self.bills
        )


class ContactLimits(_Strict):
    """Hard limits on contacting one customer, and on spend across customers."""

    cooldown_days: int = Field(default=14, ge=0, description="No contact sooner after the last.")
    fatigue_cap: int = Field(default=3, ge=1, description="Most contacts per customer per period.")
    budget_per_period: float = Field(
        default=15000.0, gt=0, description="Offer spend of the whole base per period (serving)."
    )
    period: Period = Field(
        default="quarter", description="Budget and fatigue period (UTC calendar; env: its days)."
    )
    quiet_start_hour: int = Field(default=22, ge=0, le=23)
    quiet_end_hour: int = Field(
        default=8, ge=0, le=23, description="Quiet hours [start, end) on the customer's clock."
    )
    default_timezone: str = Field(default="UTC", description="When a request names none.")

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, v: str) -> str:
        zone(v, "contract.limits.default_timezone")
        return v

    @property
    def period_days(self) -> int:
        return PERIOD_DAYS[self.period]

    def quiet_hours_text(self) -> str:
        return f"{self.quiet_start_hour:02d}:00-{self.quiet_end_hour:02d}:00"


def _default_offers() -> list[OfferLevel]:
    return [
        OfferLevel(discount=0.0, months=0),
        OfferLevel(discount=0.05, months=3),
        OfferLevel(discount=0.10, months=3),
        OfferLevel(discount=0.15, months=3),
    ]


class ContactContract(_Strict):
    """The offer levels and contact limits; level 0 is a contact without a discount."""

    offers: list[OfferLevel] = Field(default_factory=_default_offers)
    limits: ContactLimits = Field(default_factory=ContactLimits)
    contact_cost: float = Field(default=0.2, ge=0, description="Cost of one contact, in currency.")

    @field_validator("offers")
    @classmethod
    def _levels(cls, v: list[OfferLevel]) -> list[OfferLevel]:
        if len(v) != N_LEVELS:
            raise ValueError(
                f"needs exactly {N_LEVELS} offer levels (the policy's action space and the "
                f"accept model's offer feature are built for {N_LEVELS}); got {len(v)}"
            )
        if v[0].discount != 0:
            raise ValueError("level 0 is a contact without a discount (discount 0)")
        d = [o.discount for o in v]
        if any(b <= a for a, b in zip(d, d[1:], strict=False)):
            raise ValueError(f"discounts must increase with the level, got {d}")
        return v

    # ------------------------------------------------------------------------------ offers

    @property
    def discounts(self) -> tuple[float, ...]:
        return tuple(o.discount for o in self.offers)

    @property
    def percents(self) -> tuple[int | float, ...]:
        return tuple(o.percent for o in self.offers)

    def level(self, offer_level: int) -> OfferLevel:
        if not isinstance(offer_level, int) or not 0 <= offer_level < len(self.offers):
            raise ValueError(f"offer_level must be 0-{len(self.offers) - 1}, got {offer_level!r}")
        return self.offers[offer_level]

    def offer_cost(self, offer_level: int, value: float) -> float:
        """What an accepted offer costs: discount × monthly value × bills (``value`` is 12-month)."""
        o = self.level(offer_level)
        return o.discount * float(value) / 12.0 * o.months

    def worst_case_cost(self, offer_level: int, value: float) -> float:
        """What the budget is charged for a contact: the contact and the offer as if accepted."""
        return self.contact_cost + self.offer_cost(offer_level, value)

    def offer_phrase(self, offer_level: int) -> str:
        return self.level(offer_level).phrase()

    def offer_reason(self, offer_level: int) -> str:
        """How a rule's reason names a level ('10 % offer', 'check-in')."""
        o = self.level(offer_level)
        return f"{o.percent} % offer" if o.discount else "check-in"


# ---------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class ContactHistory:
    """What the limits need to know about one customer and the period so far."""

    days_since_last_contact: float | None  # None: not contacted (this period or before)
    contacts_in_period: int
    spent_in_period: float


def breaches(
    history: ContactHistory,
    cost: float,
    limits: ContactLimits,
    *,
    budget: float | None = None,
    quiet: bool = False,
) -> tuple[str, ...]:
    """The hard limits a contact costing ``cost`` (worst case) would break now, in ``LIMITS`` order.

    ``budget`` is the period budget (default ``limits.budget_per_period``; the env passes its
    portfolio's). ``quiet`` says whether now is inside quiet hours on the customer's clock
    (``in_quiet_hours``); the env has no clock of day and passes False. A contact stamped later
    than now (a negative gap) also breaks the cooldown.
    """
    budget = limits.budget_per_period if budget is None else budget
    out = []
    if quiet:
        out.append("quiet_hours")
    since = history.days_since_last_contact
    if limits.cooldown_days and since is not None and since < limits.cooldown_days:
        out.append("cooldown")
    if history.contacts_in_period >= limits.fatigue_cap:
        out.append("fatigue")
    if history.spent_in_period + cost > budget:
        out.append("budget")
    return tuple(out)


def zone(name: str, field: str = "timezone") -> ZoneInfo:
    """An IANA zone, or a ValueError naming the field."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ValueError(f"{field}: unknown IANA time zone {name!r}") from None


def aware_utc(now: datetime, field: str = "now") -> datetime:
    if not isinstance(now, datetime):
        raise ValueError(f"{field}: expected a datetime, got {now!r}")
    if now.tzinfo is None or now.utcoffset() is None:
        # A naive time is ambiguous across replicas in different zones; refuse to guess.
        raise ValueError(f"{field}: expected a timezone-aware datetime, got naive {now!r}")
    return now.astimezone(UTC)


def in_quiet_hours(now: datetime, limits: ContactLimits, timezone: str | None = None) -> bool:
    """Whether ``now`` is inside quiet hours on the customer's clock (``timezone``, else the
    default). ``start > end`` wraps midnight (22-8 is 22:00-07:59); ``start == end`` means none."""
    tz = zone(timezone or limits.default_timezone)
    hour = aware_utc(now).astimezone(tz).hour
    start, end = limits.quiet_start_hour, limits.quiet_end_hour
    if start == end:
        return False
    return start <= hour < end if start < end else hour >= start or hour < end


def period_bounds(now: datetime, period: Period) -> tuple[datetime, datetime]:
    """The UTC calendar period (ISO week, month or quarter) containing ``now``: [start, end)."""
    now = aware_utc(now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        start = midnight - timedelta(days=now.weekday())
        return start, start + timedelta(days=7)
    months = 1 if period == "month" else 3
    first = now.month if months == 1 else 3 * ((now.month - 1) // 3) + 1
    start = midnight.replace(month=first, day=1)
    nm = first + months
    end = start.replace(year=start.year + (nm - 1) // 12, month=(nm - 1) % 12 + 1)
    return start, end


def period_key(now: datetime, period: Period) -> str:
    """The period containing ``now``, in UTC: ``2026-W07``, ``2026-02`` or ``2026-Q1``."""
    now = aware_utc(now)
    if period == "week":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    if period == "month":
        return f"{now.year}-{now.month:02d}"
    return f"{now.year}-Q{(now.month - 1) // 3 + 1}"


def period_progress(now: datetime, period: Period) -> float:
    """Share of the period elapsed at ``now`` (the env's ``day / period_days``)."""
    start, end = period_bounds(now, period)
    return (aware_utc(now) - start) / (end - start)


def days_between(earlier: datetime, later: datetime) -> float:
    """Days from ``earlier`` to ``later``, exact to the microsecond (negative if reversed)."""
    return (aware_utc(later) - aware_utc(earlier)) / timedelta(days=1)


def is_finite_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)
