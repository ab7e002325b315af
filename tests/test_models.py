import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import log_loss, roc_auc_score

from retention.config import BinaryTrainerConfig, DatasetSpec, SplitConfig
from retention.data import synthetic
from retention.data.split import split_frame
from retention.data.validate import validate_table
from retention.models.binary import BinaryModel, Columns, train_binary
from retention.models.calibration import choose_calibrator, fit_calibrator

CFG = BinaryTrainerConfig(n_estimators=150, learning_rate=0.1, cv_folds=3, bootstrap=100)
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
    assert metrics["test_auc"] > 0.75
    assert metrics["test_auc_ci_low"] < metrics["test_auc"] < metrics["test_auc_ci_high"]
    assert 0 <= metrics["oof_ece"] < 0.08
    assert len(metrics["cv_fold_auc"]) == 3
    assert metrics["calibration"] in {"isotonic", "platt", "none"}
    assert np.isclose(model.threshold, 1 / 6)  # fp / (fp + fn) with costs 1 and 5
    assert curves["confusion"][0][0] + curves["confusion"][1][1] > 0


def test_chosen_calibration_does_not_worsen_validation_log_loss(trained):
    _, metrics, _, _ = trained
    scores = metrics["calibration_valid_log_loss"]
    assert scores[metrics["calibration"]] <= scores["none"] + 1e-12


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
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["model.json", "preprocess.json"]
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

    offers = synthetic.bank_offers(3000, 11)
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


def test_phase_health_models_drivers_and_grounded_summaries(tmp_path):
    from retention.config import load_profile
    from retention.data.ingest import ingest
    from retention.data.split import split
    from retention.models.phase_health import PHASES, score_customer, train_phase_health

    profile = load_profile("tiny")
    ingest(profile, tmp_path / "ds")
    split(profile, tmp_path / "ds", tmp_path / "sp")
    m = train_phase_health(profile, tmp_path / "sp", tmp_path / "ph")
    assert set(m["phases"]) == set(PHASES)
    assert m["test_auc"] > 0.6
    journey = pd.read_parquet(tmp_path / "ds" / "journey.parquet")
    for phase, v in m["phases"].items():
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
