"""The assistant: intents, figures checked against pandas on the raw order log, memory, refusals,
no personal data in group answers, and ``POST /v1/models/assistant:predict`` with 400s."""

import re

import pandas as pd
import pytest

from retention.config import AssistantConfig
from retention.insights.assistant import INTENTS, Assistant, parse_request
from retention.insights.memory import ConversationMemory, Turn
from retention.store.model_store import ModelStore

WINDOW = 90


@pytest.fixture(scope="module")
def world(insights_release):
    """The assistant over the release, and the truth computed here with pandas alone."""
    profile, splits = insights_release
    seg_dir = ModelStore(profile.model_store).resolve("segments")
    assistant = Assistant.from_dir(seg_dir, profile)
    a = pd.read_parquet(seg_dir / "assignments.parquet").set_index("customer_id")
    orders = pd.read_parquet(splits / "orders" / "all.parquet")
    cut = orders["date"].max() + pd.Timedelta(days=1) - pd.Timedelta(days=WINDOW)
    before = orders[orders["date"] < cut]
    after = orders[(orders["date"] >= cut) & (orders["date"] < cut + pd.Timedelta(days=WINDOW))]
    seg = a["segment"]
    spend = before.groupby("customer_id")["amount"].sum().reindex(seg.index)
    n_orders = before.groupby("customer_id")["date"].nunique().reindex(seg.index)
    churned = pd.Series(~seg.index.isin(after["customer_id"]), index=seg.index)
    clv = a["clv"]
    truth = pd.DataFrame(
        {
            "customers": seg.value_counts(),
            "revenue": spend.groupby(seg).sum(),
            "mean_clv": clv.groupby(seg).mean(),
            "total_clv": clv.groupby(seg).sum(),
            "churn": churned.groupby(seg).mean(),
            "mean_spend": spend.groupby(seg).mean(),
            "mean_orders": n_orders.groupby(seg).mean(),
        }
    )
    truth["revenue_share"] = truth["revenue"] / truth["revenue"].sum()
    overall = {
        "total_clv": clv.sum(),
        "churn": churned.mean(),
        "customers": len(seg),
        "mean_spend": spend.mean(),
    }
    return profile, assistant, truth, overall, a


def _pct(x):
    return f"{x:.0%}"


def _money(x):
    return f"{x:,.2f}"


def question_set(truth, overall, contract, hazard):
    """(question, intent, strings the answer must contain), every figure from ``truth``."""
    top = truth["revenue"].idxmax()
    names = list(truth.sort_values("revenue", ascending=False).index)
    a, b = names[0], names[-1]
    high = truth["mean_clv"].idxmax()
    h = truth.loc[high]
    gains = [
        h["churn"] * hazard[lv] * h["mean_clv"]
        - contract.offer_cost(lv, h["mean_clv"])
        - contract.contact_cost
        for lv in range(len(contract.offers))
    ]
    level = max(range(len(gains)), key=lambda i: gains[i])
    low = truth["mean_spend"].idxmin()
    worst = truth["churn"].idxmax()
    top_clv = truth["total_clv"].idxmax()
    return [
        ("Which segment is the most profitable?", "most_profitable",
         [top, _pct(truth.loc[top, "revenue_share"])]),
        ("Which customers bring in the most revenue?", "most_profitable", [top]),
        (f"Compare {a} and {b}", "compare_segments",
         [a, b, _money(truth.loc[a, "mean_clv"]), _money(truth.loc[b, "mean_clv"]),
          _pct(truth.loc[a, "churn"]), _pct(truth.loc[b, "churn"])]),
        (f"How does {b} differ from {a}? {b} vs {a}", "compare_segments",
         [_money(truth.loc[b, "mean_clv"])]),
        ("What is our churn risk?", "churn_risk", [_pct(overall["churn"]), worst]),
        (f"What is the churn rate of {b}?", "churn_risk", [_pct(truth.loc[b, "churn"])]),
        ("Which campaign should we run for high-value customers?", "high_value_campaign",
         [high, f"Offer level {level}", _money(gains[level])]),
        ("What offer should we make to our best customers?", "high_value_campaign", [high]),
        (f"Why does {low} buy less?", "why_buys_less",
         [low, _money(truth.loc[low, "mean_spend"]), _money(overall["mean_spend"]),
          f"{truth.loc[low, 'mean_orders']:.1f} orders"]),
        ("Why do some customers spend less?", "why_buys_less", [low]),
        ("What is our total CLV?", "total_clv", [_money(overall["total_clv"]), top_clv]),
        ("How much are our customers worth in total lifetime value?", "total_clv",
         [_money(overall["total_clv"])]),
        ("What's the weather in Paris tomorrow?", "unknown", ["cannot answer"]),
        ("Write me a poem about spring", "unknown", ["cannot answer"]),
    ]  # fmt: skip


def test_the_question_set_is_answered_with_independently_computed_figures(world):
    profile, assistant, truth, overall, _ = world
    cases = question_set(truth, overall, profile.contract, profile.decision.env.hazard_reduction)
    assert {c[1] for c in cases} == set(INTENTS)
    right = []
    for k, (q, intent, must) in enumerate(cases):
        ans = assistant.ask(f"q{k}", q)
        ok = ans.intent == intent and all(m in ans.answer for m in must)
        right.append(ok)
        assert ok, (q, ans.intent, ans.answer, must)
    assert sum(right) / len(right) == 1.0


