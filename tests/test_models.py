import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from retention.config import BinaryTrainerConfig, DatasetSpec, SplitConfig
from retention.contract import ContactContract
from retention.data import synthetic
from retention.data.split import split_frame
from retention.data.validate import validate_table
from retention.models.binary import BinaryModel, Columns, train_binary
from retention.models.calibration import choose_calibrator, fit_calibrator
from retention.results import AcceptResult, BinaryResult, LtvResult, PhaseHealthResult

CFG = BinaryTrainerConfig(
    n_estimators=150, learning_rate=0.1, cv_folds=3, inner_folds=3, bootstrap=100
)
SPEC = DatasetSpec(
    target="Churn",
    positive="Yes",
    labels=["Yes", "No"],
    id_column="customerID",
    columns={"tenure": "integer", "MonthlyCharges": "number", "TotalCharges": "number"},
)


@pytest.fixture(scope="module")
def customers():
    raw = synthetic.telco_customers(1500, 7).astype(str)
    return validate_table(raw, "synthetic", SPEC)


@pytest.fixture(scope="module")
def trained(customers):
    parts = split_frame(customers, SPEC, SplitConfig(), 42)
    cols = Columns(target="Churn", id_column="customerID")
    model, metrics, curves = train_binary(
        parts["train"], parts["valid"], parts["test"], cols, CFG, 42
    )
    return model, metrics, curves, parts


def test_synthetic_signal_is_learnable_but_not_one_column(customers):
    y = customers["Churn"].to_numpy()
    best_single = 0.0
    for col in customers.columns.drop(["Churn", "customerID"]):
        s = customers[col]
        if s.dtype == "string":
            # Target-mean encoding gives a categorical column its best possible ranking.
            score = pd.Series(y).groupby(pd.factorize(s)[0]).transform("mean")
        else:
            score = s.fillna(s.median())
        auc = roc_auc_score(y, score)
        best_single = max(best_single, auc, 1 - auc)
    assert best_single < 0.78


def test_trainer_metrics(trained):
    model, metrics, curves, _ = trained
    assert type(metrics) is BinaryResult
    assert metrics.test_auc > 0.75
    assert metrics.test_auc_ci_low < metrics.test_auc < metrics.test_auc_ci_high
    assert 0 <= metrics.oof_ece < 0.08 and 0 < metrics.oof_brier < metrics.oof_log_loss
    assert len(metrics.details["cv_fold_auc"]) == 3
    assert metrics.cv_auc == pytest.approx(np.mean(metrics.details["cv_fold_auc"]))
    assert metrics.calibration in {"isotonic", "platt", "none"}
    assert set(metrics.details["hyperparameters"]) >= {"learning_rate", "max_depth"}
    assert np.isclose(model.threshold, 1 / 6)  # fp / (fp + fn) with costs 1 and 5
    assert metrics.threshold == model.threshold
    assert curves["confusion"][0][0] + curves["confusion"][1][1] > 0
    assert model.info["metrics"] == metrics.scalars()


def test_result_round_trips_through_metrics_json(trained, tmp_path):
    _, metrics, _, _ = trained
    metrics.save(tmp_path / "metrics.json")
    again = BinaryResult.load(tmp_path / "metrics.json")
    assert again == metrics
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["test_auc"] == metrics.test_auc and "cv_fold_auc" in saved["details"]


def test_chosen_calibration_does_not_worsen_validation_log_loss(trained):
    _, metrics, _, _ = trained
    scores = metrics.details["calibration_valid_log_loss"]
    assert scores[metrics.calibration] <= scores["none"] + 1e-12


def test_calibration_fixes_a_miscalibrated_score():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.02, 0.98, 4000)
    y = (rng.random(4000) < p_true).astype(int)
    skewed = p_true**3  # systematically too low
    cal, scores = choose_calibrator(skewed, y, "auto", seed=0)
    assert cal.method != "none"
    assert log_loss(y, cal(skewed)) < log_loss(y, skewed)
    for method in ("isotonic", "platt"):
        c = fit_calibrator(skewed, y, method)
        assert log_loss(y, c(skewed)) < log_loss(y, skewed)


