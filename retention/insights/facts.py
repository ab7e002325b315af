"""Fact sheets: what code computed about one subject (a journey phase, a segment), as the only
material a language model may phrase, with the templated sentences that say the same."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from retention.insights.checker import Check, check

Kind = Literal["share", "money", "count", "number", "score"]


@dataclass(frozen=True)
class Fact:
    label: str
    value: float
    kind: Kind

    def shown(self) -> str:
        v = self.value
        if self.kind == "share":
            return f"{v:.0%}"
        if self.kind == "money":
            return f"{v:,.2f}"
        if self.kind == "count":
            return f"{round(v):,}"
        if self.kind == "score":
            return f"{v:.2f}"
        return f"{v:.1f}"


@dataclass
class FactSheet:
    subject: str
    kind: Literal["phase", "segment"]
    facts: list[Fact]
    names: list[str]
    template: str
    # Numbers the text may use besides the facts (the value horizon in "12-month", the window).
    context: dict[str, float] = field(default_factory=dict)

    def values(self) -> list[float]:
        return [f.value for f in self.facts] + list(self.context.values())

    def shares(self) -> list[float]:
        return [f.value for f in self.facts if f.kind == "share"]

    def check(self, text: str, min_sentences: int = 1, max_sentences: int = 3) -> Check:
        return check(
            text,
            subject=self.subject,
            values=self.values(),
            shares=self.shares(),
            names=[self.subject, *self.names],
            min_sentences=min_sentences,
            max_sentences=max_sentences,
        )

    def lines(self) -> str:
        rows = [f"- {f.label}: {f.shown()}" for f in self.facts]
        rows += [f"- {k}: {v:g}" for k, v in self.context.items()]
        return "\n".join(rows)

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "kind": self.kind,
            "facts": [{"label": f.label, "value": f.value, "kind": f.kind} for f in self.facts],
            "names": self.names,
            "template": self.template,
            "context": self.context,
        }


def phase_sheet(phase: str, v: dict[str, Any]) -> FactSheet:
    """From a phase of train-phase-health's result: healthy share, test AUC, SHAP drivers."""
    drivers = v["drivers"][:3]
    facts = [
        Fact("share of customers healthy", float(v["healthy_share"]), "share"),
        Fact("test AUC", float(v["test_auc"]), "score"),
    ]
    for k, d in enumerate(drivers, start=1):
        facts.append(Fact(f"driver {k}: {d['feature']}, mean |SHAP|", d["mean_abs_shap"], "score"))
    f = {x.label: x for x in facts}
    text = (
        f"In the {phase} phase, {f['share of customers healthy'].shown()} of customers are "
        f"healthy (test AUC {f['test AUC'].shown()})."
    )
    if drivers:
        named = [
            f"{d['feature']} (mean |SHAP| {facts[2 + k].shown()})" for k, d in enumerate(drivers)
        ]
        head = named[0] if len(named) == 1 else ", ".join(named[:-1]) + " and " + named[-1]
        text += f" Its health is driven most by {head}."
    return FactSheet(phase, "phase", facts, [d["feature"] for d in drivers], text)


def segment_sheet(s: dict[str, Any], window_days: int, horizon_months: int = 12) -> FactSheet:
    """From a segment of train-segments: size, revenue share, CLV, churn and RFM profile."""
    facts = [
        Fact("customers", s["customers"], "count"),
        Fact("share of customers", s["share"], "share"),
        Fact("share of revenue", s["revenue_share"], "share"),
        Fact(f"mean {horizon_months}-month value (CLV)", s["mean_clv"], "money"),
        Fact(f"churn rate (no order in {window_days} days)", s["churn_rate"], "share"),
        Fact("days since the last order, on average", s["mean_recency_days"], "number"),
        Fact("orders per customer, on average", s["mean_orders"], "number"),
        Fact("mean order value", s["mean_order_value"], "money"),
    ]
    sh = [f.shown() for f in facts]
    text = (
        f"{s['name']}: {sh[0]} customers ({sh[1]} of the base) bring {sh[2]} of revenue, with a "
        f"mean {horizon_months}-month value of {sh[3]}. They last ordered {sh[5]} days ago on "
        f"average and placed {sh[6]} orders each; {sh[4]} of them bought nothing in the "
        f"{window_days} days after the cut-off."
    )
    context = {"value horizon (months)": horizon_months, "churn window (days)": window_days}
    return FactSheet(s["name"], "segment", facts, [], text, context)
