"""Qini evaluation and the two-model uplift learner (retention/models/uplift.py)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from retention.models.uplift import (
    TwoModelUplift,
    UpliftParams,
    perfect_qini_curve,
    qini_coefficient,
    qini_curve,
)

# Hand-checked case. Cut-offs fall after each distinct score (the tied 0.7s and 0.3s enter together):
#   k=1: N_t=1 R_t=1 N_c=0 R_c=0 -> Q = 1 (no control yet, so no subtraction)
#   k=3: N_t=2 R_t=1 N_c=1 R_c=0 -> Q = 1
#   k=4: N_t=2 R_t=1 N_c=2 R_c=1 -> Q = 1 - 1*2/2 = 0
#   k=6: N_t=3 R_t=2 N_c=3 R_c=1 -> Q = 2 - 1*3/3 = 1
#   k=7: N_t=4 R_t=2 N_c=3 R_c=1 -> Q = 2 - 1*4/3 = 2/3
#   k=8: N_t=4 R_t=2 N_c=4 R_c=1 -> Q = 2 - 1 = 1
# Model area (trapezoids): 1/2 + 2 + 1/2 + 1 + 5/6 + 5/6 = 17/3; random line 8 * 1 / 2 = 4.
# Oracle score y*t - y*(1-t) = [1, 0, 0, -1, 1, 0, 0, 0]: points (0,0) (2,2) (7,2) (8,1),
# area 2 + 10 + 3/2 = 27/2. Normalised Qini = (17/3 - 4) / (27/2 - 4) = (5/3) / (19/2) = 10/57.
SCORE = [0.9, 0.7, 0.7, 0.5, 0.3, 0.3, 0.2, 0.1]
TREATED = [1, 1, 0, 0, 1, 0, 1, 0]
Y = [1, 0, 0, 1, 1, 0, 0, 0]


def test_hand_checked_curve_and_coefficient():
    curve = qini_curve(Y, TREATED, SCORE)
    assert curve.rows.tolist() == [0, 1, 3, 4, 6, 7, 8]
    np.testing.assert_allclose(curve.gain, [0, 1, 1, 0, 1, 2 / 3, 1], rtol=0, atol=1e-12)
    assert curve.area() == pytest.approx(17 / 3, abs=1e-12)
    perfect = perfect_qini_curve(Y, TREATED)
    assert perfect.rows.tolist() == [0, 2, 7, 8]
    assert perfect.gain.tolist() == [0, 2, 2, 1]
    assert qini_coefficient(Y, TREATED, SCORE) == pytest.approx(10 / 57, abs=1e-12)


def test_tied_scores_are_grouped_not_split_by_row_order():
    # Swapping the tied rows (1, 2) and (4, 5) must not move any point of the curve.
    order = [0, 2, 1, 3, 5, 4, 6, 7]
    swapped = qini_curve(np.array(Y)[order], np.array(TREATED)[order], np.array(SCORE)[order])
    base = qini_curve(Y, TREATED, SCORE)
    np.testing.assert_array_equal(swapped.rows, base.rows)
    np.testing.assert_allclose(swapped.gain, base.gain)
    # A constant score is one group: the curve is just the random line.
    flat = qini_curve(Y, TREATED, np.zeros(8))
    assert flat.rows.tolist() == [0, 8]
    assert qini_coefficient(Y, TREATED, np.zeros(8)) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("y", "treated", "score", "message"),
    [
        ([1, 0, 2], [1, 0, 1], [0.1, 0.2, 0.3], "y must be 0/1"),
        ([1, 0, 1], [1, 0], [0.1, 0.2, 0.3], "differ in length"),
        ([1, 0, 1], [1, 1, 1], [0.1, 0.2, 0.3], "both a treated and a control"),
        ([1, 0, 1], [1, 0, 1], [0.1, np.nan, 0.3], "NaN"),
        ([0, 0, 0], [1, 0, 1], [0.1, 0.2, 0.3], "undefined"),
    ],
)
def test_bad_input_is_named(y, treated, score, message):
    with pytest.raises(ValueError, match=message):
        qini_coefficient(y, treated, score)


def synthetic_rct(n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """A randomised campaign with persuadables, sure things and sleeping dogs.

    Treatment lifts the response logit by 1.5 where x2 > 0 and channel is "web", by 0.5 where
    x2 > 0 otherwise, and lowers it by 0.5 where x2 <= 0; x1 and channel also move the baseline.
    """
    rng = np.random.default_rng(seed)
    x1, x2 = rng.normal(size=n), rng.normal(size=n)
    channel = rng.choice(["web", "phone", "multichannel"], size=n)
    treated = rng.integers(0, 2, size=n)
    base = -1.0 + 0.8 * x1 + 0.4 * (channel == "phone")
    effect = np.where(x2 > 0, np.where(channel == "web", 1.5, 0.5), -0.5)
    p_c = 1 / (1 + np.exp(-base))
    p_t = 1 / (1 + np.exp(-(base + effect)))
    y = (rng.random(n) < np.where(treated == 1, p_t, p_c)).astype(int)
    X = pd.DataFrame({"x1": x1, "x2": x2, "channel": channel})
    return X, y, treated, p_t - p_c


def test_oracle_is_one_and_random_is_about_zero():
    _, y, treated, _ = synthetic_rct(40_000, seed=3)
    oracle = y * treated - y * (1 - treated)
    assert qini_coefficient(y, treated, oracle) == pytest.approx(1.0, abs=1e-12)
    rng = np.random.default_rng(11)
    randoms = [qini_coefficient(y, treated, rng.random(len(y))) for _ in range(5)]
    assert max(abs(r) for r in randoms) < 0.02, randoms


@pytest.fixture(scope="module")
def rct_model():
    X, y, treated, _ = synthetic_rct(20_000, seed=1)
    return TwoModelUplift(UpliftParams(n_estimators=300), seed=7).fit(X, y, treated)


def test_two_model_recovers_planted_effect(rct_model):
    X, y, treated, true_uplift = synthetic_rct(20_000, seed=2)
    est = rct_model.predict(X)
    q_model = qini_coefficient(y, treated, est)
    q_true = qini_coefficient(y, treated, true_uplift)
    q_random = qini_coefficient(y, treated, np.random.default_rng(0).random(len(y)))
    assert q_model > q_random + 0.1, (q_model, q_random)
    # Most of what the true effect's ranking achieves on these noisy outcomes.
    assert q_model > 0.8 * q_true, (q_model, q_true)
    assert np.corrcoef(est, true_uplift)[0, 1] > 0.8
    p_t, p_c = rct_model.predict_arms(X)
    assert ((p_t > 0) & (p_t < 1) & (p_c > 0) & (p_c < 1)).all()


def test_fit_is_seeded():
    X, y, treated, _ = synthetic_rct(4_000, seed=5)
    params = UpliftParams(n_estimators=60, feature_fraction=0.7)
    a = TwoModelUplift(params, seed=4).fit(X, y, treated).predict(X)
    b = TwoModelUplift(params, seed=4).fit(X, y, treated).predict(X)
    np.testing.assert_array_equal(a, b)


def test_save_load_round_trip(rct_model, tmp_path):
    X, _, _, _ = synthetic_rct(2_000, seed=9)
    rct_model.save(tmp_path / "uplift")
    loaded = TwoModelUplift.load(tmp_path / "uplift")
    np.testing.assert_array_equal(loaded.predict(X), rct_model.predict(X))
    assert loaded.params == rct_model.params and loaded.seed == rct_model.seed
    assert loaded.categories == {"channel": ["multichannel", "phone", "web"]}
    # An unseen category is missing, not an error, and the columns may come in any order.
    odd = X[["channel", "x2", "x1"]].head(3).assign(channel="fax")
    assert np.isfinite(loaded.predict(odd)).all()
    with pytest.raises(ValueError, match="feature columns missing: \\['x2'\\]"):
        loaded.predict(X.drop(columns="x2"))


def test_unfitted_and_missing_folder_are_named(tmp_path):
    with pytest.raises(RuntimeError, match="not fitted"):
        TwoModelUplift().predict(pd.DataFrame({"x": [1.0]}))
    with pytest.raises(FileNotFoundError, match="not a saved TwoModelUplift"):
        TwoModelUplift.load(tmp_path)
    X, y, treated, _ = synthetic_rct(200, seed=0)
    with pytest.raises(ValueError, match="control arm needs both outcomes"):
        TwoModelUplift().fit(X, np.where(treated == 1, y, 0), treated)


def test_the_synthetic_campaign_has_persuadables_and_lost_causes():
    from retention.data.synthetic import campaign

    df = campaign(40000, 3)
    rate = df.groupby("segment")["visit"].mean()
    assert 0.08 < rate["No E-Mail"] < 0.13
    assert 0.02 < rate["Womens E-Mail"] - rate["No E-Mail"] < 0.07  # as in the public data
    arms = df[df["segment"].isin(["Womens E-Mail", "No E-Mail"])]

    def lift(rows):
        r = rows.groupby("segment")["visit"].mean()
        return r["Womens E-Mail"] - r["No E-Mail"]

    recent_web = arms[(arms.recency <= 4) & (arms.channel != "Phone") & (arms.womens == 1)]
    lapsed = arms[arms.recency >= 11]
    assert lift(recent_web) > 3 * max(lift(lapsed), 0.005)


def test_train_uplift_fits_gates_and_scales_offer_effects(tmp_path):
    from retention.config import load_profile
    from retention.data.ingest import ingest
    from retention.data.split import split
    from retention.models.outputs import METRICS_FILE, MODEL_DIR
    from retention.models.uplift import effect_multiplier, load_effects, train_uplift
    from retention.results import UpliftResult

    profile = load_profile("tiny")
    ingest(profile, tmp_path / "data")
    split(profile, tmp_path / "data", tmp_path / "splits")
    res = train_uplift(profile, tmp_path / "splits", tmp_path / "uplift")
    assert res.test_qini > profile.gates["uplift"].min["test_qini"]
    assert 0.02 < res.mean_uplift < 0.08
    assert UpliftResult.load(tmp_path / "uplift" / METRICS_FILE).test_qini == res.test_qini
    model, mean, cap = load_effects(tmp_path / "uplift" / MODEL_DIR)
    assert (mean, cap) == (res.mean_uplift, profile.uplift.effect_cap)
    m = effect_multiplier(np.array([-0.1, 0.0, mean, 10 * mean]), mean, cap)
    assert m.tolist() == [0.0, 0.0, 1.0, cap]
    with pytest.raises(ValueError, match="not positive"):
        effect_multiplier(np.array([0.1]), -0.01, cap)


def test_train_uplift_names_a_missing_column(tmp_path):
    from retention.config import UpliftConfig
    from retention.models.uplift import campaign_arms

    cfg = UpliftConfig()
    df = pd.DataFrame({"segment": ["No E-Mail", "Womens E-Mail"], "recency": [1, 2]})
    with pytest.raises(ValueError, match=r"campaign/train: missing column\(s\) \['history'"):
        campaign_arms(df, cfg, "campaign/train")
    full = pd.DataFrame({c: [0, 1] for c in cfg.features} | {"segment": ["No E-Mail"] * 2})
    with pytest.raises(ValueError, match="no row with arm 'Womens E-Mail'"):
        campaign_arms(full, cfg)