def test_shap_contributions_sum_to_margin(trained):
    model, _, _, parts = trained
    test = parts["test"]
    contrib = model.contributions(test)
    assert np.allclose(contrib.sum(axis=1), model.margin(test), atol=1e-4)
    factors = model.top_factors(test.head(3), k=3)
    assert len(factors) == 3 and all(len(f) == 3 for f in factors)
    assert factors[0][0]["shap"] >= factors[0][1]["shap"]


def test_save_and_load_reproduce_predictions_without_pickle(trained, tmp_path):
    model, _, _, parts = trained
    model.save(tmp_path / "m")
    names = {p.name for p in (tmp_path / "m").iterdir()}
    # JSON and LightGBM's text format only: the first member is model.*, then the others.
    assert "preprocess.json" in names and {"model.json", "model.txt"} & names
    assert all(n.endswith((".json", ".txt")) for n in names), names
    assert len(names) == len(model.members) + 1
    again = BinaryModel.load(tmp_path / "m")
    np.testing.assert_allclose(
        again.predict_proba(parts["test"]), model.predict_proba(parts["test"])
    )


def test_unseen_category_and_raw_strings_are_handled(trained):
    model, _, _, parts = trained
    row = parts["test"].head(1).copy().astype(object)
    row["Contract"] = "Ten year"
    row["tenure"] = "12"
    p = model.predict_proba(row)
    assert 0 < p[0] < 1


def test_accept_model_is_monotone_in_the_offer_level():
    from retention.models.accept import MONOTONE, acceptance_curve

    offers = synthetic.bank_offers(3000, 11, ContactContract())
    spec = DatasetSpec(target="y", positive="yes", labels=["yes", "no"], id_column="contact_id")
    df = validate_table(offers.astype(str), "synthetic", spec)
    parts = split_frame(df, spec, SplitConfig(), 42)
    cols = Columns(target="y", id_column="contact_id")
    model, _, _ = train_binary(
        parts["train"], parts["valid"], parts["test"], cols, CFG, 42, MONOTONE, False
    )
    rng = np.random.default_rng(0)
    # Random customers, including combinations never seen in training.
    random_rows = pd.DataFrame(
        {c: rng.permutation(df[c].to_numpy())[:500] for c in df.columns if c != "y"}
    )
    curve = acceptance_curve(model, random_rows)
    assert (np.diff(curve, axis=1) >= -1e-12).all()
    assert curve[:, 3].mean() > curve[:, 0].mean()  # the constraint is not just a flat line


def test_bank_adapter_drops_duration_and_derives_offer_level():
    from retention.models.accept import bank_marketing_adapter

    raw = pd.DataFrame({"duration": [100, 5], "previous": [0, 7], "age": [30, 40]})
    out = bank_marketing_adapter(raw)
    assert "duration" not in out and "previous" not in out
    assert out["offer_level"].tolist() == [0, 3]


@pytest.fixture(scope="module")
def tiny_splits(tmp_path_factory):
    from retention.config import load_profile
    from retention.data.ingest import ingest
    from retention.data.split import split

    profile = load_profile("tiny")
    d = tmp_path_factory.mktemp("tiny")
    ingest(profile, d / "ds")
    split(profile, d / "ds", d / "sp")
    return profile, d / "sp"


def test_binary_trainers_return_their_catalogue_result(tiny_splits, tmp_path):
    from typing import get_type_hints

    from retention import catalogue
    from retention.models.binary_trainers import TRAINERS, train_named

    binary = [s for s in catalogue.CATALOGUE if s.component == "train_binary"]
    assert {s.name for s in binary} == set(TRAINERS)
    for s in binary:
        assert get_type_hints(TRAINERS[s.name])["return"] is s.result, s.name
    profile, splits = tiny_splits
    accept = train_named("accept", profile, splits, tmp_path / "accept")
    assert type(accept) is AcceptResult and accept.monotone_violations == 0
    levels = accept.details["mean_accept_by_level"]
    assert len(levels) == len(profile.contract.offers) and levels == sorted(levels)
    assert AcceptResult.load(tmp_path / "accept" / "metrics.json") == accept
    assert (tmp_path / "accept" / "model" / "model.json").is_file()
    with pytest.raises(KeyError, match="no binary trainer for model 'ltv'"):
        train_named("ltv", profile, splits, tmp_path / "x")


