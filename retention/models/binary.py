"""A calibrated gradient-boosted binary classifier for any table (used by risk and accept).

Training: preprocessing fitted on train → optional seeded Optuna search by CV on train → XGBoost with
early stopping on valid → calibrator chosen on valid → cost-based decision threshold. Everything the
model needs at prediction time is saved as JSON (XGBoost's own format, levels, calibrator knots), so
serving never unpickles training code. Per-row explanations are exact TreeSHAP values computed by
XGBoost itself (``pred_contribs``), in margin units, summing to the model's margin.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
import xgboost as xgb
from sklearn.model_selection import StratifiedKFold, train_test_split

from retention.config import BinaryTrainerConfig
from retention.fileio import atomic_dir, read_json, write_json
from retention.models import metrics as M
from retention.models.calibration import Calibrator, choose_calibrator
from retention.models.preprocess import TabularPreprocessor, display_value
from retention.progress import Progress
from retention.results import BinaryResult

log = logging.getLogger(__name__)

BOOSTER_FILE = "model.json"
META_FILE = "preprocess.json"
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


def _dmatrix(
    pre: TabularPreprocessor, df: pd.DataFrame, y: np.ndarray | None = None
) -> xgb.DMatrix:
    return dmatrix_of(pre, pre.transform(df), y)


def dmatrix_of(
    pre: TabularPreprocessor, x: np.ndarray, y: np.ndarray | None = None, nthread: int = -1
) -> xgb.DMatrix:
    """The DMatrix of rows already prepared by ``pre`` (training, SHAP, the compiled path)."""
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
    booster: xgb.Booster
    pre: TabularPreprocessor
    calibrator: Calibrator
    threshold: float
    columns: Columns
    info: dict[str, Any] = field(default_factory=dict)

    def margin(self, df: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(_dmatrix(self.pre, df), output_margin=True)

    def predict_raw(self, df: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(_dmatrix(self.pre, df))

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        return self.calibrator(self.predict_raw(df))

    def contributions(self, df: pd.DataFrame) -> np.ndarray:
        """TreeSHAP values per feature plus the bias column; rows sum to ``margin``."""
        return self.booster.predict(_dmatrix(self.pre, df), pred_contribs=True)

    def top_factors(self, df: pd.DataFrame, k: int = 3) -> list[list[dict[str, Any]]]:
        """The k features pushing each row's risk up the most (positive SHAP first), among the
        features the row gave a usable value for: a feature that is missing (not sent, null, an
        unseen level, text that is no number) moved the score only through the trees' default
        branch, which says nothing about this customer, so it is never shown as a factor."""
        x = self.pre.transform(df)
        contrib = self.booster.predict(dmatrix_of(self.pre, x), pred_contribs=True)[:, :-1]
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

    def proba_matrix(self, x: np.ndarray) -> np.ndarray:
        """``predict_proba`` of rows already prepared (``pre.transform`` or ``RowEncoder``):
        ``inplace_predict`` on the float32 matrix, no DMatrix, then the same calibrator."""
        return self.calibrator(self.booster.inplace_predict(x, missing=np.nan))

    def save(self, out_dir: str | Path) -> None:
        with atomic_dir(out_dir) as tmp:
            self.booster.save_model(str(tmp / BOOSTER_FILE))
            write_json(
                tmp / META_FILE,
                {
                    "format": "retention.binary/v1",
                    "preprocess": self.pre.to_dict(),
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
        if meta.get("format") != "retention.binary/v1":
            raise ValueError(f"{path / META_FILE}: unknown model format {meta.get('format')!r}")
        booster = xgb.Booster()
        booster.load_model(str(path / BOOSTER_FILE))
        return cls(
            booster=booster,
            pre=TabularPreprocessor.from_dict(meta["preprocess"]),
            calibrator=Calibrator.from_dict(meta["calibrator"]),
            threshold=float(meta["threshold"]),
            columns=Columns(**meta["columns"]),
            info=meta.get("info", {}),
        )


def rank_factors(contrib: np.ndarray, usable: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` largest contributions among the ``usable`` features, largest first
    (ties in feature order)."""
    order = np.argsort(-contrib, kind="stable")
    return [int(j) for j in order if usable[j]][:k]


def _fit_booster(
    params: dict, cfg: BinaryTrainerConfig, pre: TabularPreprocessor, fit_df, y_fit, stop_df, y_stop
) -> xgb.Booster:
    dfit, dstop = _dmatrix(pre, fit_df, y_fit), _dmatrix(pre, stop_df, y_stop)
    return xgb.train(
        params,
        dfit,
        num_boost_round=cfg.n_estimators,
        evals=[(dstop, "valid")],
        early_stopping_rounds=cfg.early_stopping_rounds,
        verbose_eval=False,
    )


