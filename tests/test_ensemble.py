"""The binary trainer's ensemble: candidates, blend, monotone members, factors, nested CV.

Trained on the synthetic tables (``retention.data.synthetic``) with few trees; the real-data
figures are ``make bench-models``'s.
"""

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import xgboost as xgb

from retention.config import BinaryTrainerConfig, DatasetSpec, SplitConfig
from retention.contract import ContactContract
from retention.data import synthetic
from retention.data.split import split_frame
from retention.data.validate import validate_table
from retention.models import binary
from retention.models import ensemble as E
from retention.models.accept import LEVELS, MONOTONE, OFFER, acceptance_curve
from retention.models.binary import BinaryModel, BlendBooster, Columns, dmatrix_of, fit_model
from retention.models.columnar import ColumnEncoder
from retention.models.fastpath import CompiledAccept, CompiledRisk
from tests.test_fastpath import _frame, fuzz_rows

CFG = BinaryTrainerConfig(
    n_estimators=120, learning_rate=0.1, cv_folds=3, inner_folds=3, bootstrap=50
)
SPEC = DatasetSpec(
    target="Churn",
    positive="Yes",
    labels=["Yes", "No"],
    id_column="customerID",
    columns={"tenure": "integer", "MonthlyCharges": "number", "TotalCharges": "number"},
)
COLS = Columns(target="Churn", id_column="customerID")
OFFER_SPEC = DatasetSpec(target="y", positive="yes", labels=["yes", "no"], id_column="contact_id")
OFFER_COLS = Columns(target="y", id_column="contact_id")


@pytest.fixture(scope="module")
def parts():
    raw = synthetic.telco_customers(1500, 7).astype(str)
    return split_frame(validate_table(raw, "synthetic", SPEC), SPEC, SplitConfig(), 42)


@pytest.fixture(scope="module")
def fitted(parts):
    return fit_model(parts["train"], parts["valid"], COLS, CFG, 42)


def _blend_of(f: binary.Fitted, weights=(0.3, 0.3, 0.4), intercept=0.1) -> BinaryModel:
    """All three candidates blended (whatever the recipe chose), with their released calibrator:
    a real model of every member kind, for the invariants that must hold of any blend."""
    members = [f.solo[k].members[0] for k in ("xgboost", "lightgbm", "linear")]
    m = f.model
    return BinaryModel(
        members, E.Blend(list(weights), intercept), m.pre, m.calibrator, m.threshold, m.columns
    )


@pytest.fixture(scope="module")
def blend(fitted):
    return _blend_of(fitted)


def test_every_candidate_is_fitted_and_the_choice_is_the_lowest_cross_fitted_log_loss(fitted):
    inner = fitted.inner_log_loss
    assert set(inner) == {"xgboost", "lightgbm", "linear", "blend"}
    assert set(fitted.solo) == {"xgboost", "lightgbm", "linear"}
    best_single = min(("xgboost", "lightgbm", "linear"), key=inner.get)
    want = "blend" if inner["blend"] < inner[best_single] else best_single
    assert fitted.chosen == want
    model = fitted.model
    assert all(w > 0 for w in model.blend.weights)
    if want != "blend":
        assert model.kinds == [want]
    assert fitted.hyperparameters["linear_alpha"] in CFG.linear_alphas


def test_contributions_sum_to_the_margin_of_each_member_and_of_the_blend(parts, fitted, blend):
    x = blend.pre.transform(parts["test"])
    for model in [*fitted.solo.values(), blend, fitted.model]:
        c = model.contributions_matrix(x)
        assert c.shape == (len(x), len(model.pre.features) + 1)
        np.testing.assert_allclose(c.sum(axis=1), model.margin_matrix(x), atol=2e-4)
    # The blend's are its members' by the blend weights, plus the stacker's intercept.
    parts_sum = sum(
        w * m.contributions(x) for w, m in zip(blend.blend.weights, blend.members, strict=True)
    )
    parts_sum[:, -1] += blend.blend.intercept
    np.testing.assert_allclose(blend.contributions_matrix(x), parts_sum)


def test_linear_contributions_are_exact_and_local(parts, fitted):
    lin = fitted.solo["linear"].members[0]
    x = fitted.model.pre.transform(parts["test"].head(50))
    c = lin.contributions(x)
    np.testing.assert_allclose(c.sum(axis=1), lin.margin(x), rtol=0, atol=1e-9)
    # Additive: changing one feature of a row moves that feature's contribution alone.
    j = fitted.model.pre.features.index("tenure")
    moved = x.copy()
    moved[:, j] = np.nanmax(x[:, j])
    d = lin.contributions(moved) - c
    others = np.delete(d, j, axis=1)
    assert np.abs(others).max() < 1e-12 and np.abs(d[:, j]).max() > 0


