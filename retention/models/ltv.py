"""train-ltv: 12-month customer value from an order log, plus the transactional churn label.

Features are point-in-time: everything is computed from orders strictly before the cut-off date
(RFM, tenure, 90-day trend, and the BG/NBD + Gamma-Gamma expectations fitted on those same orders);
the target is the revenue in the horizon after it. Customers are split 80/10/10, so the models learn
from other customers' future, never from the evaluated customers' own. Two model families compete
on validation by mean Tweedie deviance: a hurdle GLM (logistic P(buy) × Gamma GLM on the amount, the
seed's choice) and LightGBM with a Tweedie objective. An 80 % interval per customer comes from the
validation distribution of actual/predicted ratios within deciles of the prediction.

Serving a value: ``LtvModel.customer_values`` is the one function from a customer to its 12-month
value, its interval and its source, called by the customer book the policy trains on, by the
served LTV predictor and by the batch path. The model values a customer from its order facts
(``LtvModel.order_facts``: recency, frequency, monetary value, ...; the BG/NBD and Gamma-Gamma
expectations come from the fit saved with the model); a customer without them (every customer of
the book: the tables share no key) is valued by the ``BookMapping`` saved beside the model, the
rank of ``decision.env.value_column`` matched to the model's values of the order log. The
interval is the outcome's 80 % range, so for the many customers likely to buy nothing it can lie
below the expected value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from sklearn.linear_model import GammaRegressor, LogisticRegression
from sklearn.metrics import mean_tweedie_deviance, roc_auc_score
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from retention.config import Profile
from retention.data.split import read_split
from retention.fileio import atomic_dir, write_json
from retention.models.clv_baseline import BetaGeoNBD, GammaGamma
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.models.preprocess import parse_number
from retention.results import LtvResult

DAY = pd.Timedelta(days=1)


def rfm_features(orders: pd.DataFrame, cutoff: pd.Timestamp, cid: str, date: str, amount: str):
    """One row per customer seen before ``cutoff``, from orders strictly before it."""
    past = orders[orders[date] < cutoff]
    daily = past.groupby([cid, date], as_index=False)[amount].sum()
    g = daily.groupby(cid)
    first, last = g[date].min(), g[date].max()
    n_days = g.size()
    total = g[amount].sum()
    first_amt = daily.sort_values(date).groupby(cid)[amount].first()
    freq = n_days - 1
    f = pd.DataFrame(
        {
            "frequency": freq,
            "recency_weeks": (last - first) / DAY / 7,
            "T_weeks": (cutoff - first) / DAY / 7,
            "days_since_last": (cutoff - last) / DAY,
            "total_spend": total,
            "mean_spend": total / n_days,
            "repeat_mean_spend": np.where(freq > 0, (total - first_amt) / freq.clip(lower=1), 0.0),
            "max_spend": g[amount].max(),
        }
    )
    for lo, hi, name in ((0, 90, "last90"), (90, 180, "prev90")):
        w = daily[(daily[date] >= cutoff - hi * DAY) & (daily[date] < cutoff - lo * DAY)]
        f[f"spend_{name}"] = w.groupby(cid)[amount].sum().reindex(f.index).fillna(0.0)
        f[f"orders_{name}"] = w.groupby(cid).size().reindex(f.index).fillna(0).astype(float)
    return _add_trend(f)


@dataclass(frozen=True)
class ProbabilisticFit:
    """BG/NBD and Gamma-Gamma fitted on one set of RFM features, and the repeat-spend mean that
    stands in for customers without repeat purchases."""

    bg: BetaGeoNBD
    gg: GammaGamma
    mean_repeat: float

    @classmethod
    def fit(cls, f: pd.DataFrame) -> ProbabilisticFit:
        repeat = f.loc[f["frequency"] > 0, "repeat_mean_spend"]
        return cls(
            BetaGeoNBD().fit(f["frequency"], f["recency_weeks"], f["T_weeks"]),
            GammaGamma().fit(f["frequency"], f["repeat_mean_spend"]),
            float(repeat.mean()) if len(repeat) else 0.0,
        )

    def features(self, f: pd.DataFrame, horizon_weeks: float) -> pd.DataFrame:
        """``f`` with the expected purchases, spend and value over ``horizon_weeks`` added."""
        f = f.copy()
        f["bgnbd_purchases"] = self.bg.expected_purchases(
            horizon_weeks, f["frequency"], f["recency_weeks"], f["T_weeks"]
        )
        f["gg_spend"] = self.gg.expected_value(
            f["frequency"], f["repeat_mean_spend"], self.mean_repeat
        )
        f["bgnbd_value"] = f["bgnbd_purchases"] * f["gg_spend"]
        return f

    def to_dict(self) -> dict[str, Any]:
        bg, gg = self.bg, self.gg
        return {
            "bgnbd": {"r": bg.r, "alpha": bg.alpha, "a": bg.a, "b": bg.b},
            "gamma_gamma": {"p": gg.p, "q": gg.q, "v": gg.v},
            "mean_repeat": self.mean_repeat,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbabilisticFit:
        return cls(
            BetaGeoNBD(**{k: float(v) for k, v in d["bgnbd"].items()}),
            GammaGamma(**{k: float(v) for k, v in d["gamma_gamma"].items()}),
            float(d["mean_repeat"]),
        )


def add_probabilistic_features(f: pd.DataFrame, horizon_weeks: float) -> pd.DataFrame:
    """BG/NBD expected purchases and Gamma-Gamma spend, fitted on the same past-only features."""
    return ProbabilisticFit.fit(f).features(f, horizon_weeks)


def future_value(orders, cutoff, horizon_days: int, cid: str, date: str, amount: str) -> pd.Series:
    window = orders[(orders[date] >= cutoff) & (orders[date] < cutoff + horizon_days * DAY)]
    return window.groupby(cid)[amount].sum()


def top_share(pred: np.ndarray, actual: np.ndarray, share: float = 0.1) -> float:
    """Share of actual revenue captured by the predicted top ``share`` of customers."""
    k = max(1, int(round(len(pred) * share)))
    top = np.argsort(-pred, kind="stable")[:k]
    return float(actual[top].sum() / max(actual.sum(), 1e-12))


class HurdleGLM:
    """P(any purchase) by logistic regression × E[value | purchase] by a Gamma GLM (log link)."""

    def fit(self, X: np.ndarray, y: np.ndarray) -> HurdleGLM:
        self.scaler = StandardScaler().fit(np.log1p(np.clip(X, 0, None)))
        Z = self.scaler.transform(np.log1p(np.clip(X, 0, None)))
        self.clf = LogisticRegression(C=1.0, max_iter=2000).fit(Z, y > 0)
        self.gamma = GammaRegressor(alpha=1e-3, max_iter=2000).fit(Z[y > 0], y[y > 0])
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        Z = self.scaler.transform(np.log1p(np.clip(X, 0, None)))
        return self.clf.predict_proba(Z)[:, 1] * self.gamma.predict(Z)

    def to_dict(self, features: list[str]) -> dict[str, Any]:
        return {
            "kind": "hurdle_glm",
            "features": features,
            "scaler_mean": self.scaler.mean_.tolist(),
            "scaler_scale": self.scaler.scale_.tolist(),
            "logit_coef": self.clf.coef_[0].tolist(),
            "logit_intercept": float(self.clf.intercept_[0]),
            "gamma_coef": self.gamma.coef_.tolist(),
            "gamma_intercept": float(self.gamma.intercept_),
        }


def _fit_gbm(Xtr, ytr, Xva, yva, profile: Profile):
    import lightgbm as lgb

    cfg = profile.ltv
    model = lgb.LGBMRegressor(
        objective="tweedie",
        tweedie_variance_power=cfg.tweedie_power,
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
        subsample=0.8,
        subsample_freq=1,
        random_state=profile.seed,
        n_jobs=cfg.n_jobs,
        verbose=-1,
    )
    model.fit(
        Xtr, ytr, eval_X=(Xva,), eval_y=(yva,),
        callbacks=[lgb.early_stopping(cfg.early_stopping_rounds, verbose=False)],
    )  # fmt: skip
    return model


def interval_ratios(pred: np.ndarray, actual: np.ndarray, bins: int = 10) -> dict[str, list]:
    edges = np.unique(np.quantile(pred, np.linspace(0, 1, bins + 1)[1:-1]))
    idx = np.searchsorted(edges, pred)
    lo, hi = [], []
    for b in range(len(edges) + 1):
        r = actual[idx == b] / np.maximum(pred[idx == b], 1e-9)
        lo.append(float(np.quantile(r, 0.1)) if len(r) else 0.0)
        hi.append(float(np.quantile(r, 0.9)) if len(r) else 1.0)
    return {"edges": edges.tolist(), "low": lo, "high": hi}


def apply_interval(pred: np.ndarray, ratios: dict[str, list]) -> tuple[np.ndarray, np.ndarray]:
    idx = np.searchsorted(np.asarray(ratios["edges"]), pred)
    return pred * np.asarray(ratios["low"])[idx], pred * np.asarray(ratios["high"])[idx]


def build_dataset(orders, cutoff, horizon_days, cid, date, amount):
    f = rfm_features(orders, cutoff, cid, date, amount)
    f = add_probabilistic_features(f, horizon_days / 7)
    y = future_value(orders, cutoff, horizon_days, cid, date, amount).reindex(f.index).fillna(0.0)
    return f, y.to_numpy()


@dataclass
class Selection:
    """Both model families fitted on ``fit`` rows; the better by Tweedie deviance on ``stop`` rows."""

    best: str
    deviance: dict[str, float]
    glm: HurdleGLM
    gbm: Any

    def predict(self, rows: pd.DataFrame) -> np.ndarray:
        if self.best == "hurdle_glm":
            return self.glm.predict(rows.to_numpy(float))
        return self.gbm.predict(rows)


def fit_and_select(f, y, fit: np.ndarray, stop: np.ndarray, profile: Profile) -> Selection:
    glm = HurdleGLM().fit(f.iloc[fit].to_numpy(float), y[fit])
    gbm = _fit_gbm(f.iloc[fit], y[fit], f.iloc[stop], y[stop], profile)
    power = profile.ltv.tweedie_power
    preds = {
        "hurdle_glm": glm.predict(f.iloc[stop].to_numpy(float)),
        "lightgbm_tweedie": gbm.predict(f.iloc[stop]),
    }
    dev = {
        k: float(mean_tweedie_deviance(y[stop], np.maximum(p, 1e-6), power=power))
        for k, p in preds.items()
    }
    return Selection(min(dev, key=dev.get), dev, glm, gbm)


def _error(pred: np.ndarray, actual: np.ndarray) -> float:
    return float(pred.sum() / max(actual.sum(), 1e-9) - 1)


def fit_and_evaluate(f: pd.DataFrame, y: np.ndarray, profile: Profile) -> dict[str, Any]:
    """Customer split 80/10/10, both model families, selection on valid, metrics on test."""
    seed = profile.seed
    tr, rest = train_test_split(np.arange(len(f)), test_size=0.2, random_state=seed)
    va, te = train_test_split(rest, test_size=0.5, random_state=seed)
    sel = fit_and_select(f, y, tr, va, profile)
    ratios = interval_ratios(sel.predict(f.iloc[va]), y[va])
    p_te = sel.predict(f.iloc[te])
    lo, hi = apply_interval(p_te, ratios)
    base_te = f["bgnbd_value"].to_numpy()[te]
    return {
        "selection": sel,
        "ratios": ratios,
        "metrics": {
            "chosen": sel.best,
            "valid_tweedie_deviance": sel.deviance,
            "test_customers": int(len(te)),
            "test_revenue_error": _error(p_te, y[te]),
            "test_abs_revenue_error": abs(_error(p_te, y[te])),
            "test_top10_capture": top_share(p_te, y[te]),
            "test_top10_capture_best_possible": top_share(y[te], y[te]),
            "test_interval_coverage": float(np.mean((y[te] >= lo) & (y[te] <= hi))),
            "baseline_revenue_error": _error(base_te, y[te]),
            "baseline_top10_capture": top_share(base_te, y[te]),
        },
    }


def cross_fit_predict(f: pd.DataFrame, y: np.ndarray, profile: Profile, folds: int = 5):
    """Out-of-fold predictions for every customer (each from a model that never saw them).

    Aggregate error on a 10 % test split of a heavy-tailed revenue distribution moves by ~10 % with
    the draw alone; scoring every customer out-of-fold removes that sampling noise.
    """
    from sklearn.model_selection import KFold

    pred = np.empty(len(f))
    chosen = []
    for k, (tr, te) in enumerate(KFold(folds, shuffle=True, random_state=profile.seed).split(f)):
        fit, stop = train_test_split(tr, test_size=0.12, random_state=profile.seed + k)
        sel = fit_and_select(f, y, fit, stop, profile)
        chosen.append(sel.best)
        pred[te] = sel.predict(f.iloc[te])
    base = f["bgnbd_value"].to_numpy()
    return {
        "customers": int(len(f)),
        "chosen_per_fold": chosen,
        "revenue_error": _error(pred, y),
        "top10_capture": top_share(pred, y),
        "top10_capture_best_possible": top_share(y, y),
        "baseline_revenue_error": _error(base, y),
        "baseline_top10_capture": top_share(base, y),
    }


def churn_time_series_cv(
    orders, cid, date, amount, observe_days=180, churn_days=90, step_days=30, folds=3, seed=42
) -> dict[str, Any]:
    """Label: no purchase in the 90 days after a 180-day observation window (customers active in it).

    Rolling-origin CV: fold k tests on cut-off c_k and trains on earlier cut-offs whose label
    window closes before c_k, so no fold learns from its own future.
    """
    import lightgbm as lgb

    start, end = orders[date].min(), orders[date].max()
    first_cut = start + observe_days * DAY
    cuts = []
    c = end - churn_days * DAY
    while c >= first_cut and len(cuts) < folds + 3:
        cuts.append(c)
        c -= step_days * DAY
    cuts = sorted(cuts)
    frames = []
    for c in cuts:
        window = orders[(orders[date] >= c - observe_days * DAY)]
        f = rfm_features(window, c, cid, date, amount)
        f = f[f["days_since_last"] < observe_days]
        fut = future_value(orders, c, churn_days, cid, date, amount).reindex(f.index)
        f["churn"] = fut.isna().astype(int)
        f["cutoff"] = c
        frames.append(f)
    data = pd.concat(frames)
    feats = [x for x in data.columns if x not in ("churn", "cutoff")]
    aucs = []
    for c in cuts[-folds:]:
        train = data[data["cutoff"] + churn_days * DAY <= c]
        test = data[data["cutoff"] == c]
        if train.empty or test["churn"].nunique() < 2:
            continue
        m = lgb.LGBMClassifier(n_estimators=200, learning_rate=0.05, num_leaves=15,
                               random_state=seed, verbose=-1, n_jobs=2)  # fmt: skip
        m.fit(train[feats], train["churn"])
        aucs.append(float(roc_auc_score(test["churn"], m.predict_proba(test[feats])[:, 1])))
    return {
        "churn_cv_auc": float(np.mean(aucs)) if aucs else float("nan"),
        "churn_fold_auc": aucs,
        "churn_rate": float(data["churn"].mean()),
    }


def train_ltv(profile: Profile, split_dir: str | Path, out_dir: str | Path) -> LtvResult:
    spec, cfg = profile.data.orders, profile.ltv
    cid, date = spec.id_column or "customer_id", spec.time_column or "date"
    orders = read_split(split_dir, "orders", "all")
    cutoff = orders[date].max() + DAY - cfg.horizon_days * DAY
    f, y = build_dataset(orders, cutoff, cfg.horizon_days, cid, date, cfg.amount_column)
    fit = fit_and_evaluate(f, y, profile)
    churn = churn_time_series_cv(orders, cid, date, cfg.amount_column, seed=profile.seed)
    measured = dict(fit["metrics"])
    deviance = measured.pop("valid_tweedie_deviance")
    result = LtvResult(
        **measured,
        cutoff=str(cutoff.date()),
        churn_cv_auc=churn["churn_cv_auc"],
        churn_rate=churn["churn_rate"],
        details={"valid_tweedie_deviance": deviance, "churn_fold_auc": churn["churn_fold_auc"]},
    )
    sel: Selection = fit["selection"]
    # Serving values a customer as of today from facts like these, so the expectations the model
    # reads are fitted once on the whole log, as of the day after it ends, and kept.
    as_of = orders[date].max() + DAY
    prob = ProbabilisticFit.fit(rfm_features(orders, as_of, cid, date, cfg.amount_column))
    with atomic_dir(Path(out_dir) / MODEL_DIR) as tmp:
        if sel.best == "hurdle_glm":
            write_json(tmp / "glm.json", sel.glm.to_dict(list(f.columns)))
        else:
            sel.gbm.booster_.save_model(str(tmp / "lightgbm.txt"))
        write_json(tmp / META_FILE, {
            "model": sel.best, "features": list(f.columns), "interval": fit["ratios"],
            "horizon_days": cfg.horizon_days, "as_of": str(as_of.date()),
            "probabilistic": prob.to_dict(),
        })  # fmt: skip
        # The book mapping is made by the saved model itself, as serving will load it.
        book_values = LtvModel(tmp).score_orders(orders, cid, date, cfg.amount_column)
        customers = read_split(split_dir, "customers", "train")
        write_json(
            tmp / MAPPING_FILE,
            BookMapping.fit(
                profile.decision.env.value_column, customers, book_values.to_numpy()
            ).to_dict(),
        )
    result.save(Path(out_dir) / METRICS_FILE)
    return result


# -------------------------------------------------------------------------------------- value

META_FILE = "ltv.json"
MAPPING_FILE = "book_mapping.json"
# The features the model computes from the order facts a caller sends (trend) or from its own
# BG/NBD and Gamma-Gamma fit; every other feature is an order fact.
DERIVED = ("trend", "bgnbd_purchases", "gg_spend", "bgnbd_value")
# A 12-month value the caller already knows (``customer_facts.value``, or a batch column).
GIVEN = "value"
ValueSource = Literal["ltv", "book_mapping", "given", "book_mean"]
MAPPING_POINTS = 201


def _add_trend(f: pd.DataFrame) -> pd.DataFrame:
    f["trend"] = f["spend_last90"] - f["spend_prev90"]
    return f


Rows = pd.DataFrame | Sequence[Mapping[str, Any]]


def amount(v: Any) -> float:
    """One value as an amount: numbers as they are, text by serving's number grammar
    (``parse_number``); NaN for anything else (absent, null, a bool: a flag is no amount)."""
    if isinstance(v, (bool, np.bool_)):
        return math.nan
    if isinstance(v, (int, float, np.integer, np.floating)):
        return float(v)
    if isinstance(v, str):
        x = parse_number(v)
        return math.nan if x is None else x
    return math.nan


def numbers(rows: Rows, column: str) -> np.ndarray:
    """``column`` of every row (a frame, or request dicts) as floats, by :func:`amount`."""
    if not isinstance(rows, pd.DataFrame):
        return np.fromiter((amount(r.get(column)) for r in rows), dtype=float, count=len(rows))
    if column not in rows.columns:
        return np.full(len(rows), np.nan)
    s = rows[column]
    if pd.api.types.is_bool_dtype(s):
        return np.full(len(rows), np.nan)
    if pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=float, na_value=np.nan)
    return np.fromiter((amount(v) for v in s), dtype=float, count=len(s))


def _has_column(rows: Rows, column: str) -> bool:
    if isinstance(rows, pd.DataFrame):
        return column in rows.columns
    return any(column in r for r in rows)


def _check_amounts(column: str, x: np.ndarray) -> None:
    bad = np.flatnonzero(np.isinf(x) | (x < 0))
    if len(bad):
        raise ValueError(
            f"{column}: expected a finite number >= 0, got {x[bad[0]]!r} in row {int(bad[0])}"
            + (f" (and {len(bad) - 1} more rows)" if len(bad) > 1 else "")
        )


class CustomerValue(BaseModel):
    """One customer's 12-month value, its 80 % interval, and where it came from.

    ``ltv``: the LTV model on the customer's order facts. ``book_mapping``: the customer book's
    mapping (the rank of ``column`` matched to the LTV model's values of the order log), the one
    the policy was trained on. ``given``: the caller's own figure (no interval). ``book_mean``:
    the LTV predictor was unavailable, so the book's mean (no interval).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    value: float = Field(ge=0, allow_inf_nan=False)
    low: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    high: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    source: ValueSource
    missing_order_facts: list[str] = Field(
        default_factory=list,
        description="Order facts the LTV model needed and the customer lacked, when some were "
        "given (the book mapping was used instead).",
    )


@dataclass(frozen=True)
class CustomerValues:
    """Column form of :class:`CustomerValue` for many customers (the batch path)."""

    value: np.ndarray
    low: np.ndarray  # NaN where there is no interval
    high: np.ndarray
    source: np.ndarray  # object: ValueSource
    missing_order_facts: dict[int, list[str]]  # rows that gave some order facts, not all

    def __len__(self) -> int:
        return len(self.value)

    def answer(self, i: int) -> CustomerValue:
        def opt(x: float) -> float | None:
            return None if np.isnan(x) else float(x)

        return CustomerValue(
            value=float(self.value[i]),
            low=opt(self.low[i]),
            high=opt(self.high[i]),
            source=self.source[i],
            missing_order_facts=self.missing_order_facts.get(i, []),
        )


@dataclass(frozen=True)
class BookMapping:
    """How the customer book values a customer it has no order history for.

    The three source tables share no key, so the book couples customers to the LTV model's values
    of the order-log customers by rank: the customer at quantile q of ``column`` (the bigger bill)
    gets the value at quantile q of the log's values. Stored as the two quantile tables, fitted on
    the training customers, so the book and serving apply the same map to any customer. A
    customer without a usable ``column`` (or every customer, when ``column`` is None: the book
    then pairs at random) gets the book's mean, with the 10th-90th percentile of its values as the
    interval.
    """

    column: str | None
    keys: np.ndarray  # increasing
    values: np.ndarray  # the value at each key
    mean: float
    q10: float
    q90: float

    @classmethod
    def fit(
        cls,
        column: str | None,
        customers: pd.DataFrame,
        values: np.ndarray,
        points: int = MAPPING_POINTS,
    ) -> BookMapping:
        values = np.asarray(values, float)
        values = values[np.isfinite(values)]
        if len(values) == 0:
            raise ValueError("the order log scored no customers: cannot value the customer book")
        p = np.linspace(0.0, 1.0, points)
        value_q = np.quantile(values, p)
        keys, at = np.empty(0), np.empty(0)
        if column is not None:
            if column not in customers.columns:
                raise ValueError(
                    f"decision.env.value_column: {column!r} is not a column of the customers "
                    "table (set it to null to value every customer at the book's mean)"
                )
            k = numbers(customers, column)
            k = k[np.isfinite(k)]
            if len(k) == 0:
                raise ValueError(f"decision.env.value_column: no customer has a number in {column}")
            # Equal key quantiles (a step in the key's distribution) share one value: the mean of
            # the value quantiles they span, i.e. the value at their mid-rank.
            keys, inv = np.unique(np.quantile(k, p), return_inverse=True)
            at = np.bincount(inv, value_q) / np.bincount(inv)
        q10, q90 = np.quantile(values, [0.1, 0.9])
        return cls(column, keys, at, float(values.mean()), float(q10), float(q90))

    def apply(self, customers: Rows) -> tuple[np.ndarray, np.ndarray]:
        """(value, keyed): the mapped value per customer, and which had a usable key."""
        if self.column is None:
            return self.map_keys(np.full(len(customers), np.nan))
        return self.map_keys(numbers(customers, self.column))

    def map_keys(self, k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`apply` on the customers' ``column`` read already (NaN: no usable key)."""
        keyed = np.isfinite(k) if self.column is not None else np.zeros(len(k), dtype=bool)
        value = np.full(len(k), self.mean)
        if keyed.any():
            value[keyed] = np.interp(k[keyed], self.keys, self.values)
        return value, keyed

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "retention.book_mapping/v1",
            "column": self.column,
            "keys": self.keys.tolist(),
            "values": self.values.tolist(),
            "mean": self.mean,
            "q10": self.q10,
            "q90": self.q90,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BookMapping:
        if d.get("format") != "retention.book_mapping/v1":
            raise ValueError(f"{MAPPING_FILE}: unknown format {d.get('format')!r}")
        keys, values = np.asarray(d["keys"], float), np.asarray(d["values"], float)
        if d["column"] is not None and (len(keys) == 0 or len(keys) != len(values)):
            raise ValueError(f"{MAPPING_FILE}: keys and values differ in length or are empty")
        return cls(d["column"], keys, values, float(d["mean"]), float(d["q10"]), float(d["q90"]))


class LtvModel:
    """A trained 12-month value model loaded from ``model/`` (no training code needed)."""

    def __init__(self, path: str | Path):
        from retention.fileio import read_json

        path = Path(path)
        meta = read_json(path / META_FILE)
        self.kind: str = meta["model"]
        self.features: list[str] = meta["features"]
        self.horizon_days: int = int(meta["horizon_days"])
        self.interval = meta["interval"]
        if "probabilistic" not in meta:
            raise ValueError(f"{path / META_FILE}: no BG/NBD fit recorded; retrain the LTV model")
        self.probabilistic = ProbabilisticFit.from_dict(meta["probabilistic"])
        # What a caller sends to be valued by the model (recency, frequency, monetary value, ...).
        self.order_facts: tuple[str, ...] = tuple(c for c in self.features if c not in DERIVED)
        mapping = path / MAPPING_FILE
        self.book_mapping: BookMapping | None = (
            BookMapping.from_dict(read_json(mapping)) if mapping.is_file() else None
        )
        if self.kind == "hurdle_glm":
            self._glm = read_json(path / "glm.json")
        else:
            import lightgbm as lgb

            self._gbm = lgb.Booster(model_file=str(path / "lightgbm.txt"))

    def predict(self, f: pd.DataFrame) -> np.ndarray:
        missing = [c for c in self.features if c not in f.columns]
        if missing:
            raise KeyError(f"LTV features missing: {missing}")
        X = f[self.features].to_numpy(float)
        if self.kind != "hurdle_glm":
            return np.clip(self._gbm.predict(X), 0.0, None)
        g = self._glm
        Z = (np.log1p(np.clip(X, 0, None)) - np.asarray(g["scaler_mean"])) / np.asarray(
            g["scaler_scale"]
        )
        p_buy = 1.0 / (1.0 + np.exp(-(Z @ np.asarray(g["logit_coef"]) + g["logit_intercept"])))
        return p_buy * np.exp(Z @ np.asarray(g["gamma_coef"]) + g["gamma_intercept"])

    def _from_facts(self, facts: pd.DataFrame) -> np.ndarray:
        """Values from order facts (one row per customer, every order fact a number)."""
        f = facts.copy()
        if "trend" in self.features:
            f = _add_trend(f)
        return self.predict(self.probabilistic.features(f, self.horizon_days / 7))

    def score_orders(self, orders: pd.DataFrame, cid: str, date: str, amount: str) -> pd.Series:
        """Value over the next horizon for every customer in the log, as of the day after it ends."""
        facts = rfm_features(orders, orders[date].max() + DAY, cid, date, amount)
        return pd.Series(self._from_facts(facts), index=facts.index, name="ltv")

    def customer_values(self, rows: Rows) -> CustomerValues:
        """Each customer's value: the one function the customer book, the served LTV model and
        the batch path all call, on a frame or on request dicts alike.

        A ``value`` the row gives is taken as it is; else the model on the row's order facts
        (:attr:`order_facts`) when it has all of them; else the book mapping. A given value or
        order fact that is infinite or negative is a ValueError naming the column and row.
        """
        n = len(rows)
        given = numbers(rows, GIVEN)
        _check_amounts(GIVEN, given)
        is_given = ~np.isnan(given)
        facts = np.full((n, len(self.order_facts)), np.nan)
        for j, c in enumerate(self.order_facts):
            if _has_column(rows, c):  # a request without order facts reads none of them
                facts[:, j] = numbers(rows, c)
                _check_amounts(c, facts[:, j])
        present = ~np.isnan(facts)
        full = present.all(axis=1) & ~is_given
        partial = present.any(axis=1) & ~full & ~is_given

        value, low, high = np.full(n, np.nan), np.full(n, np.nan), np.full(n, np.nan)
        source = np.full(n, "book_mapping", dtype=object)
        value[is_given], source[is_given] = given[is_given], "given"
        if full.any():
            v = self._from_facts(pd.DataFrame(facts[full], columns=list(self.order_facts)))
            value[full] = v
            low[full], high[full] = apply_interval(v, self.interval)
            source[full] = "ltv"
        rest = ~is_given & ~full
        if rest.any():
            if self.book_mapping is None:
                raise ValueError(
                    f"the LTV model has no {MAPPING_FILE} to value customers without order "
                    "facts; retrain it"
                )
            m = self.book_mapping
            key = numbers(rows, m.column) if m.column else np.full(n, np.nan)
            v, keyed = m.map_keys(key[rest])
            v_lo, v_hi = apply_interval(v, self.interval)
            value[rest] = v
            low[rest] = np.where(keyed, v_lo, m.q10)
            high[rest] = np.where(keyed, v_hi, m.q90)
        names = np.asarray(self.order_facts, dtype=object)
        missing = {int(i): names[~present[i]].tolist() for i in np.flatnonzero(partial)}
        return CustomerValues(value, low, high, source, missing)