def _best_iter(booster: xgb.Booster) -> tuple[int, int]:
    return (0, booster.best_iteration + 1)


def fit_model(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int] | None = None,
) -> tuple[BinaryModel, dict[str, float]]:
    """Fit on train, stop early and calibrate on valid; returns the model and calibration scores."""
    monotone = monotone or {}
    pre = TabularPreprocessor.fit(train, exclude=columns.non_features)
    params = _params(cfg, seed, pre, monotone)
    y_tr, y_va = train[columns.target].to_numpy(int), valid[columns.target].to_numpy(int)
    booster = _fit_booster(params, cfg, pre, train, y_tr, valid, y_va)
    booster = booster[: booster.best_iteration + 1]
    raw_valid = booster.predict(_dmatrix(pre, valid))
    calibrator, cal_scores = choose_calibrator(raw_valid, y_va, cfg.calibration, seed)
    # With calibrated probabilities the Bayes-optimal cut for costs (FN, FP) is FP / (FP + FN).
    threshold = cfg.fp_cost / (cfg.fp_cost + cfg.fn_cost)
    model = BinaryModel(booster, pre, calibrator, threshold, columns)
    return model, cal_scores


def cross_validate(
    df: pd.DataFrame,
    columns: Columns,
    cfg: BinaryTrainerConfig,
    seed: int,
    monotone: dict[str, int] | None = None,
) -> dict[str, Any]:
    """K-fold CV of the whole recipe (inner early-stopping/calibration split per fold).

    Returns the mean and per-fold AUC and the out-of-fold ECE and Brier over every row.
    """
    y = df[columns.target].to_numpy(int)
    oof = np.empty(len(df))
    fold_auc = []
    for k, (tr, te) in enumerate(
        StratifiedKFold(cfg.cv_folds, shuffle=True, random_state=seed).split(df, y)
    ):
        fit, stop = train_test_split(
            df.iloc[tr], test_size=0.15, random_state=seed + k, stratify=y[tr]
        )
        model, _ = fit_model(fit, stop, columns, cfg, seed, monotone)
        oof[te] = model.predict_proba(df.iloc[te])
        fold_auc.append(M.binary_metrics(y[te], oof[te])["auc"])
    total = M.binary_metrics(y, oof)
    return {
        "cv_auc": float(np.mean(fold_auc)),
        "cv_auc_std": float(np.std(fold_auc)),
        "cv_fold_auc": fold_auc,
        "oof_ece": total["ece"],
        "oof_brier": total["brier"],
        "oof_log_loss": total["log_loss"],
    }


def search_hyperparameters(
    train: pd.DataFrame, columns: Columns, cfg: BinaryTrainerConfig, seed: int, monotone=None
) -> BinaryTrainerConfig:
    """Seeded Optuna TPE search scored by CV AUC on train only; the test split is never seen."""
    if cfg.search_trials == 0:
        return cfg
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    y = train[columns.target].to_numpy(int)
    pre = TabularPreprocessor.fit(train, exclude=columns.non_features)
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
            b = _fit_booster(params, trial_cfg, pre, train.iloc[tr], y[tr], train.iloc[te], y[te])
            p = b.predict(_dmatrix(pre, train.iloc[te]), iteration_range=_best_iter(b))
            aucs.append(M.binary_metrics(y[te], p)["auc"])
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
    tuned = search_hyperparameters(train, columns, cfg, seed, monotone)
    model, cal_scores = fit_model(train, valid, columns, tuned, seed, monotone)
    y_te = test[columns.target].to_numpy(int)
    p_te = model.predict_proba(test)
    test_m = M.binary_metrics(y_te, p_te)
    lo, hi = M.bootstrap_auc_ci(y_te, p_te, n=cfg.bootstrap, seed=seed)
    tn_fp, fn_tp = M.confusion(y_te, p_te, model.threshold)
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
        "best_iteration": int(model.booster.num_boosted_rounds()),
    }
    details: dict[str, Any] = {
        "calibration_valid_log_loss": cal_scores,
        "hyperparameters": {
            k: getattr(tuned, k)
            for k in (
                "learning_rate",
                "max_depth",
                "min_child_weight",
                "subsample",
                "colsample_bytree",
                "reg_lambda",
            )
        },
    }
    if cross_validation:
        whole = pd.concat([train, valid, test], ignore_index=True)
        cv = cross_validate(whole, columns, tuned, seed, monotone)
        details["cv_fold_auc"] = cv.pop("cv_fold_auc")
        fields |= cv
    metrics = result(**fields, details=details)
    model.info = {"metrics": metrics.scalars()}
    curves = {
        "roc": M.roc_points(y_te, p_te),
        "calibration": M.calibration_curve(y_te, p_te),
        "confusion": [tn_fp, fn_tp],
    }
    return model, metrics, curves