def test_the_blend_is_served_as_trained_through_the_fast_path(parts, blend, tmp_path):
    blend.save(tmp_path / "m")
    names = sorted(p.name for p in (tmp_path / "m").iterdir())
    assert names == ["member-1.txt", "member-2.json", "model.json", "preprocess.json"]
    loaded = BinaryModel.load(tmp_path / "m")
    assert loaded.kinds == ["xgboost", "lightgbm", "linear"]
    test = parts["test"]
    np.testing.assert_array_equal(loaded.predict_proba(test), blend.predict_proba(test))
    np.testing.assert_array_equal(loaded.contributions(test), blend.contributions(test))
    compiled = CompiledRisk(loaded)
    rows = fuzz_rows(loaded.pre, parts["train"], 150, 16)
    for row, got in zip(rows, compiled.score(rows), strict=True):
        df = _frame(row, loaded.pre.features)
        assert got.churn_probability == float(loaded.predict_proba(df)[0]), row
        assert [f.to_dict() for f in got.factors] == loaded.top_factors(df)[0], row


def test_the_batch_calls_work_on_a_blend(parts, blend):
    """``serving.batch`` drives ``model.booster``, ``ColumnEncoder`` and ``proba_matrix``."""
    test = parts["test"]
    x = ColumnEncoder(blend.pre).encode(pa.Table.from_pandas(test, preserve_index=False))
    np.testing.assert_array_equal(blend.proba_matrix(x), blend.predict_proba(test))
    booster = blend.booster
    assert isinstance(booster, BlendBooster)
    booster.set_param({"nthread": 1})
    contrib = booster.predict(dmatrix_of(blend.pre, x), pred_contribs=True)
    np.testing.assert_array_equal(contrib, blend.contributions_matrix(x))
    margin = booster.inplace_predict(x, missing=np.nan, predict_type="margin")
    np.testing.assert_array_equal(margin, blend.margin_matrix(x))
    assert booster.num_boosted_rounds() > 0
    with pytest.raises(AttributeError, match="no single booster"):
        blend.booster = xgb.Booster()


def test_the_single_recipe_is_one_xgboost_booster(parts, tmp_path):
    single = CFG.model_copy(update={"recipe": "single"})
    f = fit_model(parts["train"], parts["valid"], COLS, single, 42)
    assert f.model.kinds == ["xgboost"] and f.chosen == "xgboost" and f.inner_log_loss == {}
    assert isinstance(f.model.booster, xgb.Booster)
    # A release saved before the ensemble (one booster, format v1) still loads.
    f.model.members[0].booster.save_model(str(tmp_path / "model.json"))
    from retention.fileio import write_json

    write_json(
        tmp_path / "preprocess.json",
        {
            "format": "retention.binary/v1",
            "preprocess": f.model.pre.to_dict(),
            "calibrator": f.model.calibrator.to_dict(),
            "threshold": f.model.threshold,
            "columns": {"target": "Churn", "id_column": "customerID", "exclude": []},
        },
    )
    old = BinaryModel.load(tmp_path)
    np.testing.assert_array_equal(
        old.predict_proba(parts["test"]), f.model.predict_proba(parts["test"])
    )


def _offers(flip: bool = False) -> tuple[dict, pd.DataFrame]:
    offers = synthetic.bank_offers(2500, 11, ContactContract())
    if flip:
        # Bigger offers accepted less often in this data: the constraint must still hold.
        offers[OFFER] = 3 - offers[OFFER]
    df = validate_table(offers.astype(str), "synthetic", OFFER_SPEC)
    return split_frame(df, OFFER_SPEC, SplitConfig(), 42), df


@pytest.mark.parametrize("flip", [False, True])
def test_every_member_and_the_blend_are_monotone_in_the_offer_level(flip):
    parts, df = _offers(flip)
    f = fit_model(parts["train"], parts["valid"], OFFER_COLS, CFG, 42, MONOTONE)
    rng = np.random.default_rng(0)
    # Random customers: each column drawn on its own, combinations never seen in training,
    # missing values included.
    customers = pd.DataFrame(
        {c: rng.permutation(df[c].to_numpy())[:400] for c in df.columns if c not in ("y", OFFER)}
    )
    customers.iloc[::7, 0] = None
    models = {**f.solo, "released": f.model, "blend": _blend_of(f, (0.5, 0.2, 0.9), -0.3)}
    for name, model in models.items():
        curve = acceptance_curve(model, customers)
        assert (np.diff(curve, axis=1) >= -1e-12).all(), name
        x = model.pre.transform(customers.assign(**{OFFER: 0}))
        at = model.pre.features.index(OFFER)
        for member in model.members:
            margins = []
            for level in LEVELS:
                x[:, at] = level
                margins.append(member.margin(x))
            assert (np.diff(np.column_stack(margins), axis=1) >= -1e-9).all(), (name, member)
    lin = f.solo["linear"].members[0]
    (col,) = np.flatnonzero(lin.owner == f.model.pre.features.index(OFFER))
    assert lin.coef[col] >= 0
    if flip:
        assert lin.coef[col] == 0  # the data pull it below zero; the bound holds it
    compiled = CompiledAccept(models["blend"])
    got = compiled.curves(customers.head(20).to_dict("records"))
    assert all(list(c.accept_probability) == sorted(c.accept_probability) for c in got)


