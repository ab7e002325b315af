"""A calibrated binary classifier for any table (used by risk and accept).

Training (``fit_model``): preprocessing fitted on train → optional seeded Optuna search of the
XGBoost member by CV on train → the candidates (``ensemble``: XGBoost, LightGBM, a ridge logistic
regression on one-hot and spline features; see ``retention.models.ensemble``) each scored by
out-of-fold margins on train → the best one or their non-negative logistic blend, by cross-fitted
log-loss on train → final members refitted on train (trees stop early on valid) → calibrator
chosen on valid → cost-based decision threshold. ``single`` is the XGBoost-only path.

Everything the model needs at prediction time is saved as JSON or the libraries' text formats
(levels, members, blend weights, calibrator knots), so serving never unpickles training code.
Per-row explanations are in margin units and sum to the model's margin: TreeSHAP for tree
members, exact linear contributions for the linear one, combined by the blend weights.

The reported CV AUC (``cross_validate``) runs the whole recipe, search and selection included,
inside each outer fold: no figure reuses the rows that chose it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split
from threadpoolctl import threadpool_limits

from retention.config import BinaryTrainerConfig
from retention.fileio import atomic_dir, read_json, write_json
from retention.models import ensemble as E
from retention.models import metrics as M
from retention.models.calibration import Calibrator, choose_calibrator
from retention.models.preprocess import TabularPreprocessor, display_value
from retention.progress import Progress
from retention.results import BinaryResult

log = logging.getLogger(__name__)

BOOSTER_FILE = "model.json"  # the one booster of a v1 (XGBoost-only) release
META_FILE = "preprocess.json"
FORMAT = "retention.binary/v2"
B = TypeVar("B", bound=BinaryResult)


@dataclass
class Columns:
    """Which columns of the table are not features."""

    target: str
    id_column: str | None = None
    exclude: list[str] = field(default_factory=list)

    @property
    def non_features(self) -> list[str]:
        return [self.target] + ([self.id_column] if self.id_column else []) + self.exclude


def _params(cfg: BinaryTrainerConfig, seed: int, pre: TabularPreprocessor, monotone: dict) -> dict:
    params = {
        "objective": "binary:logistic",
        "eval_metric": "logloss",
        "tree_method": "hist",
        "eta": cfg.learning_rate,
        "max_depth": cfg.max_depth,
        "min_child_weight": cfg.min_child_weight,
        "subsample": cfg.subsample,
        "colsample_bytree": cfg.colsample_bytree,
        "lambda": cfg.reg_lambda,
        "max_cat_to_onehot": 1,
        "nthread": cfg.n_jobs,
        "seed": seed,
    }
    if monotone:
        params["monotone_constraints"] = (
            "(" + ",".join(str(int(monotone.get(f, 0))) for f in pre.features) + ")"
        )
    return params


def sized(cfg: BinaryTrainerConfig, rows: int) -> BinaryTrainerConfig:
    """``cfg`` with the tree sizes left to the data filled in: deeper trees for more rows.

    Measured out-of-fold (5 folds, early stopping): XGBoost depth 2 instead of 4 on Telco's
    5.6k training rows +0.0021 AUC, depth 5 on Bank Marketing's 33k +0.0010; LightGBM 6 leaves
    instead of 15 on Telco +0.0012, 31 on Bank +0.0006."""
    update: dict[str, int] = {}
    if cfg.max_depth is None:
        update["max_depth"] = int(np.clip(round(np.log2(max(rows, 1) / 1000)), 2, 6))
    if cfg.lgb_num_leaves is None:
        update["lgb_num_leaves"] = int(np.clip(round(rows / 1000), 4, 31))
    return cfg.model_copy(update=update) if update else cfg


def _lgb_params(
    cfg: BinaryTrainerConfig, seed: int, pre: TabularPreprocessor, monotone: dict
) -> dict:
    params = {
        "objective": "binary",
        "metric": "binary_logloss",
        "learning_rate": cfg.learning_rate,
        "num_leaves": cfg.lgb_num_leaves,
        "min_child_samples": cfg.lgb_min_child_samples,
        "feature_fraction": cfg.colsample_bytree,
        "bagging_fraction": cfg.subsample,
        "bagging_freq": 1,
        "lambda_l2": cfg.reg_lambda,
        "cat_smooth": 10.0,
        "cat_l2": 10.0,
        "max_cat_to_onehot": 4,
        "num_threads": cfg.n_jobs,
        "seed": seed,
        "deterministic": True,
        "force_col_wise": True,
        "verbose": -1,
    }
    if monotone:
        params["monotone_constraints"] = [int(monotone.get(f, 0)) for f in pre.features]
    return params


def dmatrix_of(
    pre: TabularPreprocessor, x: np.ndarray, y: np.ndarray | None = None, nthread: int = -1
):
    """The DMatrix of rows already prepared by ``pre`` (training, SHAP of XGBoost members)."""
    import xgboost as xgb

    return xgb.DMatrix(
        x,
        label=y,
        feature_names=pre.features,
        feature_types=pre.feature_types,
        enable_categorical=True,
        missing=np.nan,
        nthread=nthread,
    )


@dataclass
class BinaryModel:
    """Members, their blend, the calibrator: ``calibrator(sigmoid(blend(member margins)))``."""

    members: list[E.Member]
    blend: E.Blend
    pre: TabularPreprocessor
    calibrator: Calibrator
    threshold: float
    columns: Columns
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def kinds(self) -> list[str]:
        return [m.kind for m in self.members]

    @property
    def booster(self):
        """The XGBoost booster of a one-member XGBoost model (the ``single`` recipe, a v1
        release); of a blend, a ``BlendBooster``: the same calls (``set_param`` of threads,
        ``predict`` of a DMatrix with or without ``pred_contribs``, ``inplace_predict``) answered
        by the whole blend, so code written against the one booster keeps working."""
        if self.kinds == ["xgboost"]:
            return self.members[0].booster
        return BlendBooster(self)

    @booster.setter
    def booster(self, booster) -> None:
        if self.kinds != ["xgboost"]:
            raise AttributeError(f"a blend of {self.kinds} has no single booster to replace")
        self.members[0].booster = booster

    def set_threads(self, n: int) -> None:
        """Threads each member predicts on (0: all cores)."""
        for m in self.members:
            m.set_threads(n)

    # -- prepared rows (RowEncoder, ColumnEncoder, pre.transform) --------------------------
    def margin_matrix(self, x: np.ndarray) -> np.ndarray:
        return self.blend(np.column_stack([m.margin(x) for m in self.members]))

    def proba_matrix(self, x: np.ndarray) -> np.ndarray:
        """``predict_proba`` of rows already prepared (``pre.transform`` or ``RowEncoder``)."""
        return self.calibrator(E.sigmoid(self.margin_matrix(x)))

    def contributions_matrix(self, x: np.ndarray) -> np.ndarray:
        """Per-feature contributions plus the bias column, in margin units; rows sum to
        ``margin_matrix``: each member's (TreeSHAP or exact linear) times its blend weight."""
        out = np.zeros((len(x), len(self.pre.features) + 1))
        for w, m in zip(self.blend.weights, self.members, strict=True):
            out += w * m.contributions(x)
        out[:, -1] += self.blend.intercept
        return out

    # -- frames ------------------------------------------------------------------------------
    def _margin_frame(self, df: pd.DataFrame) -> np.ndarray:
        x = self.pre.transform(df)
        # XGBoost members read a frame through a DMatrix, which refuses infinite values.
        cols = [
            m.margin_checked(x) if isinstance(m, E.XGBoostMember) else m.margin(x)
            for m in self.members
        ]
        return self.blend(np.column_stack(cols))

    def margin(self, df: pd.DataFrame) -> np.ndarray:
        return self._margin_frame(df)

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        return E.sigmoid(self._margin_frame(df))

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.calibrator(self.predict_raw(df))

    def contributions(self, df: pd.DataFrame) -> np.ndarray:
        """Contributions per feature plus the bias column; rows sum to ``margin``."""
        return self.contributions_matrix(self.pre.transform(df))

    def top_factors(self, df: pd.DataFrame, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k features pushing each row's risk up the most (positive contribution first),
        among the features the row gave a usable value for: a feature that is missing (not sent,
        null, an unseen level, text that is no number) moved the score only through a default
        (the trees' default branch, the linear member's median), which says nothing about this
        customer, so it is never shown as a factor."""
        x = self.pre.transform(df)
        contrib = self.contributions_matrix(x)[:, :-1]
        out = []
        for i, row in enumerate(contrib):
            out.append(
                [
                    {
                        "feature": self.pre.features[j],
                        "value": display_value(df.iloc[i][self.pre.features[j]]),
                        "shap": round(float(row[j]), 4),
                    }
                    for j in rank_factors(row, ~np.isnan(x[i]), k)
                ]
            )
        return out

    # -- files -------------------------------------------------------------------------------
    def save(self, out_dir: str | Path) -> None:
        with atomic_dir(out_dir) as tmp:
            # The first member keeps the name a one-booster release always had (model.json).
            members = [
                m.save(tmp, "model" if i == 0 else f"member-{i}")
                for i, m in enumerate(self.members)
            ]
            write_json(
                tmp / META_FILE,
                {
                    "format": FORMAT,
                    "preprocess": self.pre.to_dict(),
                    "members": members,
                    "blend": {"weights": self.blend.weights, "intercept": self.blend.intercept},
                    "calibrator": self.calibrator.to_dict(),
                    "threshold": self.threshold,
                    "columns": {
                        "target": self.columns.target,
                        "id_column": self.columns.id_column,
                        "exclude": self.columns.exclude,
                    },
                    "info": self.info,
                },
            )

    @classmethod
    def load(cls, path: str | Path) -> BinaryModel:
        path = Path(path)
        meta = read_json(path / META_FILE)
        pre = TabularPreprocessor.from_dict(meta["preprocess"])
        fmt = meta.get("format")
        if fmt == "retention.binary/v1":  # one XGBoost booster, as releases before the ensemble
            members = [
                E.XGBoostMember.load(
                    path, {"file": BOOSTER_FILE, "feature_types": pre.feature_types}
                )
            ]
            blend = E.Blend([1.0], 0.0)
        elif fmt == FORMAT:
            members = [E.load_member(path, m) for m in meta["members"]]
            blend = E.Blend(
                [float(w) for w in meta["blend"]["weights"]], float(meta["blend"]["intercept"])
            )
            if len(blend.weights) != len(members):
                raise ValueError(
                    f"{path / META_FILE}: {len(members)} members, {len(blend.weights)} weights"
                )
        else:
            raise ValueError(f"{path / META_FILE}: unknown model format {fmt!r}")
        return cls(
            members=members,
            blend=blend,
            pre=pre,
            calibrator=Calibrator.from_dict(meta["calibrator"]),
            threshold=float(meta["threshold"]),
            columns=Columns(**meta["columns"]),
            info=meta.get("info", {}),
        )


class BlendBooster:
    """A blended ``BinaryModel`` behind the calls made of an XGBoost booster: raw (uncalibrated)
    probabilities, margins and contributions of the blend. New code calls the model itself
    (``margin_matrix``, ``contributions_matrix``, ``set_threads``)."""

    def __init__(self, model: BinaryModel):
        self.model = model

    @property
    def feature_names(self) -> list[str]:
        return self.model.pre.features

    def set_param(self, params: dict[str, Any]) -> None:
        unknown = set(params) - {"nthread"}
        if unknown:
            raise KeyError(f"a blend takes only nthread, not {sorted(unknown)}")
        self.model.set_threads(int(params["nthread"]))

    def num_boosted_rounds(self) -> int:
        """Trees over the tree members (the linear member has none)."""
        n = 0
        for m in self.model.members:
            if isinstance(m, E.XGBoostMember):
                n += m.booster.num_boosted_rounds()
            elif isinstance(m, E.LightGBMMember):
                n += m.booster.current_iteration()
        return n

    @staticmethod
    def _dense(dm) -> np.ndarray:
        """The DMatrix's rows as the float32 matrix it was built from (absent entries NaN; the
        stored values, explicit zeros included, as they are)."""
        csr = dm.get_data()
        x = np.full((dm.num_row(), dm.num_col()), np.nan, dtype=np.float32)
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        x[rows, csr.indices] = csr.data
        return x

    def predict(
        self, dm, output_margin: bool = False, pred_contribs: bool = False, **_: Any
    ) -> np.ndarray:
        x = self._dense(dm)
        if pred_contribs:
            return self.model.contributions_matrix(x)
        m = self.model.margin_matrix(x)
        return m if output_margin else E.sigmoid(m)

    def inplace_predict(
        self, x: np.ndarray, missing: float = np.nan, predict_type: str = "value"
    ) -> np.ndarray:
        if not (isinstance(missing, float) and np.isnan(missing)):
            raise ValueError("a blend reads missing values as NaN only")
        m = self.model.margin_matrix(np.asarray(x, np.float32))
        return m if predict_type == "margin" else E.sigmoid(m)


def rank_factors(contrib: np.ndarray, usable: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest contributions among the ``usable`` features, largest first
    (ties in feature order)."""
    order = np.argsort(-contrib, kind="stable")
    return [int(j) for j in order if usable[j]][:k]


