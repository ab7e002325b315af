"""train-segments: RFM at a cut-off, k by silhouette, names from profiles, figures by segment."""

import numpy as np
import pandas as pd
import pytest

from retention import catalogue
from retention.insights.rfm import RFM, rfm_table
from retention.insights.segments import PROTOTYPES, SegmentModel, train_segments
from retention.models.outputs import MODEL_DIR
from retention.results import SegmentsResult


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from retention.config import load_profile
    from retention.data.ingest import ingest
    from retention.data.split import split
    from retention.models.ltv import train_ltv

    profile = load_profile("tiny")
    d = tmp_path_factory.mktemp("segments")
    ingest(profile, d / "ds")
    split(profile, d / "ds", d / "sp")
    train_ltv(profile, d / "sp", d / "ltv")
    result = train_segments(profile, d / "sp", d / "ltv", d / "seg")
    orders = pd.read_parquet(d / "sp" / "orders" / "all.parquet")
    return profile, result, SegmentModel(d / "seg" / MODEL_DIR), orders


def test_the_spec_is_released_and_gated_on_silhouette_and_size():
    s = catalogue.spec("segments")
    assert s.released and s.result is SegmentsResult and "ltv" in s.needs
    assert set(s.gates_min) == {"silhouette", "min_segment_share"}
    assert "train-segments" in catalogue.tasks()


def test_k_is_the_best_silhouette_in_the_profiles_range(trained):
    profile, result, model, _ = trained
    cfg = profile.insights.segments
    by_k = result.details["silhouette_by_k"]
    assert sorted(by_k) == list(range(cfg.k_min, cfg.k_max + 1))
    assert result.k == max(by_k, key=by_k.get) and result.silhouette == by_k[result.k]
    assert len(model.segments) == result.k
    assert result.silhouette >= profile.gates["segments"].min["silhouette"]


def test_figures_match_an_independent_pandas_computation(trained):
    profile, result, model, orders = trained
    cut = orders["date"].max() + pd.Timedelta(days=1) - pd.Timedelta(days=90)
    before, after = orders[orders["date"] < cut], orders[orders["date"] >= cut]
    spend = before.groupby("customer_id")["amount"].sum()
    a = model.assignments().set_index("customer_id")
    assert set(a.index) == set(spend.index)
    seg = a["segment"]
    revenue_share = spend.groupby(seg).sum() / spend.sum()
    churned = ~seg.index.isin(after["customer_id"].unique())
    churn = pd.Series(churned, index=seg.index).groupby(seg).mean()
    for s in model.segments:
        assert s["customers"] == int((seg == s["name"]).sum())
        assert s["revenue_share"] == pytest.approx(revenue_share[s["name"]])
        assert s["churn_rate"] == pytest.approx(churn[s["name"]])
        assert s["mean_clv"] == pytest.approx(a.loc[seg == s["name"], "clv"].mean())
    assert sum(s["share"] for s in model.segments) == pytest.approx(1.0)
    assert result.min_segment_share == min(s["share"] for s in model.segments)
    assert model.overall["total_clv"] == pytest.approx(a["clv"].sum())
    assert result.most_revenue == revenue_share.idxmax()


def test_names_are_unique_prototypes_that_fit_the_profile(trained):
    _, _, model, _ = trained
    names = [s["name"] for s in model.segments]
    assert len(set(names)) == len(names) and set(names) <= set(PROTOTYPES)
    by_recency = sorted(model.segments, key=lambda s: s["mean_recency_days"])
    # The most recent buyers are never called lapsed, the least recent never champions.
    assert by_recency[0]["name"] not in ("Hibernating", "Lost", "At risk")
    assert by_recency[-1]["name"] not in ("Champions", "Loyal", "Promising")


def test_assign_places_customers_as_training_did_and_names_bad_facts(trained):
    profile, _, model, orders = trained
    table = rfm_table(orders, "customer_id", "date", "amount", 90)
    a = model.assignments().set_index("customer_id")
    facts = table.facts.loc[a.index[:200], list(RFM)]
    assert model.assign(facts) == a["segment"].iloc[:200].tolist()
    row = {"days_since_last": 5, "frequency": 20, "total_spend": 5000.0}
    assert model.assign([row]) == [max(model.segments, key=lambda s: s["mean_spend"])["name"]]
    with pytest.raises(ValueError, match="column 'total_spend': required column is missing"):
        model.assign([{"days_since_last": 5, "frequency": 2}])
    with pytest.raises(ValueError, match="column 'frequency': row 1"):
        model.assign([row, {**row, "frequency": -3}])
    # What serving calls with a request's customer_facts.
    assert model.segment_of({"customer_id": "c-1", "tenure": 3}) is None
    assert model.segment_of({**row, "name": "Sam"}) == model.assign([row])[0]
    with pytest.raises(ValueError, match="column 'total_spend'"):
        model.segment_of({"days_since_last": 5, "frequency": 2})


def test_rfm_is_point_in_time(trained):
    _, _, _, orders = trained
    base = rfm_table(orders, "customer_id", "date", "amount", 90)
    late = orders.iloc[:1].assign(date=orders["date"].max(), amount=1e6)
    again = rfm_table(pd.concat([orders, late]), "customer_id", "date", "amount", 90)
    assert again.cutoff == base.cutoff
    pd.testing.assert_frame_equal(again.facts, base.facts)
    cid = late["customer_id"].iloc[0]
    assert not again.churned[cid] and again.revenue_after[cid] >= 1e6
    assert np.isfinite(base.facts[list(RFM)].to_numpy()).all()


def test_an_empty_order_log_is_a_clear_error():
    empty = pd.DataFrame({"customer_id": [], "date": pd.to_datetime([]), "amount": []})
    with pytest.raises(ValueError, match="order log is empty"):
        rfm_table(empty, "customer_id", "date", "amount", 90)
    with pytest.raises(ValueError, match="column 'amount': required column is missing"):
        rfm_table(empty.drop(columns="amount"), "customer_id", "date", "amount", 90)