def test_ltv_trainer_returns_its_typed_result(tiny_splits, tmp_path):
    from retention.models.ltv import train_ltv

    profile, splits = tiny_splits
    r = train_ltv(profile, splits, tmp_path / "ltv")
    assert type(r) is LtvResult and r.chosen in {"hurdle_glm", "lightgbm_tweedie"}
    assert r.test_abs_revenue_error == pytest.approx(abs(r.test_revenue_error))
    assert set(r.details["valid_tweedie_deviance"]) == {"hurdle_glm", "lightgbm_tweedie"}
    assert LtvResult.load(tmp_path / "ltv" / "metrics.json") == r
    assert (tmp_path / "ltv" / "model" / "ltv.json").is_file()


def test_phase_health_models_drivers_and_grounded_summaries(tiny_splits, tmp_path):
    from retention.models.phase_health import PHASES, score_customer, train_phase_health

    profile, splits = tiny_splits
    m = train_phase_health(profile, splits, tmp_path / "ph")
    assert set(m.details["phases"]) == set(PHASES) and m.details["phase_order"] == list(PHASES)
    assert m.test_auc > 0.6
    assert m.test_min_phase_auc == min(v["test_auc"] for v in m.details["phases"].values())
    assert PhaseHealthResult.load(tmp_path / "ph" / "metrics.json") == m
    journey = pd.read_parquet(splits.parent / "ds" / "journey.parquet")
    for phase, v in m.details["phases"].items():
        rows = journey[journey["phase"] == phase]
        # The summary's healthy share is the data's, not an invented number.
        assert f"{rows['health'].mean():.0%} of customers are healthy" in v["summary"]
        assert v["drivers"][0]["feature"] in v["summary"]
    one = journey[journey["customer_id"] == journey["customer_id"].iloc[0]]
    scores = score_customer(tmp_path / "ph" / "model", one)
    assert set(scores) == set(PHASES) | {"overall"}
    assert np.isclose(scores["overall"], np.mean([scores[p] for p in PHASES]))


def test_ltv_features_never_read_the_future():
    from retention.models.ltv import rfm_features

    orders = synthetic.orders(300, 5)
    cutoff = pd.Timestamp("2024-06-01")
    before = rfm_features(orders, cutoff, "customer_id", "date", "amount")
    # Rewriting every order on or after the cut-off must not change a single feature.
    future = orders["date"] >= cutoff
    tampered = orders.copy()
    tampered.loc[future, "amount"] *= 100
    extra = tampered[future].assign(date=tampered.loc[future, "date"] + pd.Timedelta(days=1))
    tampered = pd.concat([tampered, extra])
    after = rfm_features(tampered, cutoff, "customer_id", "date", "amount")
    pd.testing.assert_frame_equal(before, after)
    assert (before["T_weeks"] >= before["recency_weeks"]).all()
    assert (before["days_since_last"] > 0).all()


def test_bgnbd_recovers_sensible_parameters_and_ltv_beats_nothing(tmp_path):
    from retention.config import load_profile
    from retention.models.ltv import build_dataset, fit_and_evaluate, top_share

    orders = synthetic.orders(2000, 9)
    cutoff = orders["date"].min() + pd.Timedelta(weeks=39)
    f, y = build_dataset(orders, cutoff, 39 * 7, "customer_id", "date", "amount")
    assert (f["bgnbd_purchases"] >= 0).all() and f["bgnbd_purchases"].notna().all()
    res = fit_and_evaluate(f, y, load_profile("tiny"))
    m = res["metrics"]
    assert m["chosen"] in {"hurdle_glm", "lightgbm_tweedie"}
    random_capture = top_share(np.random.default_rng(0).random(len(y)), y)
    assert m["test_top10_capture"] > random_capture
    assert 0.5 < m["test_interval_coverage"] <= 1.0