# ----------------------------------------------------------------------------------- the recipe


@dataclass
class Fitted:
    """One run of the recipe: the released model and every candidate on its own (for reports)."""

    model: BinaryModel
    calibration_scores: dict[str, float]
    chosen: str
    inner_log_loss: dict[str, float]
    solo: dict[str, BinaryModel]  # each candidate alone, with its own stacker and calibrator
    hyperparameters: dict[str, Any]


def _fold_list(y: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    k = max(2, min(k, int(np.bincount(y, minlength=2).min())))
    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))


class _Candidates:
    """Out-of-fold margins on train and final fits of each candidate kind."""

    def __init__(self, cfg, seed, pre, monotone, x_tr, y_tr, x_va, y_va):
        self.cfg, self.seed, self.pre, self.monotone = cfg, seed, pre, monotone
        self.x_tr, self.y_tr, self.x_va, self.y_va = x_tr, y_tr, x_va, y_va
        self.alpha: float | None = None

    def _trees(self, kind: str, x_fit, y_fit, x_stop, y_stop) -> E.Member:
        cfg = self.cfg
        if kind == "xgboost":
            params = _params(cfg, self.seed, self.pre, self.monotone)
            fit = E.fit_xgboost
        else:
            params = _lgb_params(cfg, self.seed, self.pre, self.monotone)
            fit = E.fit_lightgbm
        return fit(
            params,
            cfg.n_estimators,
            cfg.early_stopping_rounds,
            self.pre,
            x_fit,
            y_fit,
            x_stop,
            y_stop,
        )

    def oof(self, kind: str, folds) -> np.ndarray:
        x, y = self.x_tr, self.y_tr
        out = np.empty(len(y))
        if kind == "linear":
            self.layout, z, self.bounds = E.linear_layout(self.pre, x, self.monotone)
            best = None
            for alpha in self.cfg.linear_alphas:
                m = np.empty(len(y))
                for tr, te in folds:
                    theta = E.fit_logistic(z[tr], y[tr], alpha, self.bounds)
                    m[te] = z[te] @ theta[:-1] + theta[-1]
                ll = _log_loss(y, E.sigmoid(m))
                if best is None or ll < best[0]:
                    best = (ll, alpha, m)
            _, self.alpha, out = best
            self.z = z
            return out
        for tr, te in folds:
            # Early stopping on the held-out fold itself: a mild optimism the outer
            # (nested) CV does not share, as it refits everything per outer fold.
            member = self._trees(kind, x[tr], y[tr], x[te], y[te])
            out[te] = member.margin(x[te])
        return out

    def final(self, kind: str) -> E.Member:
        if kind == "linear":
            return E.fit_linear(self.layout, self.z, self.y_tr, self.alpha, self.bounds)
        return self._trees(kind, self.x_tr, self.y_tr, self.x_va, self.y_va)


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int] | None = None,
) -> Fitted:
    """The whole recipe on train (fit, search, selection) and valid (early stopping,
    calibration)."""
    # The many small fits run one BLAS thread each (see ``ensemble.fit_logistic``).
    with threadpool_limits(1, user_api="blas"):
        return _fit_model(train, valid, columns, cfg, seed, monotone or {})


