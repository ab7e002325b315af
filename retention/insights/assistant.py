"""The offline assistant: business questions answered from the release, figures by code.

An intent is detected from the question by weighted phrase patterns (six intents and
``unknown``); segment names are found in the question or, for a follow-up ("and Hibernating?",
"why do they buy less?"), taken from the conversation's memory. Every figure of an answer is
computed here from the released segments (sizes, revenue, 12-month value by the LTV model,
observed churn) and the profile's contract and simulation assumptions; the templated answer says
them, and a language model (``insights.assistant.use_llm``) may only rephrase it, judged by the
same checker as the narratives. Answers are about groups: they carry no customer's id or data,
and a question about one customer is refused.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from retention.config import AssistantConfig, Profile
from retention.contract import ContactContract
from retention.fileio import read_json
from retention.insights.checker import check
from retention.insights.memory import ConversationMemory, Turn
from retention.insights.segments import META_FILE as SEGMENTS_FILE
from retention.models.outputs import MODEL_DIR

INTENTS = (
    "most_profitable",
    "compare_segments",
    "churn_risk",
    "high_value_campaign",
    "why_buys_less",
    "total_clv",
    "unknown",
)
# (pattern, weight) per intent; the highest total wins, a tie or nothing is "unknown".
PATTERNS: dict[str, list[tuple[str, float]]] = {
    "most_profitable": [
        (r"\bmost (profitable|lucrative)\b", 3),
        (r"\bprofitab", 2),
        (r"\b(most|highest|biggest|largest) (revenue|sales|income)\b", 3),
        (r"\b(brings?|makes?|earns?|generates?) (in )?(the )?most\b", 3),
        (r"\b(best|top) segment\b", 2),
        (r"\bmost (valuable|important) segment\b", 2),
    ],
    "compare_segments": [
        (r"\bcompar", 3),
        (r"\b(vs\.?|versus)\b", 3),
        (r"\bdifferen(ce|t) between\b", 3),
        (r"\bhow do .* differ\b", 3),
    ],
    "churn_risk": [
        (r"\bchurn", 3),
        (r"\battrition\b", 3),
        (r"\b(leave|leaving|lapse|lapsing|lose|losing)\b", 2),
        (r"\brisk of\b", 1),
        (r"\bretention (risk|rate)\b", 2),
    ],
    "high_value_campaign": [
        (r"\bcampaign", 3),
        (r"\b(promotion|offer|discount|incentive)s?\b", 2),
        (r"\btarget", 1),
        (r"\bhigh[- ]value\b", 2),
        (r"\b(valuable|best|top) customers\b", 2),
        (r"\bwhich offer\b", 2),
    ],
    "why_buys_less": [
        (r"\bwhy\b", 2),
        (r"\b(buy|buys|spend|spends|order|orders|purchase|purchases) (less|fewer|little)\b", 3),
        (r"\b(less|fewer) (often|orders|purchases)\b", 2),
        (r"\blow(er)? (spend|spending|revenue|sales)\b", 2),
    ],
    "total_clv": [
        (r"\btotal (clv|customer lifetime value|lifetime value|customer value|value)\b", 4),
        (r"\b(clv|lifetime value)\b", 2),
        (r"\bhow much (are|is) (our |the )?(customers?|base) worth\b", 4),
        (r"\bsum of\b", 1),
    ],
}
FOLLOW_UP = re.compile(r"^\s*(and|what about|how about|same for|and for)\b", re.I)
PRONOUN = re.compile(r"\b(they|them|their|it|this segment|that segment|those)\b", re.I)
# A question about one person, or for personal data: refused, whatever else it asks.
PERSONAL = re.compile(
    r"\b(e-?mail|phone|address|date of birth|password|name of (the|a|one) customer|"
    r"who (is|are|bought)|list (the |all )?(of the )?customers|customer id)\b",
    re.I,
)
ID_LIKE = re.compile(r"\b[A-Za-z]{1,4}-\d{2,}\b")
CONVERSATION_ID = re.compile(r"^[A-Za-z0-9._:-]+$")
WHAT_I_KNOW = (
    "I can answer from the released models: the most profitable segment, a comparison of two "
    "segments, churn risk, a campaign for high-value customers, why a segment buys less, and "
    "the total customer lifetime value (CLV)."
)


class AskRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    question: str = Field(min_length=1)
    conversation_id: str = Field(default="default", min_length=1)


def parse_request(body: Any, cfg: AssistantConfig) -> AskRequest:
    """A request, or a ValueError naming the field (``question: ...``)."""
    if not isinstance(body, dict):
        raise ValueError(f"body: expected a JSON object, got {type(body).__name__}")
    if "instances" in body:  # KServe V1: {"instances": [request]}
        inst = body["instances"]
        if not isinstance(inst, list) or len(inst) != 1 or not isinstance(inst[0], dict):
            raise ValueError("instances: expected a list of exactly one request object")
        body = inst[0]
    try:
        req = AskRequest.model_validate(body)
    except ValidationError as err:
        e = err.errors()[0]
        where = ".".join(str(p) for p in e["loc"]) or "body"
        raise ValueError(f"{where}: {e['msg']}") from None
    if len(req.question) > cfg.max_question_chars:
        raise ValueError(f"question: longer than {cfg.max_question_chars} characters")
    if len(req.conversation_id) > cfg.max_conversation_id_chars:
        raise ValueError(f"conversation_id: longer than {cfg.max_conversation_id_chars} characters")
    if not CONVERSATION_ID.match(req.conversation_id):
        raise ValueError("conversation_id: only letters, digits and . _ : - are allowed")
    return req


def pct(x: float) -> str:
    return f"{x:.0%}"


def money(x: float) -> str:
    return f"{x:,.2f}"


def count(x: float) -> str:
    return f"{round(x):,}"


@dataclass
class Answer:
    conversation_id: str
    intent: str
    answer: str
    figures: dict[str, Any]
    segments: list[str]
    source: str = "template"
    refused: bool = False
    latency_ms: float = 0.0
    turns: int = 0
    rejected_draft: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "intent": self.intent,
            "answer": self.answer,
            "figures": self.figures,
            "segments": self.segments,
            "source": self.source,
            "refused": self.refused,
            "latency_ms": round(self.latency_ms, 2),
            "turns": self.turns,
        }


class Assistant:
    """Answers from a released segmentation; ``phraser`` (a ``narratives.Phraser``) rephrases."""

    def __init__(
        self,
        segments_meta: dict[str, Any],
        cfg: AssistantConfig,
        contract: ContactContract,
        hazard_reduction: list[float],
        phraser=None,
    ):
        self.meta = segments_meta
        self.segments: list[dict[str, Any]] = segments_meta["segments"]
        self.overall: dict[str, Any] = segments_meta["overall"]
        self.window = int(segments_meta["churn_window_days"])
        self.cfg = cfg
        self.contract = contract
        self.hazard_reduction = list(hazard_reduction)
        self.phraser = phraser
        self.memory = ConversationMemory(cfg.memory_turns, cfg.memory_chars, cfg.max_conversations)
        self._by_name = {s["name"].lower(): s for s in self.segments}

    @classmethod
    def from_dir(cls, segments_dir: str | Path, profile: Profile, phraser=None) -> Assistant:
        d = Path(segments_dir)
        d = d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d
        return cls(
            read_json(d / SEGMENTS_FILE),
            profile.insights.assistant,
            profile.contract,
            profile.decision.env.hazard_reduction,
            phraser,
        )

    # ------------------------------------------------------------------ understanding

    def detect(self, question: str) -> tuple[str, float]:
        q = question.lower()
        scores = {
            intent: sum(w for p, w in pats if re.search(p, q)) for intent, pats in PATTERNS.items()
        }
        # "At risk" is a segment's name: its "risk" alone says nothing about churn.
        best = max(scores.values())
        top = [i for i, s in scores.items() if s == best]
        if best <= 0 or len(top) > 1:
            return "unknown", best
        return top[0], best

    def mentioned(self, question: str) -> list[str]:
        q = question.lower()
        found = []
        for name, s in self._by_name.items():
            m = re.search(rf"\b{re.escape(name)}", q)
            if m:
                found.append((m.start(), s["name"]))
        return [n for _, n in sorted(found)]

    # ------------------------------------------------------------------ answering

    def ask(self, conversation_id: str, question: str) -> Answer:
        start = time.perf_counter()
        history = self.memory.turns(conversation_id)
        intent, _ = self.detect(question)
        named = self.mentioned(question)
        last = history[-1] if history else None
        short = FOLLOW_UP.search(question) or len(question.split()) <= 4
        if intent == "unknown" and last and last.intent != "unknown" and named and short:
            intent = last.intent  # "and Hibernating?"
        if last and (
            (intent == "compare_segments" and len(named) < 2)
            or (intent in ("why_buys_less", "churn_risk") and PRONOUN.search(question))
        ):
            # "and At risk?" after a comparison, "why do they buy less?": the segments the
            # conversation was about.
            named = [*(s for s in last.segments if s not in named), *named]
            if intent == "compare_segments" and len(named) > 2:
                named = [named[0], named[-1]]  # the first one discussed against the new one
        if PERSONAL.search(question) or ID_LIKE.search(question):
            ans = self._refuse(
                "I answer questions about groups of customers only, never about one customer or "
                "their personal data."
            )
        elif intent == "unknown":
            ans = self._refuse(f"I cannot answer that from the data. {WHAT_I_KNOW}")
        else:
            ans = getattr(self, f"_{intent}")(named, last)
        ans.conversation_id = conversation_id
        if self.phraser is not None and not ans.refused:
            self._rephrase(ans)
        self.memory.add(
            conversation_id, Turn(question, ans.intent, tuple(ans.segments), ans.answer)
        )
        ans.turns = len(self.memory.turns(conversation_id))
        ans.latency_ms = (time.perf_counter() - start) * 1000
        return ans

    def _refuse(self, text: str) -> Answer:
        return Answer("", "unknown", text, {}, [], refused=True)

    def _seg(self, name: str) -> dict[str, Any]:
        return self._by_name[name.lower()]

    def _most_profitable(self, named, last) -> Answer:
        s = max(self.segments, key=lambda x: x["revenue"])
        text = (
            f"{s['name']} is the most profitable segment: {pct(s['revenue_share'])} of revenue "
            f"comes from its {count(s['customers'])} customers ({pct(s['share'])} of the base), "
            f"whose mean 12-month value (CLV) is {money(s['mean_clv'])}."
        )
        figures = {
            "segment": s["name"],
            "revenue_share": s["revenue_share"],
            "customers": s["customers"],
            "share": s["share"],
            "mean_clv": s["mean_clv"],
        }
        return Answer("", "most_profitable", text, figures, [s["name"]])

    def _compare_segments(self, named, last) -> Answer:
        if len(named) < 2:
            known = ", ".join(s["name"] for s in self.segments)
            return Answer(
                "",
                "compare_segments",
                f"Which two segments should I compare? The segments are {known}.",
                {},
                named,
                refused=True,
            )
        a, b = self._seg(named[0]), self._seg(named[1])
        ratio = a["mean_clv"] / b["mean_clv"] if b["mean_clv"] else float("inf")

        def line(s):
            return (
                f"{s['name']}: {count(s['customers'])} customers, {pct(s['revenue_share'])} of "
                f"revenue, mean 12-month value {money(s['mean_clv'])}, churn rate "
                f"{pct(s['churn_rate'])}"
            )

        text = f"{line(a)}. {line(b)}. "
        text += f"{a['name']} is worth {ratio:.1f} times as much per customer as {b['name']}."
        figures = {
            s["name"]: {k: s[k] for k in ("customers", "revenue_share", "mean_clv", "churn_rate")}
            for s in (a, b)
        }
        figures["clv_ratio"] = ratio
        return Answer("", "compare_segments", text, figures, [a["name"], b["name"]])

    def _churn_risk(self, named, last) -> Answer:
        if named:
            s = self._seg(named[0])
            text = (
                f"In {s['name']}, {pct(s['churn_rate'])} of the {count(s['customers'])} "
                f"customers bought nothing in the {self.window} days after the cut-off, against "
                f"{pct(self.overall['churn_rate'])} over all customers."
            )
            figures = {
                "segment": s["name"],
                "churn_rate": s["churn_rate"],
                "overall_churn_rate": self.overall["churn_rate"],
            }
            return Answer("", "churn_risk", text, figures, [s["name"]])
        worst = max(self.segments, key=lambda x: x["churn_rate"])
        # The value at stake: the 12-month value of the customers expected to lapse.
        at_stake = sum(s["churn_rate"] * s["total_clv"] for s in self.segments)
        text = (
            f"{pct(self.overall['churn_rate'])} of our {count(self.overall['customers'])} "
            f"customers bought nothing in the {self.window} days after the cut-off. The highest "
            f"churn rate is in {worst['name']} ({pct(worst['churn_rate'])}); weighted by churn, "
            f"{money(at_stake)} of 12-month value is at stake."
        )
        figures = {
            "overall_churn_rate": self.overall["churn_rate"],
            "customers": self.overall["customers"],
            "highest_segment": worst["name"],
            "highest_churn_rate": worst["churn_rate"],
            "value_at_stake": at_stake,
        }
        return Answer("", "churn_risk", text, figures, [worst["name"]])

    def best_offer(self, s: dict[str, Any]) -> tuple[int, float]:
        """The offer level with the best expected net gain per customer contacted: churn rate x
        the offer's hazard cut (``decision.env.hazard_reduction``) x mean CLV, less the offer's
        cost (the contract's ``offer_cost``) and the contact cost."""
        gains = [
            s["churn_rate"] * self.hazard_reduction[lv] * s["mean_clv"]
            - self.contract.offer_cost(lv, s["mean_clv"])
            - self.contract.contact_cost
            for lv in range(len(self.contract.offers))
        ]
        best = max(range(len(gains)), key=lambda i: gains[i])
        return best, gains[best]

    def _high_value_campaign(self, named, last) -> Answer:
        s = self._seg(named[0]) if named else max(self.segments, key=lambda x: x["mean_clv"])
        level, gain = self.best_offer(s)
        phrase = self.contract.offer_phrase(level) if level else "a contact without a discount"
        text = (
            f"Target {s['name']}: {count(s['customers'])} customers with a mean 12-month value of "
            f"{money(s['mean_clv'])} and a churn rate of {pct(s['churn_rate'])}. Offer level "
            f"{level} ({phrase}) has the best expected net gain, {money(gain)} per customer "
            "contacted under the simulation's assumptions."
        )
        figures = {
            "segment": s["name"],
            "customers": s["customers"],
            "mean_clv": s["mean_clv"],
            "churn_rate": s["churn_rate"],
            "offer_level": level,
            "expected_gain_per_customer": gain,
        }
        return Answer("", "high_value_campaign", text, figures, [s["name"]])

    def _why_buys_less(self, named, last) -> Answer:
        # Of the segments in question (or of all), the one that buys least.
        s = min([self._seg(n) for n in named] or self.segments, key=lambda x: x["mean_spend"])
        o = self.overall
        orders_ratio = s["mean_orders"] / o["mean_orders"]
        aov_ratio = s["mean_order_value"] / o["mean_order_value"]
        if s["mean_spend"] >= o["mean_spend"]:
            why = "so they do not buy less than the average customer"
        elif orders_ratio <= aov_ratio:
            why = "mainly because they order less often"
        else:
            why = "mainly because their orders are smaller"
        lapsed = s["mean_recency_days"] > o["mean_recency_days"]
        text = (
            f"{s['name']} spend {money(s['mean_spend'])} per customer against "
            f"{money(o['mean_spend'])} overall, {why}: "
            f"{s['mean_orders']:.1f} orders each against {o['mean_orders']:.1f}, at "
            f"{money(s['mean_order_value'])} per order against {money(o['mean_order_value'])}. "
            f"Their last order was {s['mean_recency_days']:.0f} days ago on average against "
            f"{o['mean_recency_days']:.0f}" + (", so many have lapsed." if lapsed else ".")
        )
        figures = {
            "segment": s["name"],
            "mean_spend": s["mean_spend"],
            "overall_mean_spend": o["mean_spend"],
            "mean_orders": s["mean_orders"],
            "overall_mean_orders": o["mean_orders"],
            "mean_order_value": s["mean_order_value"],
            "overall_mean_order_value": o["mean_order_value"],
            "mean_recency_days": s["mean_recency_days"],
            "overall_mean_recency_days": o["mean_recency_days"],
            "main_reason": "frequency" if orders_ratio <= aov_ratio else "order_value",
        }
        return Answer("", "why_buys_less", text, figures, [s["name"]])

    def _total_clv(self, named, last) -> Answer:
        top = max(self.segments, key=lambda x: x["total_clv"])
        text = (
            f"The total 12-month customer lifetime value (CLV) of our "
            f"{count(self.overall['customers'])} customers is {money(self.overall['total_clv'])}; "
            f"{top['name']} hold {pct(top['clv_share'])} of it."
        )
        figures = {
            "total_clv": self.overall["total_clv"],
            "customers": self.overall["customers"],
            "top_segment": top["name"],
            "top_clv_share": top["clv_share"],
        }
        return Answer("", "total_clv", text, figures, [top["name"]])

    # ------------------------------------------------------------------ phrasing

    def _rephrase(self, ans: Answer) -> None:
        """The model's wording when the checker accepts it, the template's otherwise."""
        values, shares = _numbers(ans.figures)
        names = [s["name"] for s in self.segments] + ["CLV"]
        prompt = [
            {
                "role": "system",
                "content": "Rewrite the answer for a manager in plain words. Keep every number "
                "exactly as written and add no other names or numbers.",
            },
            {"role": "user", "content": ans.answer},
        ]
        (draft,) = self.phraser.generate([prompt], self.cfg.max_new_tokens, sample=False)
        from retention.insights.narratives import tidy

        text = tidy(draft, 4)
        subject = ans.segments[0] if ans.segments else "customers"
        values += [12, self.window, *range(len(self.contract.offers))]
        verdict = check(
            text, subject=subject, values=values, shares=shares, names=names, max_sentences=4
        )
        if verdict.ok:
            ans.answer, ans.source = text, "llm"
        else:
            ans.rejected_draft = verdict.problems[:3]


def _numbers(figures: dict[str, Any]) -> tuple[list[float], list[float]]:
    values: list[float] = []
    shares: list[float] = []
    for k, v in figures.items():
        if isinstance(v, dict):
            a, b = _numbers(v)
            values += a
            shares += b
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            values.append(float(v))
            if "share" in k or "rate" in k:
                shares.append(float(v))
    return values, shares
