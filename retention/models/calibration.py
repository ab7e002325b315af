"""Probability calibrators that serialise to plain JSON (no pickles at serving time).

The method is chosen on the validation set by cross-fitted log-loss: fitting and scoring a calibrator
on the same rows would always favour the most flexible one (isotonic).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold

Method = Literal["isotonic", "platt", "none"]
EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    method: Method = "none"
    x: list[float] = field(default_factory=list)  # isotonic knots (input probabilities)
    y: list[float] = field(default_factory=list)  # isotonic knots (output probabilities)
    a: float = 1.0  # platt: sigmoid(a * logit(p) + b)
    b: float = 0.0

    def __call__(self, p: np.ndarray) -> np.ndarray:
        p = np.asarray(p, dtype=float)
        if self.method == "isotonic":
            out = np.interp(p, self.x, self.y)
        elif self.method == "platt":
            out = 1.0 / (1.0 + np.exp(-(self.a * _logit(p) + self.b)))
        else:
            out = p
        return np.clip(out, EPS, 1 - EPS)

    def to_dict(self) -> dict:
        return {"method": self.method, "x": self.x, "y": self.y, "a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        return cls(**d)


def fit_calibrator(p: np.ndarray, y: np.ndarray, method: Method) -> Calibrator:
    p, y = np.asarray(p, float), np.asarray(y, int)
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=EPS, y_max=1 - EPS).fit(p, y)
        return Calibrator("isotonic", x=iso.X_thresholds_.tolist(), y=iso.y_thresholds_.tolist())
    if method == "platt":
        lr = LogisticRegression(C=1e6).fit(_logit(p).reshape(-1, 1), y)
        return Calibrator("platt", a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    return Calibrator("none")


def choose_calibrator(
    p: np.ndarray, y: np.ndarray, method: Literal["auto", "isotonic", "platt", "none"], seed: int
) -> tuple[Calibrator, dict[str, float]]:
    """Fit the requested calibrator; with ``auto`` pick the lowest cross-fitted log-loss."""
    candidates: list[Method] = ["none", "platt", "isotonic"] if method == "auto" else [method]
    p, y = np.asarray(p, float), np.asarray(y, int)
    scores: dict[str, float] = {}
    folds = min(5, int(np.bincount(y, minlength=2).min()))
    for m in candidates:
        if folds < 2 or len(candidates) == 1:
            scores[m] = float(log_loss(y, fit_calibrator(p, y, m)(p), labels=[0, 1]))
            continue
        oof = np.empty_like(p)
        for tr, te in StratifiedKFold(folds, shuffle=True, random_state=seed).split(p, y):
            oof[te] = fit_calibrator(p[tr], y[tr], m)(p[te])
        scores[m] = float(log_loss(y, oof, labels=[0, 1]))
    best = min(scores, key=scores.get)
    return fit_calibrator(p, y, best), scores