def test_cv_is_nested_every_fold_chooses_on_its_own_training_rows(parts, monkeypatch):
    whole = pd.concat([parts["train"], parts["valid"], parts["test"]], ignore_index=True)
    seen: list[set] = []
    real = binary.fit_model

    def recording(train, valid, *args, **kwargs):
        seen.append(set(train["customerID"]) | set(valid["customerID"]))
        return real(train, valid, *args, **kwargs)

    monkeypatch.setattr(binary, "fit_model", recording)
    cv = binary.cross_validate(whole, COLS, CFG, 42)
    assert len(seen) == CFG.cv_folds and len(cv["cv_chosen"]) == CFG.cv_folds
    from sklearn.model_selection import StratifiedKFold

    y = whole["Churn"].to_numpy(int)
    folds = StratifiedKFold(CFG.cv_folds, shuffle=True, random_state=42).split(whole, y)
    for rows, (_, te) in zip(seen, folds, strict=True):
        assert rows.isdisjoint(set(whole["customerID"].iloc[te]))
    assert set(cv["cv_candidates"]) == {"xgboost", "lightgbm", "linear"}
    for scores in cv["cv_candidates"].values():
        assert 0.5 < scores["cv_auc"] < 1 and scores["oof_ece"] >= 0
    assert cv["cv_seconds"] > 0


def test_an_awkward_table_trains_and_explains():
    """What unseen tables bring: a constant column, an empty one, bools, a rare class, few
    rows, missing values in every column, a level seen once, text numbers."""
    rng = np.random.default_rng(3)
    n = 400
    a = rng.normal(size=n)
    df = pd.DataFrame(
        {
            "id": [f"r{i}" for i in range(n)],
            "a": a,
            "const": 1.0,
            "empty": np.nan,
            "flag": rng.random(n) < 0.3,
            "two": rng.integers(0, 2, n).astype(float),
            "cat": pd.array(rng.choice(["x", "y", "z", None], n), dtype="string"),
        }
    )
    df.loc[0, "cat"] = "once"
    df.loc[rng.random(n) < 0.1, "a"] = np.nan
    is_x = (df["cat"] == "x").fillna(False).to_numpy(dtype=float)
    p = 1 / (1 + np.exp(-(a * 1.5 - 3.5 + is_x)))
    df["t"] = (rng.random(n) < p).astype(int)
    assert df["t"].mean() < 0.2
    cols = Columns(target="t", id_column="id")
    spec = DatasetSpec(target="t", id_column="id")
    parts = split_frame(df, spec, SplitConfig(), 1)
    model, result, _ = binary.train_binary(
        parts["train"], parts["valid"], parts["test"], cols, CFG, 1
    )
    assert 0.5 < result.cv_auc <= 1 and len(result.details["cv_chosen"]) == CFG.cv_folds
    x = model.pre.transform(parts["test"])
    np.testing.assert_allclose(
        model.contributions_matrix(x).sum(axis=1), model.margin_matrix(x), atol=2e-4
    )
    odd = parts["test"].head(3).astype(object).assign(a="1e3", cat="never seen")
    p_odd = model.predict_proba(odd)
    assert ((p_odd > 0) & (p_odd < 1)).all()


def test_the_linear_design_keeps_the_most_frequent_levels_and_bounds_the_monotone_feature():
    from retention.models.preprocess import TabularPreprocessor

    df = pd.DataFrame(
        {
            "offer_level": [0, 1, 2, 3] * 25,
            "c": pd.array(["a"] * 10 + ["b"] * 60 + ["c"] * 30, dtype="string"),
        }
    )
    pre = TabularPreprocessor.fit(df, exclude=[])
    x = pre.transform(df)
    member, z, bounds = E.linear_layout(pre, x, MONOTONE, max_levels=2)
    (cat,) = member.categorical
    assert [pre.categorical["c"][k] for k in cat[1]] == ["b", "c"]
    # offer_level: its value alone (no spline), coefficient bounded below by 0.
    assert member.numeric[0].knots == [] and bounds[0] == (0.0, None)
    assert z.shape == (100, 1 + 2) and np.allclose(z.mean(axis=0), 0)
    with pytest.raises(ValueError, match="categorical"):
        E.linear_layout(pre, x, {"c": 1})
