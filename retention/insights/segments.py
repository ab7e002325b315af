"""train-segments: RFM segments of the order log with value, revenue and churn per segment.

At a cut-off ``insights.segments.churn_window_days`` before the log ends, every customer's
recency, frequency and monetary value (the LTV model's order facts) are log-scaled and
standardised; k-means runs for each k in ``k_min..k_max`` and the k with the best silhouette
is kept. Each segment is named from its profile: the segment's mean R, F and M scores (each
customer's percentile rank, 1-5) are matched one to one to the prototypes below (Hungarian
assignment on the distance), so two segments never share a name and a name always says what
the segment looks like. Per segment: size and share, revenue share (spend before the cut-off),
mean and total 12-month value by the released LTV model, and the observed churn rate (no order
in the window after the cut-off).

Released: ``segments.json`` (the scaler, the centroids, the names and the profile table) and
``assignments.parquet`` (each customer's segment and figures, for the dashboard's lookup and the
assistant's own checks). ``SegmentModel.assign`` places any customer given its three order facts.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retention.config import Profile
from retention.data.split import read_split
from retention.fileio import atomic_dir, read_json, write_json
from retention.insights.rfm import FREQUENCY, MONETARY, RECENCY, RFM, rfm_matrix, rfm_table
from retention.models.ltv import LtvModel
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.progress import Progress
from retention.results import SegmentsResult

META_FILE = "segments.json"
ASSIGNMENTS_FILE = "assignments.parquet"

# Prototype (R, F, M) scores, 1 (worst) to 5 (best); recency scores high when the last order is
# recent (5: within a third of the churn window, 4: within it, 3: two windows, 2: four).
PROTOTYPES: dict[str, tuple[float, float, float]] = {
    "Champions": (4.6, 4.6, 4.6),
    "Loyal": (3.6, 4.0, 3.8),
    "Promising": (4.3, 1.8, 2.6),
    "At risk": (1.9, 3.8, 3.8),
    "Hibernating": (1.6, 1.6, 1.8),
    "Need attention": (3.0, 2.6, 2.9),
    "Big spenders": (3.0, 2.0, 4.6),
    "Lost": (1.0, 1.0, 1.0),
}


@dataclass(frozen=True)
class Fit:
    k: int
    labels: np.ndarray
    centroids: np.ndarray
    silhouette: float


def _scores(facts: pd.DataFrame, window_days: int) -> pd.DataFrame:
    """Each customer's R, F and M score, 1-5.

    F and M: the percentile rank (ties share a rank). R is absolute, in multiples of the churn
    window: ranked, a log where most customers lapsed long ago would call a segment that last
    bought eight months ago recent.
    """
    edges = np.asarray([window_days / 3, window_days, 2 * window_days, 4 * window_days])
    r = pd.Series(5 - np.searchsorted(edges, facts[RECENCY].to_numpy(float)), index=facts.index)
    f = 1 + 4 * facts[FREQUENCY].rank(pct=True, method="average")
    m = 1 + 4 * facts[MONETARY].rank(pct=True, method="average")
    return pd.DataFrame({"R": r, "F": f, "M": m}, index=facts.index)


def choose_k(z: np.ndarray, k_min: int, k_max: int, seed: int, n_init: int, sample: int) -> tuple:
    """The k-means fit with the best silhouette for k in ``k_min..k_max`` and every k's score."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    n = len(z)
    k_max = min(k_max, n - 1)
    if k_max < k_min:
        raise ValueError(f"orders: {n} customers are too few for {k_min} segments")
    rng = np.random.default_rng(seed)
    # The silhouette is O(n^2): judged on a fixed sample of customers, the same for every k.
    idx = rng.choice(n, size=min(n, sample), replace=False)
    progress = Progress("segments", k_max - k_min + 1, unit="k")
    best, scores = None, {}
    for j, k in enumerate(range(k_min, k_max + 1), start=1):
        km = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(z)
        labels = km.labels_
        s = float(silhouette_score(z[idx], labels[idx])) if len(set(labels[idx])) > 1 else -1.0
        scores[k] = s
        progress.step(j, f"k={k} silhouette {s:.3f}")
        if best is None or s > best.silhouette:
            best = Fit(k, labels, km.cluster_centers_, s)
    return best, scores


def name_segments(profiles: pd.DataFrame) -> list[str]:
    """One prototype name per segment (rows of R, F, M means), unique, by least total distance."""
    from scipy.optimize import linear_sum_assignment

    names = list(PROTOTYPES)
    proto = np.asarray([PROTOTYPES[n] for n in names])
    x = profiles[["R", "F", "M"]].to_numpy(float)
    cost = ((x[:, None, :] - proto[None, :, :]) ** 2).sum(axis=2)
    rows, cols = linear_sum_assignment(cost)
    out = [""] * len(x)
    for r, c in zip(rows, cols, strict=True):
        out[r] = names[c]
    return out


