"""Uplift (treatment-effect) models and their Qini evaluation, for a randomised campaign table.

Qini curve (Radcliffe 2007), as scikit-uplift's ``qini_curve``: sort rows by score, highest first,
and at every cut-off ``k`` (one point per distinct score, so tied rows enter or leave together)

    Q(k) = R_t(k) - R_c(k) * N_t(k) / N_c(k)          (Q(k) = R_t(k) when N_c(k) = 0)

with ``R_t, R_c`` the responders and ``N_t, N_c`` the rows among the top ``k`` in the treated and
control arms: the incremental responders gained by treating the top ``k``. The curve starts at
(0, 0) and ends at (n, Q(n)) whatever the score, so every ranking shares the random line from
(0, 0) to (n, Q(n)).

Normalised Qini AUC, as scikit-uplift's ``qini_auc_score`` with ``negative_effect=True``:

    (area(model curve) - area(random line)) / (area(perfect curve) - area(random line))

areas by the trapezoidal rule over the curve points. The perfect curve is the Qini curve of the
oracle score ``y * treated - y * (1 - treated)``: treated responders first, control responders
last, everyone else in between. It is 1.0 for that oracle, about 0 for a random score, and
negative for a score worse than random. Because the oracle also exploits outcome noise, real
models score far below 1 (two-model logistic regression on Hillstrom: about 0.09).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd

from retention.fileio import atomic_dir, read_json, write_json

ARMS = ("treated", "control")
META_FILE = "uplift.json"


@dataclass(frozen=True)
class QiniCurve:
    """Points of a Qini curve: ``rows[i]`` top-ranked rows gain ``gain[i]`` incremental responders."""

    rows: np.ndarray
    gain: np.ndarray

    def area(self) -> float:
        return float(np.trapezoid(self.gain, self.rows))

    def random_area(self) -> float:
        return float(self.rows[-1] * self.gain[-1] / 2.0)


def _binary(name: str, values) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {arr.shape}")
    if arr.dtype == bool:
        return arr.astype(np.int64)
    if not np.issubdtype(arr.dtype, np.number):
        raise ValueError(f"{name} must be numeric 0/1, got dtype {arr.dtype}")
    bad = ~np.isin(arr, (0, 1))
    if bad.any():
        raise ValueError(f"{name} must be 0/1; first bad value {arr[bad][0]!r}")
    return arr.astype(np.int64)


def _checked(y, treated, score) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y_arr, t_arr = _binary("y", y), _binary("treated", treated)
    s_arr = np.asarray(score, dtype=np.float64)
    if not (len(y_arr) == len(t_arr) == len(s_arr)):
        raise ValueError(
            f"y, treated and score differ in length: {len(y_arr)}, {len(t_arr)}, {len(s_arr)}"
        )
    if not np.isfinite(s_arr).all():
        raise ValueError("score contains NaN or infinite values")
    if t_arr.sum() == 0 or t_arr.sum() == len(t_arr):
        raise ValueError("both a treated and a control row are required for a Qini curve")
    return y_arr, t_arr, s_arr


def qini_curve(y, treated, score) -> QiniCurve:
    """The Qini curve of ``score`` (see the module docstring); one point per distinct score."""
    y_arr, t_arr, s_arr = _checked(y, treated, score)
    order = np.argsort(-s_arr, kind="mergesort")
    y_arr, t_arr, s_arr = y_arr[order], t_arr[order], s_arr[order]
    # The last row of each run of equal scores: a cut-off never splits tied rows.
    cut = np.r_[np.flatnonzero(np.diff(s_arr)), len(s_arr) - 1]
    n_t = np.cumsum(t_arr)[cut]
    r_t = np.cumsum(y_arr * t_arr)[cut]
    r_c = np.cumsum(y_arr * (1 - t_arr))[cut]
    rows = cut + 1
    n_c = rows - n_t
    ratio = np.divide(n_t, n_c, out=np.zeros(len(cut)), where=n_c > 0)
    gain = r_t - r_c * ratio
    return QiniCurve(rows=np.r_[0, rows].astype(np.float64), gain=np.r_[0.0, gain])


def perfect_qini_curve(y, treated) -> QiniCurve:
    """The Qini curve of the oracle score ``y * treated - y * (1 - treated)``."""
    y_arr, t_arr = _binary("y", y), _binary("treated", treated)
    return qini_curve(y_arr, t_arr, y_arr * t_arr - y_arr * (1 - t_arr))


def qini_coefficient(y, treated, score) -> float:
    """Normalised Qini AUC of ``score`` (see the module docstring); 1.0 is the oracle."""
    model = qini_curve(y, treated, score)
    perfect = perfect_qini_curve(y, treated)
    baseline = model.random_area()
    denom = perfect.area() - baseline
    if denom <= 0:
        raise ValueError(
            "the perfect Qini curve does not rise above the random line (no responders?): "
            "the normalised Qini is undefined"
        )
    return (model.area() - baseline) / denom


@dataclass(frozen=True)
class UpliftParams:
    """LightGBM settings shared by both arms' classifiers."""

    n_estimators: int = 400
    learning_rate: float = 0.03
    num_leaves: int = 15
    min_child_samples: int = 100
    feature_fraction: float = 0.9
    lambda_l2: float = 1.0
    # Held out of each arm to pick its number of trees; 0 trains all n_estimators.
    valid_fraction: float = 0.2
    early_stopping_rounds: int = 30
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.n_estimators < 1:
            raise ValueError(f"n_estimators must be >= 1, got {self.n_estimators}")
        if not 0.0 <= self.valid_fraction < 0.5:
            raise ValueError(f"valid_fraction must be in [0, 0.5), got {self.valid_fraction}")


