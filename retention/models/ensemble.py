"""The members of the binary trainer's ensemble and the blend that combines them.

Every member reads the matrix ``TabularPreprocessor.transform`` (or ``RowEncoder``) makes, so the
three serving paths (frame, request rows, Arrow batches) stay one preparation. Each member gives a
margin (log-odds) and per-feature contributions that sum to it:

* ``xgboost`` and ``lightgbm``: the library's own TreeSHAP (``pred_contribs`` / ``pred_contrib``);
* ``linear``: a ridge logistic regression on a design built from the same matrix (one-hot levels,
  a cubic B-spline basis on quantile knots per numeric feature, missing indicators), every design
  column standardised on train; a feature's contribution is the sum of its columns' ``beta * z``,
  exact, the bias the intercept (``z`` has mean 0 on train, as TreeSHAP's bias is the mean margin).

The blend is ``intercept + sum(w_k * margin_k)`` with ``w_k >= 0``: a logistic stacker on
out-of-fold margins. Non-negative weights keep a monotone constraint that every member holds
(the accept model's offer level), and make the blend's contributions the weighted sum of the
members', so they still sum to its margin. Everything saves as JSON or the libraries' own text
formats; serving unpickles nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from scipy.interpolate import BSpline
from scipy.optimize import minimize
from sklearn.preprocessing import SplineTransformer
from threadpoolctl import threadpool_limits

from retention.fileio import read_json, write_json
from retention.models.preprocess import TabularPreprocessor

KINDS = ("xgboost", "lightgbm", "linear")


def sigmoid(m: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(m, dtype=np.float64)))


class Member(Protocol):
    kind: str

    def margin(self, x: np.ndarray) -> np.ndarray: ...

    def contributions(self, x: np.ndarray) -> np.ndarray: ...

    def set_threads(self, n: int) -> None: ...

    def save(self, folder: Path, stem: str) -> dict[str, Any]: ...


# ------------------------------------------------------------------------------------- xgboost


@dataclass
class XGBoostMember:
    booster: Any  # xgboost.Booster
    feature_types: list[str]
    kind: str = "xgboost"

    def margin(self, x: np.ndarray) -> np.ndarray:
        return self.booster.inplace_predict(x, missing=np.nan, predict_type="margin").astype(
            np.float64
        )

    def margin_checked(self, x: np.ndarray) -> np.ndarray:
        """``margin`` through a DMatrix: XGBoost refuses infinite values there (the frame path)."""
        return self.booster.predict(
            self._dmatrix(x), output_margin=True, validate_features=False
        ).astype(np.float64)

    def _dmatrix(self, x: np.ndarray):
        import xgboost as xgb

        nthread = int(self.booster.attr("nthread") or -1)
        return xgb.DMatrix(
            x,
            feature_types=self.feature_types,
            enable_categorical=True,
            missing=np.nan,
            nthread=nthread,
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        dm = self._dmatrix(x)
        out = self.booster.predict(dm, pred_contribs=True, validate_features=False)
        return out.astype(np.float64)

    def set_threads(self, n: int) -> None:
        # A per-booster setting (XGBoost's context), not a process-wide one; kept as an attribute
        # too so the DMatrix for SHAP is built on as many threads.
        self.booster.set_param({"nthread": n})
        self.booster.set_attr(nthread=str(n or -1))

    def save(self, folder: Path, stem: str) -> dict[str, Any]:
        self.booster.save_model(str(folder / f"{stem}.json"))
        return {"kind": self.kind, "file": f"{stem}.json", "feature_types": self.feature_types}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> XGBoostMember:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(folder / meta["file"]))
        return cls(booster, list(meta["feature_types"]))


def fit_xgboost(
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
    pre: TabularPreprocessor,
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_stop: np.ndarray,
    y_stop: np.ndarray,
) -> XGBoostMember:
    import xgboost as xgb

    def dm(x, y):
        return xgb.DMatrix(
            x,
            label=y,
            feature_names=pre.features,
            feature_types=pre.feature_types,
            enable_categorical=True,
            missing=np.nan,
            # As many threads as the fit: an all-core DMatrix build spins against the other
            # work on a busy box (44 ms for 400 rows, measured).
            nthread=int(params.get("nthread", -1)),
        )

    booster = xgb.train(
        params,
        dm(x_fit, y_fit),
        num_boost_round=rounds,
        evals=[(dm(x_stop, y_stop), "valid")],
        early_stopping_rounds=early_stopping,
        verbose_eval=False,
    )
    member = XGBoostMember(booster[: booster.best_iteration + 1], pre.feature_types)
    member.set_threads(int(params.get("nthread", 0)))
    return member


# ------------------------------------------------------------------------------------ lightgbm


@dataclass
class LightGBMMember:
    booster: Any  # lightgbm.Booster
    threads: int = 0
    kind: str = "lightgbm"

    def margin(self, x: np.ndarray) -> np.ndarray:
        # float64 of the float32 matrix: the values it was trained on, to the bit.
        return self.booster.predict(
            np.asarray(x, np.float64), raw_score=True, num_threads=self.threads
        )

    def contributions(self, x: np.ndarray) -> np.ndarray:
        return self.booster.predict(
            np.asarray(x, np.float64), pred_contrib=True, num_threads=self.threads
        )

    def set_threads(self, n: int) -> None:
        self.threads = n

    def save(self, folder: Path, stem: str) -> dict[str, Any]:
        (folder / f"{stem}.txt").write_text(self.booster.model_to_string())
        return {"kind": self.kind, "file": f"{stem}.txt"}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> LightGBMMember:
        import lightgbm as lgb

        return cls(lgb.Booster(model_str=(folder / meta["file"]).read_text()))


def fit_lightgbm(
    params: dict[str, Any],
    rounds: int,
    early_stopping: int,
    pre: TabularPreprocessor,
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_stop: np.ndarray,
    y_stop: np.ndarray,
) -> LightGBMMember:
    import lightgbm as lgb

    cats = [j for j, t in enumerate(pre.feature_types) if t == "c"]

    def ds(x, y, ref=None):
        return lgb.Dataset(
            np.asarray(x, np.float64),
            label=y,
            feature_name=pre.features,
            categorical_feature=cats,
            reference=ref,
            free_raw_data=True,
        )

    fit = ds(x_fit, y_fit)
    booster = lgb.train(
        params,
        fit,
        num_boost_round=rounds,
        valid_sets=[ds(x_stop, y_stop, fit)],
        callbacks=[lgb.early_stopping(early_stopping, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    # Keep only the trees up to the best iteration, so saving and SHAP see the same model.
    return LightGBMMember(lgb.Booster(model_str=booster.model_to_string(num_iteration=best)))


# -------------------------------------------------------------------------------------- linear


@dataclass
class _Numeric:
    index: int  # column of the prepared matrix
    low: float
    high: float
    median: float
    indicator: bool  # a missing-indicator column follows
    knots: list[float] = field(default_factory=list)  # B-spline knot vector (empty: linear only)
    degree: int = 3


@dataclass
class LinearMember:
    """Ridge logistic regression on one-hot levels and B-splines of the prepared matrix."""

    numeric: list[_Numeric]
    categorical: list[tuple[int, list[int]]]  # (column, level codes with a one-hot column)
    n_features: int
    mean: np.ndarray
    scale: np.ndarray
    owner: np.ndarray  # design column -> feature index
    coef: np.ndarray
    intercept: float
    kind: str = "linear"
    _splines: dict[int, BSpline] = field(default_factory=dict, repr=False)

    def _spline(self, num: _Numeric) -> BSpline:
        if num.index not in self._splines:
            t = np.asarray(num.knots)
            n_basis = len(t) - num.degree - 1
            self._splines[num.index] = BSpline(t, np.eye(n_basis), num.degree, extrapolate=True)
        return self._splines[num.index]

    def raw_design(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float64)
        cols: list[np.ndarray] = []
        for num in self.numeric:
            v = x[:, num.index]
            miss = np.isnan(v)
            # Clipped to the training range: no customer is extrapolated beyond what was seen.
            v = np.clip(np.where(miss, num.median, v), num.low, num.high)
            cols.append(v[:, None])
            if num.knots:
                cols.append(self._spline(num)(v))
            if num.indicator:
                cols.append(miss[:, None].astype(np.float64))
        for j, codes in self.categorical:
            v = x[:, j]
            cols.append((v[:, None] == np.asarray(codes, np.float64)[None, :]).astype(np.float64))
        return np.hstack(cols) if cols else np.empty((len(x), 0))

    def design(self, x: np.ndarray) -> np.ndarray:
        return (self.raw_design(x) - self.mean) / self.scale

    def margin(self, x: np.ndarray) -> np.ndarray:
        # A row-wise sum, not a BLAS product: a row's margin must not depend on the rows it is
        # scored with (BLAS kernels change with the batch size, and the last bit with them).
        return (self.design(x) * self.coef).sum(axis=1) + self.intercept

    def contributions(self, x: np.ndarray) -> np.ndarray:
        parts = self.design(x) * self.coef
        out = np.zeros((len(parts), self.n_features + 1))
        np.add.at(out.T, self.owner, parts.T)
        out[:, -1] = self.intercept
        return out

    def set_threads(self, n: int) -> None:
        """One matrix product per call: nothing to set."""

    def save(self, folder: Path, stem: str) -> dict[str, Any]:
        write_json(
            folder / f"{stem}.json",
            {
                "numeric": [n.__dict__ for n in self.numeric],
                "categorical": [[j, codes] for j, codes in self.categorical],
                "n_features": self.n_features,
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(),
                "owner": self.owner.tolist(),
                "coef": self.coef.tolist(),
                "intercept": self.intercept,
            },
        )
        return {"kind": self.kind, "file": f"{stem}.json"}

    @classmethod
    def load(cls, folder: Path, meta: dict[str, Any]) -> LinearMember:
        d = read_json(folder / meta["file"])
        return cls(
            numeric=[_Numeric(**n) for n in d["numeric"]],
            categorical=[(int(j), [int(c) for c in codes]) for j, codes in d["categorical"]],
            n_features=int(d["n_features"]),
            mean=np.asarray(d["mean"], np.float64),
            scale=np.asarray(d["scale"], np.float64),
            owner=np.asarray(d["owner"], np.int64),
            coef=np.asarray(d["coef"], np.float64),
            intercept=float(d["intercept"]),
        )


def linear_layout(
    pre: TabularPreprocessor,
    x: np.ndarray,
    monotone: dict[str, int],
    n_knots: int = 10,
    max_levels: int = 50,
) -> tuple[LinearMember, np.ndarray, list[tuple[float, float]]]:
    """The design learned from the training matrix: the member without coefficients, its
    standardised design of ``x`` and the bounds per design column (sign constraints)."""
    x = np.asarray(x, np.float64)
    numeric: list[_Numeric] = []
    owner: list[int] = []
    signs: list[int] = []
    for j, name in enumerate(pre.numeric):
        v = x[:, j]
        seen = v[~np.isnan(v)]
        if len(seen) == 0:
            continue
        num = _Numeric(
            j, float(seen.min()), float(seen.max()), float(np.median(seen)), bool(np.isnan(v).any())
        )
        # A monotone feature enters as its value alone, with a sign-bounded coefficient: a
        # spline basis could bend it the wrong way.
        if name not in monotone and len(np.unique(seen)) > 4:
            base = np.unique(np.quantile(seen, np.linspace(0, 1, n_knots)))
            if len(base) >= 3:
                st = SplineTransformer(knots=base.reshape(-1, 1), degree=3).fit(seen[:, None])
                num.knots = st.bsplines_[0].t.tolist()
        numeric.append(num)
        n_cols = 1 + (len(num.knots) - num.degree - 1 if num.knots else 0) + int(num.indicator)
        owner += [j] * n_cols
        signs += [monotone.get(name, 0)] + [0] * (n_cols - 1)
    categorical = []
    offset = len(pre.numeric)
    bent = sorted(set(monotone) & set(pre.categorical))
    if bent:
        raise ValueError(f"monotone constraint on categorical feature(s) {bent}: needs a number")
    for k, levels in enumerate(pre.categorical.values()):
        j = offset + k
        counts = np.bincount(x[:, j][~np.isnan(x[:, j])].astype(np.int64), minlength=len(levels))
        # The ``max_levels`` most frequent levels seen in train get a column each; a rarer tail
        # reads as "no level" (all zeros), as missing and unseen levels do.
        order = np.argsort(-counts, kind="stable")[:max_levels]
        codes = sorted(int(c) for c in order if counts[c] > 0)
        if codes:
            categorical.append((j, codes))
            owner += [j] * len(codes)
            signs += [0] * len(codes)
    n = len(pre.features)
    empty = np.empty(0)
    member = LinearMember(
        numeric, categorical, n, empty, empty, np.asarray(owner, np.int64), empty, 0.0
    )
    raw = member.raw_design(x)
    member.mean = raw.mean(axis=0)
    scale = raw.std(axis=0)
    member.scale = np.where(scale > 1e-12, scale, 1.0)
    z = (raw - member.mean) / member.scale
    bounds = [(0.0, None) if s > 0 else (None, 0.0) if s < 0 else (None, None) for s in signs]
    return member, z, bounds


def fit_logistic(
    z: np.ndarray,
    y: np.ndarray,
    alpha: float,
    bounds: list[tuple[float | None, float | None]],
    start: np.ndarray | None = None,
    penalise: np.ndarray | None = None,
) -> np.ndarray:
    """Mean log-loss + alpha/2 * |beta|^2 by L-BFGS-B (bounded coefficients, free intercept).

    Returns ``[beta..., intercept]``."""
    n, d = z.shape
    y = np.asarray(y, np.float64)
    pen = np.ones(d) if penalise is None else penalise

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        m = z @ theta[:d] + theta[d]
        # log(1 + e^m) - y m, stable for large |m|
        ll = np.logaddexp(0.0, m) - y * m
        r = (sigmoid(m) - y) / n
        grad = np.append(z.T @ r + alpha * pen * theta[:d], r.sum())
        return float(ll.mean() + 0.5 * alpha * np.dot(pen * theta[:d], theta[:d])), grad

    if start is None:
        rate = np.clip(y.mean(), 1e-6, 1 - 1e-6)
        start = np.append(np.zeros(d), np.log(rate / (1 - rate)))
    # One BLAS thread: the products are small, and two OpenBLAS threads spinning against other
    # work on a 2-core box made each fit ~20x slower (measured).
    with threadpool_limits(1, user_api="blas"):
        res = minimize(
            loss,
            start,
            jac=True,
            method="L-BFGS-B",
            bounds=[*bounds, (None, None)],
            options={"maxiter": 500},
        )
    return res.x


def fit_linear(
    template: LinearMember, z: np.ndarray, y: np.ndarray, alpha: float, bounds, start=None
) -> LinearMember:
    theta = fit_logistic(z, y, alpha, bounds, start)
    return LinearMember(
        template.numeric,
        template.categorical,
        template.n_features,
        template.mean,
        template.scale,
        template.owner,
        theta[:-1],
        float(theta[-1]),
    )


# --------------------------------------------------------------------------------------- blend


@dataclass
class Blend:
    """``intercept + sum(weights * member margins)``, weights >= 0."""

    weights: list[float]
    intercept: float

    def __call__(self, margins: np.ndarray) -> np.ndarray:
        return (margins * np.asarray(self.weights)).sum(axis=1) + self.intercept


def fit_blend(margins: np.ndarray, y: np.ndarray) -> Blend:
    """A logistic stacker with non-negative weights on (out-of-fold) member margins."""
    k = margins.shape[1]
    theta = fit_logistic(margins, y, 0.0, [(0.0, None)] * k, start=np.append(np.full(k, 1 / k), 0))
    return Blend([float(w) for w in theta[:-1]], float(theta[-1]))


def cross_fitted_margin(
    margins: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """The stacker fitted on the other folds' rows, applied to each fold's own rows."""
    out = np.empty(len(y))
    for tr, te in folds:
        out[te] = fit_blend(margins[tr], y[tr])(margins[te])
    return out


def cross_fitted_log_loss(
    margins: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]]
) -> float:
    """The log-loss of the stacker fitted on the other folds' rows, on each fold's own rows."""
    p = np.clip(sigmoid(cross_fitted_margin(margins, y, folds)), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


LOADERS = {"xgboost": XGBoostMember, "lightgbm": LightGBMMember, "linear": LinearMember}


def load_member(folder: Path, meta: dict[str, Any]) -> Member:
    try:
        cls = LOADERS[meta["kind"]]
    except KeyError:
        raise ValueError(f"{folder}: unknown ensemble member kind {meta.get('kind')!r}") from None
    return cls.load(folder, meta)