def _fit_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int],
) -> Fitted:
    cfg = search_hyperparameters(train, columns, sized(cfg, len(train)), seed, monotone)
    pre = TabularPreprocessor.fit(train, exclude=columns.non_features)
    unknown = sorted(set(monotone) - set(pre.features))
    if unknown:
        raise KeyError(f"monotone constraint on {unknown}: not features of this table")
    y_tr, y_va = train[columns.target].to_numpy(int), valid[columns.target].to_numpy(int)
    x_tr, x_va = pre.transform(train), pre.transform(valid)
    cands = _Candidates(cfg, seed, pre, monotone, x_tr, y_tr, x_va, y_va)
    # With calibrated probabilities the Bayes-optimal cut for costs (FN, FP) is FP / (FP + FN).
    threshold = cfg.fp_cost / (cfg.fp_cost + cfg.fn_cost)

    def release(members: list[E.Member], blend: E.Blend, oof=None) -> tuple[BinaryModel, dict]:
        model = BinaryModel(members, blend, pre, Calibrator(), threshold, columns)
        raw, y_cal = E.sigmoid(model.margin_matrix(x_va)), y_va
        if oof is not None and cfg.calibrate_on == "valid_and_oof":
            # The stacker's cross-fitted predictions on train are out-of-fold too: six times
            # the rows valid alone gives the calibrator.
            raw, y_cal = np.append(raw, E.sigmoid(oof)), np.append(y_va, y_tr)
        model.calibrator, scores = choose_calibrator(raw, y_cal, cfg.calibration, seed)
        return model, scores

    kinds = ["xgboost"] if cfg.recipe == "single" else list(dict.fromkeys(cfg.candidates))
    hyper = {k: getattr(cfg, k) for k in _HYPERPARAMETERS}
    if len(kinds) == 1 and kinds[0] != "linear":
        model, scores = release([cands.final(kinds[0])], E.Blend([1.0], 0.0))
        return Fitted(model, scores, kinds[0], {}, {kinds[0]: model}, hyper)
    folds = _fold_list(y_tr, cfg.inner_folds, seed)
    oof = np.column_stack([cands.oof(k, folds) for k in kinds])
    inner = {k: E.cross_fitted_log_loss(oof[:, [i]], y_tr, folds) for i, k in enumerate(kinds)}
    if len(kinds) > 1:
        inner["blend"] = E.cross_fitted_log_loss(oof, y_tr, folds)
    # The lowest cross-fitted log-loss on train: the blend's stacker is scored on rows it was
    # not fitted on, as each member's is, so its extra weights earn their place or lose.
    best_single = min(kinds, key=inner.get)
    chosen = "blend" if inner.get("blend", np.inf) < inner[best_single] else best_single
    blend = E.fit_blend(oof, y_tr)
    keep = [i for i, w in enumerate(blend.weights) if w > 0]
    if not keep:  # no member carries any signal the stacker can use: the best one alone
        chosen = best_single
    finals = {k: cands.final(k) for k in kinds}
    solo = {}
    stacked = {k: E.cross_fitted_margin(oof[:, [i]], y_tr, folds) for i, k in enumerate(kinds)}
    for i, k in enumerate(kinds):
        solo[k] = release([finals[k]], E.fit_blend(oof[:, [i]], y_tr), stacked[k])[0]
    if chosen == "blend":
        members = [finals[kinds[i]] for i in keep]
        model, scores = release(
            members,
            E.Blend([blend.weights[i] for i in keep], blend.intercept),
            E.cross_fitted_margin(oof, y_tr, folds),
        )
    else:
        model = solo[chosen]
        _, scores = release(model.members, model.blend, stacked[chosen])
    if "linear" in kinds:
        hyper["linear_alpha"] = cands.alpha
    return Fitted(model, scores, chosen, inner, solo, hyper)