def train_segments(
    profile: Profile, split_dir: str | Path, ltv_dir: str | Path, out_dir: str | Path
) -> SegmentsResult:
    cfg = profile.insights.segments
    spec = profile.data.orders
    cid, date = spec.id_column or "customer_id", spec.time_column or "date"
    amount = profile.ltv.amount_column
    orders = read_split(split_dir, "orders", "all")
    table = rfm_table(orders, cid, date, amount, cfg.churn_window_days)
    facts = table.facts
    x = rfm_matrix(facts)
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    fit, by_k = choose_k(z, cfg.k_min, cfg.k_max, profile.seed, cfg.n_init, cfg.silhouette_sample)

    ltv_dir = Path(ltv_dir)
    ltv = LtvModel(ltv_dir / MODEL_DIR if (ltv_dir / MODEL_DIR).is_dir() else ltv_dir)
    clv = ltv.customer_values(facts.reset_index(drop=True)).value

    scores = _scores(facts, cfg.churn_window_days)
    per = pd.DataFrame(
        {
            "cluster": fit.labels,
            RECENCY: facts[RECENCY].to_numpy(),
            FREQUENCY: facts[FREQUENCY].to_numpy(),
            MONETARY: facts[MONETARY].to_numpy(),
            "clv": clv,
            "churned": table.churned.to_numpy(),
            "revenue_after": table.revenue_after.to_numpy(),
            **{c: scores[c].to_numpy() for c in ("R", "F", "M")},
        },
        index=facts.index.rename("customer_id"),
    )
    g = per.groupby("cluster")
    prof = g[["R", "F", "M"]].mean()
    prof["name"] = name_segments(prof)
    per["segment"] = per["cluster"].map(prof["name"])
    total_spend, total_clv = float(per[MONETARY].sum()), float(per["clv"].sum())
    segments = []
    for c, row in prof.iterrows():
        s = per[per["cluster"] == c]
        segments.append(
            {
                "name": row["name"],
                "cluster": int(c),
                "customers": len(s),
                "share": len(s) / len(per),
                "revenue": float(s[MONETARY].sum()),
                "revenue_share": float(s[MONETARY].sum()) / total_spend if total_spend else 0.0,
                "mean_clv": float(s["clv"].mean()),
                "total_clv": float(s["clv"].sum()),
                "clv_share": float(s["clv"].sum()) / total_clv if total_clv else 0.0,
                "churn_rate": float(s["churned"].mean()),
                "mean_recency_days": float(s[RECENCY].mean()),
                "mean_orders": float(s[FREQUENCY].mean() + 1),
                "mean_spend": float(s[MONETARY].mean()),
                "mean_order_value": float(s[MONETARY].sum() / (s[FREQUENCY] + 1).sum()),
                "r_score": float(row["R"]),
                "f_score": float(row["F"]),
                "m_score": float(row["M"]),
            }
        )
    segments.sort(key=lambda s: -s["revenue"])
    overall = {
        "customers": len(per),
        "revenue": total_spend,
        "total_clv": total_clv,
        "mean_clv": float(per["clv"].mean()),
        "churn_rate": float(per["churned"].mean()),
        "mean_recency_days": float(per[RECENCY].mean()),
        "mean_orders": float(per[FREQUENCY].mean() + 1),
        "mean_spend": float(per[MONETARY].mean()),
        "mean_order_value": float(total_spend / (per[FREQUENCY] + 1).sum()),
    }
    out = Path(out_dir)
    with atomic_dir(out / MODEL_DIR) as tmp:
        write_json(
            tmp / META_FILE,
            {
                "columns": list(RFM),
                "scaler_mean": mean.tolist(),
                "scaler_scale": scale.tolist(),
                "centroids": fit.centroids.tolist(),
                "names": [str(prof.loc[c, "name"]) for c in range(fit.k)],
                "segments": segments,
                "overall": overall,
                "cutoff": str(table.cutoff.date()),
                "churn_window_days": table.window_days,
                "silhouette_by_k": {str(k): v for k, v in by_k.items()},
            },
        )
        per.drop(columns=["cluster"]).reset_index().to_parquet(tmp / ASSIGNMENTS_FILE)
    shares = [s["share"] for s in segments]
    result = SegmentsResult(
        silhouette=fit.silhouette,
        k=fit.k,
        min_segment_share=min(shares),
        customers=len(per),
        churn_rate=overall["churn_rate"],
        total_clv=total_clv,
        cutoff=str(table.cutoff.date()),
        most_revenue=segments[0]["name"],
        details={"segments": segments, "silhouette_by_k": by_k},
    )
    result.save(out / METRICS_FILE)
    return result


class SegmentModel:
    """A released segmentation: its profile table, and the segment of any customer's RFM facts."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path
        meta = read_json(path / META_FILE)
        self.meta: dict[str, Any] = meta
        self.columns: list[str] = meta["columns"]
        self._mean = np.asarray(meta["scaler_mean"])
        self._scale = np.asarray(meta["scaler_scale"])
        self._centroids = np.asarray(meta["centroids"])
        self.names: list[str] = meta["names"]
        self.segments: list[dict[str, Any]] = meta["segments"]
        self.overall: dict[str, Any] = meta["overall"]

    def segment(self, name: str) -> dict[str, Any]:
        for s in self.segments:
            if s["name"] == name:
                return s
        raise KeyError(f"no segment {name!r} (known: {', '.join(self.names)})")

    def assignments(self) -> pd.DataFrame:
        return pd.read_parquet(self.path / ASSIGNMENTS_FILE)

    def segment_of(self, facts: dict[str, Any]) -> str | None:
        """One customer's segment from the facts it sent, or None when it sent no RFM fact;
        a partial or bad set is a ValueError naming the fact (serving: a 400)."""
        given = [c for c in self.columns if facts.get(c) is not None]
        if not given:
            return None
        return self.assign([{c: facts.get(c) for c in self.columns}])[0]

    def assign(self, rows: pd.DataFrame | list[dict[str, Any]]) -> list[str]:
        """Each row's segment from its RFM order facts (``days_since_last``, ``frequency``,
        ``total_spend``); a missing or bad fact is a ValueError naming the column and row."""
        facts = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        for c in self.columns:
            if c not in facts.columns:
                raise ValueError(f"RFM facts: column '{c}': required column is missing")
        numeric = facts[self.columns].apply(pd.to_numeric, errors="coerce")
        z = (rfm_matrix(numeric) - self._mean) / self._scale
        d = ((z[:, None, :] - self._centroids[None, :, :]) ** 2).sum(axis=2)
        return [self.names[i] for i in d.argmin(axis=1)]