class TwoModelUplift:
    """Two-model (T-learner) uplift: one LightGBM classifier per arm, uplift = p_treated - p_control.

    Object and category columns become pandas categories with the categories seen in training, so
    a category unseen at fit time is treated as missing at predict time.
    """

    def __init__(self, params: UpliftParams | None = None, seed: int = 0) -> None:
        self.params = params or UpliftParams()
        self.seed = seed
        self.features: list[str] = []
        self.categories: dict[str, list[str]] = {}
        self.boosters: dict[str, lgb.Booster] = {}

    def _frame(self, X: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.features if c not in X.columns]
        if missing:
            raise ValueError(f"feature columns missing: {missing}")
        out = X[self.features].copy()
        for col, cats in self.categories.items():
            out[col] = pd.Categorical(out[col].astype("string"), categories=cats)
        for col in self.features:
            if col not in self.categories and not pd.api.types.is_numeric_dtype(out[col]):
                raise ValueError(f"feature {col!r} has non-numeric dtype {out[col].dtype}")
        return out

    def _lgb_params(self, arm_index: int) -> dict:
        p = self.params
        return {
            "objective": "binary",
            "learning_rate": p.learning_rate,
            "num_leaves": p.num_leaves,
            "min_child_samples": p.min_child_samples,
            "feature_fraction": p.feature_fraction,
            "lambda_l2": p.lambda_l2,
            "num_threads": p.num_threads,
            "seed": self.seed + arm_index,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }

    def fit(self, X: pd.DataFrame, y, treated) -> TwoModelUplift:
        y_arr, t_arr = _binary("y", y), _binary("treated", treated)
        if not (len(X) == len(y_arr) == len(t_arr)):
            raise ValueError(
                f"X, y and treated differ in length: {len(X)}, {len(y_arr)}, {len(t_arr)}"
            )
        self.features = list(X.columns)
        self.categories = {
            c: sorted(X[c].dropna().astype(str).unique().tolist())
            for c in self.features
            if not pd.api.types.is_numeric_dtype(X[c])
        }
        frame = self._frame(X)
        rng = np.random.default_rng(self.seed)
        self.boosters = {}
        for i, arm in enumerate(ARMS):
            mask = t_arr == (1 if arm == "treated" else 0)
            Xa, ya = frame[mask], y_arr[mask]
            if len(np.unique(ya)) < 2:
                raise ValueError(f"the {arm} arm needs both outcomes 0 and 1 to fit a classifier")
            self.boosters[arm] = self._fit_arm(Xa, ya, i, rng)
        return self

    def _fit_arm(self, Xa: pd.DataFrame, ya: np.ndarray, i: int, rng) -> lgb.Booster:
        p = self.params
        params = self._lgb_params(i)
        if p.valid_fraction == 0:
            return lgb.train(params, lgb.Dataset(Xa, ya), num_boost_round=p.n_estimators)
        # Stratified by outcome so a rare response still appears in the early-stopping rows.
        valid = np.zeros(len(ya), dtype=bool)
        for label in (0, 1):
            idx = np.flatnonzero(ya == label)
            take = max(1, int(round(len(idx) * p.valid_fraction)))
            valid[rng.choice(idx, size=take, replace=False)] = True
        train_set = lgb.Dataset(Xa[~valid], ya[~valid])
        valid_set = lgb.Dataset(Xa[valid], ya[valid], reference=train_set)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=p.n_estimators,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(p.early_stopping_rounds, verbose=False)],
        )
        # Refit on all the arm's rows at the chosen size: the held-out rows are too many to waste.
        rounds = max(1, booster.best_iteration or p.n_estimators)
        return lgb.train(params, lgb.Dataset(Xa, ya), num_boost_round=rounds)

    def _require_fitted(self) -> None:
        if not self.boosters:
            raise RuntimeError("TwoModelUplift is not fitted; call fit() or load() first")

    def predict_arms(self, X: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Response probabilities if treated and if not: (p_treated, p_control)."""
        self._require_fitted()
        frame = self._frame(X)
        return (
            self.boosters["treated"].predict(frame),
            self.boosters["control"].predict(frame),
        )

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """Estimated uplift p_treated - p_control per row."""
        p_t, p_c = self.predict_arms(X)
        return p_t - p_c

    def save(self, path: str | Path) -> None:
        self._require_fitted()
        with atomic_dir(path) as tmp:
            for arm, booster in self.boosters.items():
                booster.save_model(str(tmp / f"{arm}.txt"))
            write_json(
                tmp / META_FILE,
                {
                    "kind": "two_model",
                    "seed": self.seed,
                    "params": asdict(self.params),
                    "features": self.features,
                    "categories": self.categories,
                },
            )

    @classmethod
    def load(cls, path: str | Path) -> TwoModelUplift:
        path = Path(path)
        meta_path = path / META_FILE
        if not meta_path.exists():
            raise FileNotFoundError(f"no {META_FILE} in {path}: not a saved TwoModelUplift")
        meta = read_json(meta_path)
        if meta.get("kind") != "two_model":
            raise ValueError(f"{meta_path} holds kind {meta.get('kind')!r}, expected 'two_model'")
        model = cls(UpliftParams(**meta["params"]), seed=int(meta["seed"]))
        model.features = list(meta["features"])
        model.categories = {k: list(v) for k, v in meta["categories"].items()}
        model.boosters = {arm: lgb.Booster(model_file=str(path / f"{arm}.txt")) for arm in ARMS}
        return model


# ------------------------------------------------------------------------ the DAG's train-uplift

EFFECT_FILE = "effect.json"


def campaign_arms(df: pd.DataFrame, cfg, path: str = "campaign") -> tuple[pd.DataFrame, np.ndarray]:
    """The rows of the two compared arms, and 1 for treated / 0 for control; a ValueError names
    the missing column or an arm with no rows."""
    col = cfg.treatment_column
    missing = [c for c in [col, *cfg.features] if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing} for the uplift model")
    keep = df[col].isin([cfg.treated, cfg.control]).to_numpy()
    for arm in (cfg.treated, cfg.control):
        if not (df[col] == arm).any():
            raise ValueError(f"{path}: column {col!r} has no row with arm {arm!r}")
    rows = df[keep].reset_index(drop=True)
    return rows, (rows[col] == cfg.treated).to_numpy(dtype=int)


def effect_multiplier(tau: np.ndarray, mean_tau: float, cap: float) -> np.ndarray:
    """A customer's offer effect relative to the average customer's: estimated uplift over the
    average uplift, clipped to [0, cap] (no effect for lost causes and sleeping dogs)."""
    if mean_tau <= 0:
        raise ValueError(
            f"the campaign's average estimated uplift is {mean_tau:.4f}, not positive: "
            "the treatment does not work on average, so no offer effect can be scaled by it"
        )
    return np.clip(np.asarray(tau, float) / mean_tau, 0.0, cap)


def train_uplift(profile, split_dir: str | Path, out_dir: str | Path):
    """Two-model LightGBM uplift on the campaign's training rows; Qini on its held-out rows."""
    import time

    from retention.data.split import read_split
    from retention.models.outputs import METRICS_FILE, MODEL_DIR
    from retention.results import UpliftResult

    cfg, outcome = profile.uplift, profile.data.campaign.target
    if outcome is None:
        raise ValueError("data.campaign.target: the campaign table needs an outcome column")
    train, t_tr = campaign_arms(read_split(split_dir, "campaign", "train"), cfg, "campaign/train")
    held = pd.concat([read_split(split_dir, "campaign", p) for p in ("valid", "test")])
    held, t_te = campaign_arms(held, cfg, "campaign/valid+test")
    params = UpliftParams(
        n_estimators=cfg.n_estimators,
        learning_rate=cfg.learning_rate,
        num_leaves=cfg.num_leaves,
        min_child_samples=cfg.min_child_samples,
    )
    t0 = time.perf_counter()
    model = TwoModelUplift(params, seed=profile.seed).fit(
        train[cfg.features], train[outcome].to_numpy(), t_tr
    )
    fit_s = time.perf_counter() - t0
    tau_te = model.predict(held[cfg.features])
    y_te = held[outcome].to_numpy()
    tau_tr = model.predict(train[cfg.features])
    mean_tau = float(tau_tr.mean())
    m = effect_multiplier(tau_te, mean_tau, cfg.effect_cap) if mean_tau > 0 else np.zeros(1)
    result = UpliftResult(
        test_qini=qini_coefficient(y_te, t_te, tau_te),
        test_rows=len(held),
        train_rows=len(train),
        mean_uplift=mean_tau,
        observed_uplift=float(y_te[t_te == 1].mean() - y_te[t_te == 0].mean()),
        test_no_effect_share=float(np.mean(m == 0)),
        test_top_effect_share=float(np.mean(m >= cfg.effect_cap)),
        fit_s=fit_s,
        details={"params": asdict(params), "features": list(cfg.features)},
    )
    out = Path(out_dir)
    model.save(out / MODEL_DIR)
    write_json(out / MODEL_DIR / EFFECT_FILE, {"mean_uplift": mean_tau, "cap": cfg.effect_cap})
    result.save(out / METRICS_FILE)
    return result


def load_effects(model_dir: str | Path) -> tuple[TwoModelUplift, float, float]:
    """The saved uplift model, its training mean uplift and the effect cap."""
    model_dir = Path(model_dir)
    eff = read_json(model_dir / EFFECT_FILE)
    return TwoModelUplift.load(model_dir), float(eff["mean_uplift"]), float(eff["cap"])