def cross_validate(
    df: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int] | None = None,
) -> dict[str, Any]:
    """K-fold CV of the whole recipe, nested: in each outer fold the search, the candidates'
    out-of-fold scores, the choice of blend and the calibration see only that fold's training
    rows (an inner early-stopping/calibration split of them).

    Returns the mean and per-fold AUC and the out-of-fold ECE, Brier and log-loss over every
    row, for the released recipe and for each candidate on its own, what each fold chose and
    the seconds it took.
    """
    t0 = time.perf_counter()
    y = df[columns.target].to_numpy(int)
    oof = np.empty(len(df))
    solo_oof: dict[str, np.ndarray] = {}
    fold_auc, chosen = [], []
    progress = Progress("nested cross-validation", cfg.cv_folds, unit="fold")
    for k, (tr, te) in enumerate(
        StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=seed).split(df, y)
    ):
        fit, stop = train_test_split(
            df.iloc[tr], test_size=0.15, random_state=seed + k, stratify=y[tr]
        )
        fitted = fit_model(fit, stop, columns, cfg, seed, monotone)
        test = df.iloc[te]
        oof[te] = fitted.model.predict_proba(test)
        for name, model in fitted.solo.items():
            solo_oof.setdefault(name, np.empty(len(df)))[te] = model.predict_proba(test)
        fold_auc.append(M.binary_metrics(y[te], oof[te])["auc"])
        chosen.append(fitted.chosen)
        progress.step(k + 1, f"AUC {fold_auc[-1]:.4f} ({fitted.chosen})")
    total = M.binary_metrics(y, oof)
    candidates = {}
    for name, p in solo_oof.items():
        m = M.binary_metrics(y, p)
        aucs = [
            M.binary_metrics(y[te], p[te])["auc"]
            for _, te in StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=seed).split(df, y)
        ]
        candidates[name] = {
            "cv_auc": float(np.mean(aucs)),
            "oof_ece": m["ece"],
            "oof_log_loss": m["log_loss"],
        }
    return {
        "cv_auc": float(np.mean(fold_auc)),
        "cv_auc_std": float(np.std(fold_auc)),
        "cv_fold_auc": fold_auc,
        "oof_ece": total["ece"],
        "oof_brier": total["brier"],
        "oof_log_loss": total["log_loss"],
        "cv_chosen": chosen,
        "cv_candidates": candidates,
        "cv_seconds": round(time.perf_counter() - t0, 1),
    }