def test_figures_are_the_releases_and_the_release_is_the_data(world):
    _, assistant, truth, overall, _ = world
    ans = assistant.ask("f", "What is our total CLV?")
    assert ans.figures["total_clv"] == pytest.approx(overall["total_clv"])
    ans = assistant.ask("f", "Which segment is the most profitable?")
    top = truth["revenue"].idxmax()
    assert ans.figures["segment"] == top
    assert ans.figures["revenue_share"] == pytest.approx(truth.loc[top, "revenue_share"])


def test_memory_carries_segments_into_follow_ups(world):
    _, assistant, truth, _, _ = world
    names = list(truth.index)
    first = assistant.ask("m", f"Compare {names[0]} and {names[1]}")
    assert first.segments == names[:2]
    follow = assistant.ask("m", f"and {names[2]}?")
    assert follow.intent == "compare_segments" and follow.segments == [names[0], names[2]]
    why = assistant.ask("m", "why do they buy less?")
    lower = truth.loc[[names[0], names[2]], "mean_spend"].idxmin()
    assert why.intent == "why_buys_less" and why.segments == [lower]
    # Another conversation remembers nothing of this one.
    other = assistant.ask("other", f"and {names[2]}?")
    assert other.intent == "unknown" and other.refused
    assert follow.turns == 2 and why.turns == 3


def test_memory_is_bounded_in_turns_size_and_conversations():
    m = ConversationMemory(max_turns=3, max_chars=100, max_conversations=2)
    for i in range(5):
        m.add("a", Turn(f"q{i}", "total_clv", (), "x" * 10))
    assert [t.question for t in m.turns("a")] == ["q2", "q3", "q4"]
    m.add("a", Turn("big", "total_clv", (), "y" * 95))
    assert [t.question for t in m.turns("a")] == ["big"]
    m.add("b", Turn("q", "unknown", (), ""))
    m.add("c", Turn("q", "unknown", (), ""))
    assert len(m) == 2 and m.turns("a") == []


def test_group_answers_carry_no_customer_data_and_personal_questions_are_refused(world):
    _, assistant, truth, overall, a = world
    ids = set(a.index)
    cid = next(iter(ids))
    for q in ("Which segment is the most profitable?", "What is our churn risk?",
              f"Compare {truth.index[0]} and {truth.index[1]}", "What is our total CLV?"):  # fmt: skip
        text = assistant.ask("p", q).answer
        assert not any(i in text for i in ids)
        assert not re.search(r"\b[A-Z]-\d{3,}\b", text)
    for q in (f"What did customer {cid} buy?", "What is the email of our best customer?",
              "List all customers in Champions"):  # fmt: skip
        ans = assistant.ask("p", q)
        assert ans.refused and "never about one customer" in ans.answer
        assert cid not in ans.answer


def test_bad_requests_name_the_field():
    cfg = AssistantConfig(max_question_chars=50)
    assert parse_request({"question": " hi "}, cfg).question == "hi"
    assert parse_request({"instances": [{"question": "hi", "conversation_id": "a:1"}]}, cfg)
    for body, field in (
        ({}, "question"),
        ({"question": ""}, "question"),
        ({"question": 3}, "question"),
        ({"question": "x" * 51}, "question"),
        ({"question": "hi", "conversation_id": "bad id!"}, "conversation_id"),
        ({"question": "hi", "extra": 1}, "extra"),
        ([], "body"),
        ({"instances": []}, "instances"),
    ):
        with pytest.raises(ValueError, match=rf"^{field}:"):
            parse_request(body, cfg)


def test_the_served_route_answers_and_refuses_bad_input(world):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.assistant import AssistantModel, build_assistant
    from serving.routes import add_assistant_route

    profile, _, _, overall, _ = world
    model = build_assistant(profile)
    assert model.ready
    client = TestClient(create_app([], lambda app: add_assistant_route(app, model)))
    url = "/v1/models/assistant:predict"
    r = client.post(url, json={"question": "What is our total CLV?", "conversation_id": "s1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["intent"] == "total_clv" and _money(overall["total_clv"]) in body["answer"]
    assert body["latency_ms"] >= 0 and body["turns"] == 1
    r = client.post(url, json={"instances": [{"question": "and the churn risk?"}]})
    assert r.status_code == 200 and r.json()["intent"] == "churn_risk"
    for payload, field in (
        ({"conversation_id": "s1"}, "question"),
        ({"question": "x" * 10_000}, "question"),
        ({"question": "hi", "conversation_id": "no spaces"}, "conversation_id"),
    ):
        r = client.post(url, json=payload)
        assert r.status_code == 400 and r.json()["error"].startswith(f"{field}:"), r.text
    r = client.post(url, content=b'{"question": NaN}', headers={"content-type": "application/json"})
    assert r.status_code == 400
    r = client.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "body" in r.json()["error"]
    unready = AssistantModel(profile)
    client = TestClient(create_app([], lambda app: add_assistant_route(app, unready)))
    assert client.post(url, json={"question": "hi"}).status_code == 503
