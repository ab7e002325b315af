"""The value the policy sees at serving is the value it was trained on.

``LtvModel.customer_values`` is the one function from a customer to its 12-month value: the
customer book calls it when it values the policy's training customers, the served LTV predictor
calls it for the transformer, the batch path for the whole base. The parity test sends book
customers through the real transformer and its real predictors (over HTTP, on a tiny release
built in-process) and requires the book's values, to the last bit.
"""

import asyncio
import math
from datetime import UTC, datetime, timedelta

import httpx
import numpy as np
import pandas as pd
import pytest

from retention.data.split import read_split
from retention.decision.book import build_books
from retention.decision.env import OBS_NAMES
from retention.models.ltv import DAY, BookMapping, CustomerValue, LtvModel, rfm_features
from serving.app import create_app
from serving.server import build_predictors, build_transformer
from tests.serving_fixtures import build_release, tiny_serving_profile
from tests.test_serving import Server, _urls

# Tomorrow at noon UTC: daytime in every default time zone, and inside serving's send_at window.
DAYTIME = (datetime.now(UTC) + timedelta(days=1)).replace(hour=12, minute=0).isoformat()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("value")
    profile = tiny_serving_profile(root, "serving.predictor_timeout_ms=5000")
    build_release(profile, root)
    return profile, root


@pytest.fixture(scope="module")
def ltv(built):
    return LtvModel(built[1] / "trained" / "ltv" / "model")


@pytest.fixture(scope="module")
def server(built):
    profile, _ = built
    from retention import catalogue

    srv = Server(create_app(build_predictors(profile, catalogue.services())))
    yield srv
    srv.stop()


def _transformer(profile, tmp_path, urls, mode="colocated"):
    p = profile.model_copy(deep=True)
    p.serving.mode = mode
    p.serving.ledger.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    p.serving.experiment.treatment_share = 1.0
    p.serving.use_writer = False
    t, extra = build_transformer(p, urls)
    return t, create_app([t], extra)


def _retain(app, bodies):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return [await client.post("/retain", json=b) for b in bodies]

    return asyncio.run(go())


def _facts(row: pd.Series, customer_id: str) -> dict:
    """A customer table row as customer facts: JSON scalars, blanks left out."""
    out = {"customer_id": customer_id}
    for k, v in row.items():
        if isinstance(v, float) and math.isnan(v):
            continue
        out[k] = v.item() if isinstance(v, np.generic) else v
    return out


@pytest.mark.parametrize("mode", ["colocated", "remote"])
def test_the_transformer_values_book_customers_as_the_book_did(built, server, tmp_path, mode):
    profile, root = built
    books = build_books(
        profile,
        root / "splits",
        root / "trained" / "risk",
        root / "trained" / "accept",
        root / "trained" / "ltv",
        root / "trained" / "uplift",
    )
    t, app = _transformer(profile, tmp_path, _urls(server.url), mode)
    # The policy's observations, as the transformer sends them (the real hop, observed).
    sent = []
    real_call = t.call

    async def observed(predictor, rows, timeout_ms):
        if predictor == "policy":
            sent.append(rows[0]["observation"])
        return await real_call(predictor, rows, timeout_ms)

    t.call = observed
    for name, parts in (("train", ("train",)), ("eval", ("valid", "test"))):
        customers = pd.concat([read_split(root / "splits", "customers", p) for p in parts])
        customers = customers.reset_index(drop=True).drop(columns=["Churn", "customerID"])
        book = books[name]
        picked = np.random.default_rng(3).choice(len(customers), 8, replace=False)
        bodies = [
            {
                "request_id": f"{name}-{i}",
                "customer_facts": _facts(customers.iloc[i], str(book.customer_id[i])),
                "send_at": DAYTIME,
            }
            for i in picked
        ]
        sent.clear()
        answers = _retain(app, bodies)
        for i, r, obs in zip(picked, answers, sent, strict=True):
            assert r.status_code == 200, r.text
            out = r.json()
            assert "ltv" not in out["degraded"]
            assert out["value"]["source"] == "book_mapping"
            assert out["value"]["value"] == book.value[i]  # bit for bit: one function
            assert out["value"]["low"] <= out["value"]["high"]
            vbar = t.policy.mean_value
            want = min(math.log1p(book.value[i] / vbar), 5.0)
            assert obs[OBS_NAMES.index("value")] == pytest.approx(want, rel=1e-6)


