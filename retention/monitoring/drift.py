"""Distribution shift of one column against its training reference: PSI and KS.

A numeric column is summarised at release time by quantile bin edges of the training values, the
share of training rows in each bin (and missing), and a sample of the values; a categorical one by
the share of each level. PSI (population stability index) is computed on those bins, with a small
floor on empty bins so a bin the reference never filled does not make it infinite; KS is the
two-sample Kolmogorov-Smirnov test of the values against the reference sample. A level training
never saw is reported by its share: a model sends it down the missing branch, which PSI on the
known levels alone would hide.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

EPS = 1e-4  # floor of a bin's share in PSI
MISSING = "__missing__"
UNSEEN = "__unseen__"


def psi(expected: np.ndarray, actual: np.ndarray) -> float:
    e = np.clip(np.asarray(expected, dtype=float), EPS, None)
    a = np.clip(np.asarray(actual, dtype=float), EPS, None)
    return float(np.sum((a - e) * np.log(a / e)))


def numeric_values(s: pd.Series) -> np.ndarray:
    """Floats, NaN for anything missing or not a number (text columns read as numbers)."""
    return pd.to_numeric(s, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def summarise_numeric(values: np.ndarray, bins: int, sample: int, seed: int) -> dict[str, Any]:
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        raise ValueError("no numeric values to summarise")
    inner = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
    rng = np.random.default_rng(seed)
    kept = finite if finite.size <= sample else rng.choice(finite, sample, replace=False)
    return {
        "kind": "numeric",
        "edges": inner.tolist(),
        "props": _numeric_props(values, inner).tolist(),
        "sample": np.sort(kept).tolist(),
        "mean": float(finite.mean()),
    }


def _numeric_props(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Shares of rows per bin (right-closed, as ``np.quantile`` edges), then the missing share."""
    missing = np.isnan(values)
    idx = np.searchsorted(edges, values[~missing], side="left")
    counts = np.bincount(idx, minlength=len(edges) + 1).astype(float)
    counts = np.append(counts, missing.sum())
    return counts / max(len(values), 1)


def summarise_categorical(s: pd.Series) -> dict[str, Any]:
    keys = s.astype("string").fillna(MISSING)
    shares = keys.value_counts(normalize=True)
    return {"kind": "categorical", "props": {str(k): float(v) for k, v in shares.items()}}


@dataclass
class ColumnDrift:
    """One column's shift; ``drifted`` says which test passed its bound (empty: none)."""

    column: str
    kind: str
    rows: int
    psi: float
    ks: float | None = None
    ks_pvalue: float | None = None
    unseen_share: float = 0.0
    unseen_levels: dict[str, float] = field(default_factory=dict)
    mean: float | None = None
    reference_mean: float | None = None
    bins: list[dict[str, Any]] = field(default_factory=list)  # for the plots
    drifted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def column_drift(
    column: str,
    ref: dict[str, Any],
    s: pd.Series,
    *,
    psi_max: float,
    ks_max: float,
    ks_alpha: float,
    new_category_max: float,
) -> ColumnDrift:
    if ref["kind"] == "numeric":
        values = numeric_values(s)
        edges = np.asarray(ref["edges"], dtype=float)
        cur = _numeric_props(values, edges)
        d = ColumnDrift(column, "numeric", len(values), psi(ref["props"], cur))
        finite = values[~np.isnan(values)]
        if finite.size:
            res = stats.ks_2samp(finite, np.asarray(ref["sample"], dtype=float))
            d.ks, d.ks_pvalue = float(res.statistic), float(res.pvalue)
            d.mean = float(finite.mean())
        d.reference_mean = ref.get("mean")
        labels = _bin_labels(edges)
        d.bins = [
            {"bin": b, "reference": float(r), "current": float(c)}
            for b, r, c in zip(labels, ref["props"], cur, strict=True)
        ]
        if d.psi > psi_max:
            d.drifted.append("psi")
        if d.ks is not None and d.ks > ks_max and (d.ks_pvalue or 0.0) < ks_alpha:
            d.drifted.append("ks")
        return d
    known: dict[str, float] = ref["props"]
    keys = s.astype("string").fillna(MISSING)
    shares = keys.value_counts(normalize=True)
    unseen = {str(k): float(v) for k, v in shares.items() if str(k) not in known}
    cur = np.array([float(shares.get(k, 0.0)) for k in known] + [sum(unseen.values())])
    d = ColumnDrift(
        column,
        "categorical",
        len(keys),
        psi([*known.values(), 0.0], cur),
        unseen_share=float(sum(unseen.values())),
        unseen_levels=dict(sorted(unseen.items(), key=lambda kv: -kv[1])[:10]),
    )
    d.bins = [
        {"bin": k, "reference": float(known.get(k, 0.0)), "current": float(shares.get(k, 0.0))}
        for k in [*known, *d.unseen_levels]
    ]
    if d.psi > psi_max:
        d.drifted.append("psi")
    if d.unseen_share > new_category_max:
        d.drifted.append("new_category")
    return d


def _bin_labels(edges: np.ndarray) -> list[str]:
    if len(edges) == 0:
        return ["all", "missing"]
    out = [f"<= {edges[0]:.4g}"]
    out += [f"({a:.4g}, {b:.4g}]" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return [*out, f"> {edges[-1]:.4g}", "missing"]