_HYPERPARAMETERS = (
    "learning_rate",
    "max_depth",
    "min_child_weight",
    "subsample",
    "colsample_bytree",
    "reg_lambda",
    "lgb_num_leaves",
)


def search_hyperparameters(
    train: pd.DataFrame, columns: Columns, cfg: BinaryTrainerConfig, seed: int, monotone=None
) -> BinaryTrainerConfig:
    """Seeded Optuna TPE search of the XGBoost settings, scored by CV AUC on train only."""
    if cfg.search_trials == 0:
        return cfg
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y = train[columns.target].to_numpy(int)
    pre = TabularPreprocessor.fit(train, exclude=columns.non_features)
    x = pre.transform(train)
    folds = list(StratifiedKFold(3, shuffle=True, random_state=seed).split(train, y))

    def objective(trial: optuna.Trial) -> float:
        trial_cfg = cfg.model_copy(
            update={
                "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.2, log=True),
                "max_depth": trial.suggest_int("max_depth", 2, 6),
                "min_child_weight": trial.suggest_float("min_child_weight", 1.0, 30.0, log=True),
                "subsample": trial.suggest_float("subsample", 0.5, 1.0),
                "colsample_bytree": trial.suggest_float("colsample_bytree", 0.4, 1.0),
                "reg_lambda": trial.suggest_float("reg_lambda", 0.1, 30.0, log=True),
            }
        )
        params = _params(trial_cfg, seed, pre, monotone or {})
        aucs = []
        for tr, te in folds:
            member = E.fit_xgboost(
                params,
                trial_cfg.n_estimators,
                trial_cfg.early_stopping_rounds,
                pre,
                x[tr],
                y[tr],
                x[te],
                y[te],
            )
            aucs.append(M.binary_metrics(y[te], member.margin(x[te]))["auc"])
        return float(np.mean(aucs))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    progress = Progress("optuna search", cfg.search_trials, unit="trial")

    def report(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        progress.step(trial.number + 1, f"best CV AUC {study.best_value:.4f}")

    study.optimize(objective, n_trials=cfg.search_trials, callbacks=[report])
    log.info("search: best CV AUC %.4f with %s", study.best_value, study.best_params)
    return cfg.model_copy(update=study.best_params)


def train_binary(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int] | None = None,
    cross_validation: bool = True,
    result: type[B] = BinaryResult,
) -> tuple[BinaryModel, B, dict[str, Any]]:
    """The full recipe. Returns (model, its ``result`` type filled in, curves for the report)."""
    t0 = time.perf_counter()
    fitted = fit_model(train, valid, columns, cfg, seed, monotone)
    model = fitted.model
    fit_seconds = round(time.perf_counter() - t0, 1)
    y_te = test[columns.target].to_numpy(int)
    p_te = model.predict_proba(test)
    test_m = M.binary_metrics(y_te, p_te)
    lo, hi = M.bootstrap_auc_ci(y_te, p_te, n=cfg.bootstrap, seed=seed)
    tn_fp, fn_tp = M.confusion(y_te, p_te, model.threshold)
    xgb_members = [m for m in model.members if isinstance(m, E.XGBoostMember)]
    fields: dict[str, Any] = {
        "test_auc": test_m["auc"],
        "test_auc_ci_low": lo,
        "test_auc_ci_high": hi,
        "test_ece": test_m["ece"],
        "test_brier": test_m["brier"],
        "test_log_loss": test_m["log_loss"],
        "test_positive_rate": test_m["positive_rate"],
        "test_rows": test_m["n"],
        "threshold": model.threshold,
        "test_expected_cost_per_row": (cfg.fn_cost * fn_tp[0] + cfg.fp_cost * tn_fp[1]) / len(y_te),
        "calibration": model.calibrator.method,
        "best_iteration": (
            int(xgb_members[0].booster.num_boosted_rounds()) if xgb_members else None
        ),
    }
    details: dict[str, Any] = {
        "calibration_valid_log_loss": fitted.calibration_scores,
        "hyperparameters": fitted.hyperparameters,
        "ensemble": {
            "recipe": cfg.recipe,
            "chosen": fitted.chosen,
            "members": model.kinds,
            "weights": model.blend.weights,
            "intercept": model.blend.intercept,
            "inner_cross_fitted_log_loss": fitted.inner_log_loss,
            "candidates_test_auc": {
                k: M.binary_metrics(y_te, m.predict_proba(test))["auc"]
                for k, m in fitted.solo.items()
            },
        },
        "fit_seconds": fit_seconds,
    }
    if cross_validation:
        whole = pd.concat([train, valid, test], ignore_index=True)
        cv = cross_validate(whole, columns, cfg, seed, monotone)
        for key in ("cv_fold_auc", "cv_chosen", "cv_candidates", "cv_seconds"):
            details[key] = cv.pop(key)
        fields |= cv
    details["total_seconds"] = round(time.perf_counter() - t0, 1)
    metrics = result(**fields, details=details)
    model.info = {"metrics": metrics.scalars(), "members": model.kinds}
    curves = {
        "roc": M.roc_points(y_te, p_te),
        "calibration": M.calibration_curve(y_te, p_te),
        "confusion": [tn_fp, fn_tp],
    }
    return model, metrics, curves