def test_order_facts_are_valued_by_the_model_given_values_as_given(built, server, ltv, tmp_path):
    profile, root = built
    orders = read_split(root / "splits", "orders", "all")
    facts = rfm_features(orders, orders["date"].max() + DAY, "customer_id", "date", "amount")
    scored = ltv.score_orders(orders, "customer_id", "date", "amount")
    _, app = _transformer(profile, tmp_path, _urls(server.url))
    top = scored.sort_values().index[-1]  # the most valuable order-log customer
    row = {k: float(v) for k, v in facts.loc[top, list(ltv.order_facts)].items()}
    given = {"customer_id": "c-given", "value": 321.5, "MonthlyCharges": 99.0}
    r_model, r_given = _retain(
        app,
        [
            {"customer_facts": {"customer_id": "c-orders", "MonthlyCharges": 20.0, **row}},
            {"customer_facts": given, "send_at": DAYTIME},
        ],
    )
    v = r_model.json()["value"]
    assert v["source"] == "ltv" and v["value"] == pytest.approx(scored[top], rel=1e-9)
    assert 0 <= v["low"] <= v["high"]
    assert r_given.json()["value"] == CustomerValue(value=321.5, source="given").model_dump()


def test_without_the_ltv_predictor_the_books_mean_and_degraded(built, server, tmp_path):
    profile, _ = built
    urls = {k: u for k, u in _urls(server.url).items() if k != "ltv"}
    t, app = _transformer(profile, tmp_path, urls, "remote")
    (r,) = _retain(app, [{"customer_facts": {"customer_id": "c-1", "MonthlyCharges": 70.0}}])
    out = r.json()
    assert "ltv" in out["degraded"]
    assert out["value"] == {
        "value": t.policy.mean_value,
        "low": None,
        "high": None,
        "source": "book_mean",
        "missing_order_facts": [],
    }


def test_the_ltv_predictor_says_which_order_facts_were_missing(built, ltv):
    from serving.predictors import LtvPredictor

    p = LtvPredictor(built[1] / "trained" / "ltv" / "model")
    p.load()
    rows = [{"MonthlyCharges": 50.0, "frequency": 3, "recency_weeks": 10.0}]
    (out,) = p.predict_rows(rows)
    assert out["source"] == "book_mapping"
    assert out["missing_order_facts"] == [
        f for f in ltv.order_facts if f not in ("frequency", "recency_weeks")
    ]
    from kserve.errors import InvalidInput

    with pytest.raises(InvalidInput, match=r"frequency: expected a finite number >= 0.*row 0"):
        p.predict_rows([{"frequency": -1}])


def test_book_mapping_is_the_rank_coupling_and_round_trips():
    rng = np.random.default_rng(0)
    keys = pd.DataFrame({"bill": rng.uniform(20, 120, 5000)})
    values = rng.gamma(0.5, 100, 3000)
    m = BookMapping.fit("bill", keys, values)
    mapped, keyed = m.apply(keys)
    assert keyed.all()
    # The bigger bill gets the bigger value, and the book's values follow the log's values.
    order = np.argsort(keys["bill"].to_numpy())
    assert np.all(np.diff(mapped[order]) >= 0)
    for q in (0.1, 0.5, 0.9):
        assert np.quantile(mapped, q) == pytest.approx(np.quantile(values, q), rel=0.05)
    back = BookMapping.from_dict(m.to_dict())
    assert np.array_equal(back.apply(keys)[0], mapped)
    # No usable key: the book's mean; no key column at all: the same for everyone.
    blank, keyed = m.apply(pd.DataFrame({"bill": [np.nan, "n/a", True]}))
    assert not keyed.any() and np.all(blank == values.mean())
    nothing = BookMapping.fit(None, keys, values)
    assert np.all(nothing.apply(keys)[0] == values.mean())
    with pytest.raises(ValueError, match="'MonthlyCharges' is not a column"):
        BookMapping.fit("MonthlyCharges", keys, values)


def test_equal_bills_get_one_value():
    keys = pd.DataFrame({"bill": [20.0] * 50 + [80.0] * 50})
    m = BookMapping.fit("bill", keys, np.arange(100.0))
    mapped, _ = m.apply(keys)
    assert len(set(mapped[:50])) == 1 and len(set(mapped[50:])) == 1
    assert mapped[0] < mapped[-1]


def test_one_function_on_frames_and_request_dicts_alike(built, ltv):
    _, root = built
    orders = read_split(root / "splits", "orders", "all")
    facts = rfm_features(orders, orders["date"].max() + DAY, "customer_id", "date", "amount")
    frame = facts[list(ltv.order_facts)].head(20).reset_index(drop=True)
    frame["MonthlyCharges"] = np.linspace(20, 110, 20)
    frame.loc[3:6, "frequency"] = np.nan  # these fall back to the book mapping
    frame.loc[7, "value"] = 55.0
    dicts = [
        {k: (repr(v) if k == "total_spend" else v) for k, v in r.items() if v == v}  # text too
        for r in frame.to_dict("records")
    ]
    a, b = ltv.customer_values(frame), ltv.customer_values(dicts)
    assert [a.answer(i) for i in range(20)] == [b.answer(i) for i in range(20)]
    assert list(a.source[:8]) == ["ltv"] * 3 + ["book_mapping"] * 4 + ["given"]
    assert a.answer(3).missing_order_facts == ["frequency"]
