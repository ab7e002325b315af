"""The compiled serving path equals the training-time path, on fuzzed rows.

Risk, accept and phase health are trained by the project's own trainers on the tiny profile's
synthetic tables (``tests.serving_fixtures.BUILDERS``). A seeded fuzzer writes request rows the way
callers get them wrong: numbers as text (``"12.5"``, ``" 7 "``), bools, ints for categoricals,
unseen levels, text that is no number, null, NaN, missing and extra columns. For every row the
compiled path (``RowEncoder`` -> ``inplace_predict`` -> calibrator; SHAP from the same row) must
give what the DataFrame path gives (``TabularPreprocessor.transform`` -> ``predict_proba``,
``acceptance_curve``, ``top_factors``), to the bit.
"""

import json
import math
import random

import numpy as np
import pandas as pd
import pytest

from retention.models.accept import LEVELS, OFFER
from retention.models.binary import BinaryModel
from retention.models.fastpath import CompiledAccept, CompiledRisk
from retention.models.outputs import MODEL_DIR
from retention.models.preprocess import (
    FeatureValueError,
    RowEncoder,
    TabularPreprocessor,
    level_key,
    parse_number,
)
from tests.serving_fixtures import BUILDERS, tiny_serving_profile

SEED = 20261201
ROWS = 300
# The README's example customer.
FACTS = {
    "customer_id": "c-17",
    "name": "Sam",
    "tenure": 4,
    "plan": "Pro",
    "MonthlyCharges": 89.5,
    "Contract": "Month-to-month",
    "timezone": "Europe/London",
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{catalogue name: model folder} of risk, accept and phase health, trained on tiny data,
    and ``splits``: the split tables they were trained on."""
    from retention.data.ingest import ingest
    from retention.data.split import split

    root = tmp_path_factory.mktemp("fastpath")
    profile = tiny_serving_profile(root)
    ingest(profile, root / "data")
    split(profile, root / "data", root / "splits")
    out = {"splits": root / "splits"}
    for name in ("risk", "accept", "phase_health"):
        BUILDERS[name](profile, root / "splits", root / name)
        out[name] = root / name / MODEL_DIR
    return out


def _load(models, name) -> BinaryModel:
    return BinaryModel.load(models[name])


# ------------------------------------------------------------------------------------- fuzzing


def _number_text(rng: random.Random, x: float) -> str:
    forms = [repr(x), f" {x} ", f"{x:e}", f"\t{int(x)}\n", f"+{abs(x)}", f"{x:.3f}"]
    return rng.choice(forms)


def _value(rng: random.Random, pre: TabularPreprocessor, feature: str, train: pd.Series):
    """One value for ``feature``, or the marker ``...`` for 'leave the key out'."""
    r = rng.random()
    if r < 0.15:
        return ...
    if r < 0.22:
        return None
    if r < 0.27:
        return math.nan
    seen = train.dropna()
    if feature in pre.categorical:
        levels = pre.categorical[feature]
        if r < 0.65:
            return rng.choice(levels)
        return rng.choice(
            [
                rng.choice(levels).lower(),  # unseen spelling
                f" {rng.choice(levels)}",
                "Ten year",
                rng.randrange(-3, 5),  # an int where a level is expected
                rng.random() < 0.5,  # a bool
                rng.uniform(0, 100),
                "",
            ]
        )
    x = float(seen.sample(1, random_state=rng.randrange(10**6)).iloc[0]) if len(seen) else 1.0
    if r < 0.6:
        return x if rng.random() < 0.5 else int(x)
    return rng.choice(
        [
            _number_text(rng, x),
            rng.random() < 0.5,  # a bool as a number
            "abc",
            "1_000",  # Python's float() reads it, the serving grammar does not
            "0x10",
            "١٢",  # non-ASCII digits: not a number here
            "nan",
            "",
            x * 1e30,  # large but within float32
            -x,
            1e-40,  # float32 subnormal
        ]
    )


def fuzz_rows(pre: TabularPreprocessor, train: pd.DataFrame, n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        row = {}
        for f in pre.features:
            v = _value(rng, pre, f, train[f] if f in train else pd.Series(dtype=float))
            if v is not ...:
                row[f] = v
        for k in range(rng.randrange(3)):  # extra columns the model does not know
            row[f"extra_{k}"] = rng.choice(["x", 1, None, 2.5, True])
        rows.append(row)
    return rows


def _frame(row: dict, features: list[str]) -> pd.DataFrame:
    """The training-time path's input for one request row, as the predictors built it."""
    return pd.DataFrame.from_records([row]).reindex(columns=features)


def _null(v) -> bool:
    return v is None or (isinstance(v, (float, np.floating)) and math.isnan(v))


def _expected_reports(row: dict, pre: TabularPreprocessor, x: np.ndarray):
    """(missing, unrecognised) by the documented rules, from the DataFrame path's matrix:
    missing is not sent, null, NaN or (for a number) the text "nan"; unrecognised is any other
    value the DataFrame path could not use."""
    missing = tuple(
        f
        for f in pre.features
        if _null(row.get(f))
        or (f in pre.numeric and isinstance(row[f], str) and row[f].strip().lower() == "nan")
    )
    unread = tuple(f for j, f in enumerate(pre.features) if np.isnan(x[j]) and f not in missing)
    return missing, unread


# ------------------------------------------------------------------------- preprocessing alone


def test_the_serving_number_grammar():
    assert parse_number("12.5") == 12.5 and parse_number(" 7 ") == 7.0
    assert parse_number("\t1e3\n") == 1000.0 and parse_number("+.5") == 0.5
    assert parse_number(True) == 1.0 and parse_number(2**70) == float(2**70)
    assert parse_number("-inf") == -math.inf and math.isnan(parse_number("NaN"))
    for text in ("abc", "1_000", "0x10", "١٢", "\u00a012", "", " ", "1e", "--5", "1,5", "1 2"):
        assert parse_number(text) is None, text
    assert parse_number(10**400) == math.inf  # an int beyond any float: out of range
    with pytest.raises(TypeError, match="got list"):
        parse_number([1])
    assert level_key(1) == "1" and level_key(True) == "True" and level_key(12.5) == "12.5"
    assert level_key(np.int64(3)) == "3" and level_key(math.nan) is None


def test_the_row_encoder_equals_transform_on_fuzzed_rows():
    # Levels that only non-text values can hit, so every branch of the level rule is exercised.
    pre = TabularPreprocessor(
        numeric=["n1", "n2", "flag"],
        categorical={
            "c1": ["1", "-2", "True", "False", "12.5", "1e+16", "nan", "None", "a b", ""],
            "c2": ["Yes", "No"],
        },
    )
    rng = random.Random(SEED)
    pool = [None, math.nan, True, False, 0, 1, -2, 12.5, 1e16, 0.1 + 0.2, "1", "12.5", " 12.5 ",
            "True", "nan", "None", "a b", "", "Yes", "yes", "1e3", "abc", "1_000", 2**63, -0.0,
            np.int64(7), np.float64(2.5), np.bool_(True), 3.4028235e38, "١٢"]  # fmt: skip
    rows = []
    for _ in range(ROWS):
        row = {k: rng.choice(pool) for k in pre.features if rng.random() > 0.1}
        row["unused"] = rng.choice(pool)
        rows.append(row)
    enc = RowEncoder(pre).encode(rows)
    for i, row in enumerate(rows):
        want = pre.transform(_frame(row, pre.features))[0]
        np.testing.assert_array_equal(enc.x[i], want, err_msg=repr(row))
        missing, unread = _expected_reports(row, pre, want)
        assert (enc.missing[i], enc.unrecognised[i]) == (missing, unread), row
    # One row's answer never depends on the other rows of the batch.
    np.testing.assert_array_equal(RowEncoder(pre).encode(rows[:1]).x[0], enc.x[0])


def test_values_no_model_can_take_are_named():
    pre = TabularPreprocessor(numeric=["n"], categorical={"c": ["a"]})
    enc = RowEncoder(pre)
    for bad in (math.inf, "inf", " -Infinity", 1e39, 10**400):
        with pytest.raises(FeatureValueError, match=r"instances\[1\]\.n: .* not a finite number"):
            enc.encode([{"n": 1}, {"n": bad}])
    with pytest.raises(FeatureValueError, match=r"instances\[0\]\.c: expected text.*got dict"):
        enc.encode([{"c": {"x": 1}}])
    with pytest.raises(FeatureValueError, match=r"instances\[0\]\.n: expected a number.*list"):
        enc.encode([{"n": [1, 2]}])
    with pytest.raises(FeatureValueError, match=r"instances\[0\]\.\*: expected an object"):
        enc.encode(["n=1"])
    with pytest.raises(KeyError, match="offer_level"):
        RowEncoder(pre, fixed=["offer_level"])


# --------------------------------------------------------------------------------- the models


@pytest.fixture(scope="module")
def risk(models):
    return _load(models, "risk")


@pytest.fixture(scope="module")
def accept(models):
    return _load(models, "accept")


def _training_table(models, name):
    from retention.data.split import read_split

    table = "customers" if name == "risk" else "offers"
    return read_split(models["splits"], table, "train")


def test_risk_fast_path_equals_predict_proba_and_top_factors(models, risk):
    compiled = CompiledRisk(_load(models, "risk"))
    rows = fuzz_rows(risk.pre, _training_table(models, "risk"), ROWS, SEED)
    scores = compiled.score(rows)
    for row, got in zip(rows, scores, strict=True):
        df = _frame(row, risk.pre.features)
        x = risk.pre.transform(df)
        np.testing.assert_array_equal(compiled.encode([row]).x[0], x[0], err_msg=repr(row))
        assert got.churn_probability == float(risk.predict_proba(df)[0]), row
        assert [f.to_dict() for f in got.factors] == risk.top_factors(df)[0], row
        # A factor is only ever a feature the row gave a usable value for.
        assert all(not np.isnan(x[0][risk.pre.features.index(f.feature)]) for f in got.factors)
        assert (got.missing_features, got.unrecognised_features) == _expected_reports(
            row, risk.pre, x[0]
        )
    # Batched or one by one, the same answers.
    assert [s.to_dict() for s in compiled.score(rows[:7])] == [
        compiled.score([r])[0].to_dict() for r in rows[:7]
    ]


def test_accept_fast_path_is_the_curve_of_four_predict_probas(models, accept):
    compiled = CompiledAccept(_load(models, "accept"))
    features = [f for f in accept.pre.features if f != OFFER]
    rows = fuzz_rows(accept.pre, _training_table(models, "accept"), ROWS, SEED + 1)
    # A caller's own offer level is ignored: the curve sets each level itself.
    rows = [{**r, OFFER: "3"} if i % 5 == 0 else r for i, r in enumerate(rows)]
    curves = compiled.curves(rows)
    for row, got in zip(rows, curves, strict=True):
        df = _frame(row, features)
        want = [float(accept.predict_proba(df.assign(**{OFFER: lv}))[0]) for lv in LEVELS]
        assert list(got.accept_probability) == want, row
        assert OFFER not in got.missing_features and OFFER not in got.unrecognised_features


def test_the_readme_customer_has_no_null_factor(models):
    score = CompiledRisk(_load(models, "risk")).score([FACTS])[0].to_dict()
    json.dumps(score)  # plain JSON types only
    assert score["factors"], score
    for f in score["factors"]:
        assert f["value"] is not None and f["feature"] in FACTS, f
    assert "PaymentMethod" in score["missing_features"]
    unseen = CompiledRisk(_load(models, "risk")).score([{**FACTS, "Contract": "Ten year"}])[0]
    assert "Contract" in unseen.unrecognised_features
    assert "Contract" not in {f.feature for f in unseen.factors}


@pytest.mark.filterwarnings("ignore:overflow encountered in cast")
def test_out_of_range_values_are_refused_where_xgboost_refuses_them(models, risk):
    import xgboost as xgb

    compiled = CompiledRisk(_load(models, "risk"))
    for bad in (math.inf, "inf", 1e39):
        row = {**FACTS, "tenure": bad}
        with pytest.raises(xgb.core.XGBoostError):
            risk.predict_proba(_frame(row, risk.pre.features))
        with pytest.raises(FeatureValueError, match=r"instances\[0\]\.tenure"):
            compiled.score([row])


def test_each_booster_predicts_on_one_thread(models):
    model = _load(models, "risk")
    CompiledRisk(model)
    config = json.loads(model.booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"
    with pytest.raises(ValueError, match="nthread must be >= 0"):
        CompiledRisk(_load(models, "risk"), nthread=-1)


def test_phase_health_scores_equal_the_dataframe_path(models):
    from retention.models.phase_health import PHASES, PhaseHealthModels, UnknownPhase

    scorer = PhaseHealthModels(models["phase_health"])
    rng = random.Random(SEED + 2)
    pool = [None, math.nan, 0, 1, 0.25, 2.5, -1.0, True, "0.5", " 3 ", "abc", 1e6]
    rows = []
    for _ in range(ROWS):
        row = {"phase": rng.choice(PHASES)}
        row |= {f: rng.choice(pool) for f in scorer.features if rng.random() > 0.2}
        rows.append(row)
    got = scorer.score(rows)
    for row, s in zip(rows, got, strict=True):
        x = _frame(row, scorer.features).apply(pd.to_numeric, errors="coerce").astype(float)
        assert s.health == float(scorer.boosters[row["phase"]].predict(x)[0]), row
    with pytest.raises(UnknownPhase, match=r"instances\[1\]\.phase: 'Sleep'"):
        scorer.score([{"phase": "Learn"}, {"phase": "Sleep"}])


def test_acceptance_curve_of_a_frame_is_four_predict_probas(models, accept):
    from retention.data.split import read_split
    from retention.models.accept import acceptance_curve

    customers = read_split(models["splits"], "offers", "test").drop(columns=[OFFER])
    curve = acceptance_curve(accept, customers)
    for j, level in enumerate(LEVELS):
        np.testing.assert_array_equal(
            curve[:, j], accept.predict_proba(customers.assign(**{OFFER: level}))
        )
