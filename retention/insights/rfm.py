"""Recency, frequency and monetary value per customer at a cut-off, and what happened after it.

The table is the LTV model's own order facts (``retention.models.ltv.rfm_features``: the same
names serving receives as ``customer_facts``), so the LTV model values every row as it is and a
customer sending order facts at serving can be placed in a segment from the same three columns.
The churn label is observed, not predicted: no order in the ``window_days`` after the cut-off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from retention.models.ltv import rfm_features

DAY = pd.Timedelta(days=1)
# The three RFM columns, by the order-fact names the LTV model and serving use.
RECENCY, FREQUENCY, MONETARY = "days_since_last", "frequency", "total_spend"
RFM = (RECENCY, FREQUENCY, MONETARY)


@dataclass(frozen=True)
class RfmTable:
    cutoff: pd.Timestamp
    window_days: int
    facts: pd.DataFrame  # one row per customer seen before the cut-off (LTV order facts)
    churned: pd.Series  # True: no order in the window after the cut-off
    revenue_after: pd.Series  # what each customer spent in that window


def cutoff_for(orders: pd.DataFrame, date: str, window_days: int) -> pd.Timestamp:
    """The latest cut-off whose churn window still lies inside the log."""
    if orders.empty:
        raise ValueError("orders: the order log is empty; no RFM table can be made")
    return orders[date].max() + DAY - window_days * DAY


def rfm_table(orders: pd.DataFrame, cid: str, date: str, amount: str, window_days: int) -> RfmTable:
    for col in (cid, date, amount):
        if col not in orders.columns:
            raise ValueError(f"orders: column '{col}': required column is missing")
    cutoff = cutoff_for(orders, date, window_days)
    facts = rfm_features(orders, cutoff, cid, date, amount)
    if facts.empty:
        raise ValueError(f"orders: no customer has an order before the cut-off {cutoff.date()}")
    after = orders[(orders[date] >= cutoff) & (orders[date] < cutoff + window_days * DAY)]
    spent = after.groupby(cid)[amount].sum().reindex(facts.index).fillna(0.0)
    bought = after.groupby(cid).size().reindex(facts.index).fillna(0)
    return RfmTable(cutoff, window_days, facts, bought.eq(0), spent)


def rfm_matrix(facts: pd.DataFrame) -> np.ndarray:
    """The clustering space: log1p of recency, frequency + 1 (order days) and monetary value.

    RFM values are heavily right-skewed; on the raw scale k-means would split the few biggest
    spenders and lump everyone else together.
    """
    missing = [c for c in RFM if c not in facts.columns]
    if missing:
        raise ValueError(f"RFM facts: missing column(s) {', '.join(missing)}")
    x = facts[list(RFM)].to_numpy(float)
    bad = ~np.isfinite(x) | (x < 0)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"RFM facts: column '{RFM[col]}': row {int(row)}: expected a finite number >= 0, "
            f"got {x[row, col]!r}"
        )
    x[:, 1] += 1.0  # repeat purchases -> order days
    return np.log1p(x)
