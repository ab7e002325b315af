"""BG/NBD (Fader, Hardie & Lee 2005) + Gamma-Gamma (Fader, Hardie & Lee 2005b), by maximum likelihood.

The classic probabilistic customer-value baseline, written out on scipy because the reference
package (lifetimes) is unmaintained and does not install cleanly beside numpy 2. Inputs follow the
usual convention: ``frequency`` = repeat purchases (distinct purchase days − 1), ``recency`` = time
from first to last purchase, ``T`` = time from first purchase to the end of the calibration window,
all in the same unit (weeks here); ``monetary`` = mean value of the repeat purchases.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import betaln, gammaln, hyp2f1


@dataclass
class BetaGeoNBD:
    r: float = 1.0
    alpha: float = 1.0
    a: float = 1.0
    b: float = 1.0

    @staticmethod
    def _negll(logp, x, tx, T):
        r, alpha, a, b = np.exp(logp)
        common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
        a1 = betaln(a, b + x) - betaln(a, b) + common - (r + x) * np.log(alpha + T)
        with np.errstate(divide="ignore", invalid="ignore"):
            a2 = np.where(
                x > 0,
                betaln(a + 1, b + np.maximum(x, 1) - 1)
                - betaln(a, b)
                + common
                - (r + x) * np.log(alpha + tx),
                -np.inf,
            )
        return -np.logaddexp(a1, a2).sum()

    def fit(self, frequency, recency, T) -> BetaGeoNBD:
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        res = minimize(
            self._negll,
            np.zeros(4),
            args=(x, tx, T),
            method="Nelder-Mead",
            options={"maxiter": 4000, "xatol": 1e-6, "fatol": 1e-6},
        )
        self.r, self.alpha, self.a, self.b = np.exp(res.x)
        return self

    def expected_purchases(self, t, frequency, recency, T) -> np.ndarray:
        r, alpha, a, b = self.r, self.alpha, self.a, self.b
        x, tx, T = (np.asarray(v, float) for v in (frequency, recency, T))
        hyp = hyp2f1(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
        num = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
        den = 1 + (x > 0) * a / (b + x - 1 + (x == 0)) * ((alpha + T) / (alpha + tx)) ** (r + x)
        return num / den


@dataclass
class GammaGamma:
    p: float = 1.0
    q: float = 1.0
    v: float = 1.0

    @staticmethod
    def _negll(logp, x, m):
        p, q, v = np.exp(logp)
        ll = (
            gammaln(p * x + q)
            - gammaln(p * x)
            - gammaln(q)
            + q * np.log(v)
            + (p * x - 1) * np.log(m)
            + p * x * np.log(x)
            - (p * x + q) * np.log(v + m * x)
        )
        return -ll.sum()

    def fit(self, frequency, monetary) -> GammaGamma:
        x, m = np.asarray(frequency, float), np.asarray(monetary, float)
        keep = (x > 0) & (m > 0)
        res = minimize(
            self._negll,
            np.zeros(3),
            args=(x[keep], m[keep]),
            method="Nelder-Mead",
            options={"maxiter": 4000},
        )
        self.p, self.q, self.v = np.exp(res.x)
        return self

    def expected_value(self, frequency, monetary, population_mean: float) -> np.ndarray:
        """E[spend per purchase]; customers without repeat purchases get the population mean."""
        x, m = np.asarray(frequency, float), np.asarray(monetary, float)
        p, q, v = self.p, self.q, self.v
        cond = (v + m * x) * p / (p * x + q - 1)
        return np.where(x > 0, cond, population_mean)
