"""Classification metrics: discrimination, calibration and their uncertainty.

In the models layer because the trainers measure with them; evaluation reads what they wrote.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import brier_score_loss, log_loss, roc_auc_score, roc_curve


def ece(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error with equal-width bins: Σ |mean(y) − mean(p)| weighted by bin size."""
    c = calibration_curve(y, p, bins)
    gaps = np.abs(np.subtract(c["fraction_positive"], c["mean_predicted"]))
    return float(np.dot(c["count"], gaps) / len(y))


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> dict[str, list[float]]:
    y, p = np.asarray(y, float), np.asarray(p, float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    mean_p, frac, count = [], [], []
    for b in range(bins):
        m = idx == b
        if m.any():
            mean_p.append(float(p[m].mean()))
            frac.append(float(y[m].mean()))
            count.append(int(m.sum()))
    return {"mean_predicted": mean_p, "fraction_positive": frac, "count": count}


def bootstrap_auc_ci(
    y: np.ndarray, p: np.ndarray, n: int = 1000, seed: int = 42, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap CI of the AUC; resamples with one class only are skipped."""
    if n == 0:
        return float("nan"), float("nan")
    y, p = np.asarray(y), np.asarray(p)
    rng = np.random.default_rng(seed)
    aucs = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        if y[i].min() != y[i].max():
            aucs.append(roc_auc_score(y[i], p[i]))
    lo, hi = np.percentile(aucs, [(1 - level) / 2 * 100, (1 + level) / 2 * 100])
    return float(lo), float(hi)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    y, p = np.asarray(y), np.clip(np.asarray(p, float), 1e-7, 1 - 1e-7)
    return {
        "auc": float(roc_auc_score(y, p)),
        "ece": ece(y, p),
        "brier": float(brier_score_loss(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "positive_rate": float(np.mean(y)),
        "n": int(len(y)),
    }


def roc_points(y: np.ndarray, p: np.ndarray, max_points: int = 200) -> dict[str, list[float]]:
    fpr, tpr, thr = roc_curve(y, p)
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    thr = np.where(np.isfinite(thr), thr, 1.0)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "thresholds": thr.tolist()}


def confusion(y: np.ndarray, p: np.ndarray, threshold: float) -> list[list[int]]:
    """[[TN, FP], [FN, TP]] at ``p >= threshold``."""
    y, pred = np.asarray(y).astype(int), (np.asarray(p) >= threshold).astype(int)
    return [
        [int(((y == 0) & (pred == 0)).sum()), int(((y == 0) & (pred == 1)).sum())],
        [int(((y == 1) & (pred == 0)).sum()), int(((y == 1) & (pred == 1)).sum())],
    ]
