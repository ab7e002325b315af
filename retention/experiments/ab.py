"""A/B assignment and the A/B report: does the learned policy retain more customers than it costs?

Assignment hashes the customer id with a salt, so every replica, every process and every later
analysis puts a customer in the same arm without sharing state, and a new salt reshuffles everyone
for the next experiment.

The report compares the arms on an outcomes table (one row per customer in the experiment):

- retention uplift (treatment - control) with Newcombe's hybrid score interval (method 10 of
  Newcombe 1998: Wilson intervals of each rate combined), which keeps its coverage near 0 and 1
  where the plain normal (Wald) interval does not;
- incremental revenue and spend per customer, difference of means with a Welch normal interval
  (revenue = ``value`` of retained customers, 0 otherwise; spend = ``offer_cost``);
- ROI = (incremental revenue - incremental spend) / incremental spend, with a percentile bootstrap
  interval resampling customers within each arm (a ratio has no trustworthy closed-form interval).
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from retention.config import DatasetSpec, ExperimentConfig
from retention.data.validate import DataValidationError, coerce_column, parse_table
from retention.fileio import read_bytes

ARMS = ("treatment", "control")
COLUMNS = ("customer_id", "arm", "contacted", "offer_cost", "retained", "value")
_BOOL_WORDS = {"true": 1, "false": 0, "yes": 1, "no": 0}
_MAX_BOOT_CELLS = 4_000_000  # resample indices held at once: bounds memory for large arms


def assign_arm(customer_id: str, cfg: ExperimentConfig) -> str:
    """``treatment`` or ``control`` for this customer: the same answer in every process, forever.

    sha256 of ``"{salt}:{customer_id}"``; its first 8 bytes read as a uniform number in [0, 1).
    """
    if not isinstance(customer_id, str) or not customer_id:
        raise ValueError(f"customer_id: expected a non-empty string, got {customer_id!r}")
    digest = hashlib.sha256(f"{cfg.salt}:{customer_id}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    return "treatment" if u < cfg.treatment_share else "control"


# ------------------------------------------------------------------------------------- report


class Interval(BaseModel):
    """A point estimate and its confidence interval; None where the quantity is undefined."""

    model_config = ConfigDict(extra="forbid")

    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    method: str


class ArmSummary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    n: int
    contacted_rate: float
    retained: int
    retention_rate: float
    retention_ci: tuple[float, float]
    spend: float
    spend_per_customer: float
    revenue: float
    revenue_per_customer: float


class ABReport(BaseModel):
    """Everything the report says, JSON-serialisable with ``model_dump(mode="json")``."""

    model_config = ConfigDict(extra="forbid")

    source: str
    confidence: float
    arms: dict[str, ArmSummary]
    retention_uplift: Interval
    incremental_revenue_per_customer: Interval
    incremental_spend_per_customer: Interval
    incremental_net_per_customer: Interval
    roi: Interval
    bootstrap_resamples: int
    seed: int
    notes: list[str]

    def format_table(self) -> str:
        """A plain-text summary for a terminal."""
        pct = f"{self.confidence:.0%} CI"
        lines = [
            f"A/B report: {self.source}",
            "",
            f"{'arm':<10} {'n':>8} {'contacted':>10} {'retention':>10} {'spend/cust':>11} "
            f"{'revenue/cust':>13}",
        ]
        for name in ARMS:
            a = self.arms[name]
            lines.append(
                f"{name:<10} {a.n:>8} {a.contacted_rate:>10.1%} {a.retention_rate:>10.1%} "
                f"{a.spend_per_customer:>11.2f} {a.revenue_per_customer:>13.2f}"
            )
        lines += ["", f"{'treatment - control':<34} {'estimate':>10}   {pct}"]
        u = self.retention_uplift
        lines.append(
            f"{'retention uplift (pp)':<34} {_num(u.estimate, 100, '+.2f'):>10}   "
            f"[{_num(u.ci_low, 100, '+.2f')}, {_num(u.ci_high, 100, '+.2f')}]"
        )
        for label, iv in (
            ("revenue per customer", self.incremental_revenue_per_customer),
            ("spend per customer", self.incremental_spend_per_customer),
            ("net value per customer", self.incremental_net_per_customer),
            ("ROI", self.roi),
        ):
            lines.append(
                f"{label:<34} {_num(iv.estimate, 1, '+.3f'):>10}   "
                f"[{_num(iv.ci_low, 1, '+.3f')}, {_num(iv.ci_high, 1, '+.3f')}]"
            )
        lines += ["", f"uplift: {u.method}", f"ROI: {self.roi.method}"]
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)


def _num(x: float | None, scale: float, fmt: str) -> str:
    return "n/a" if x is None or not math.isfinite(x) else format(x * scale, fmt)


def _z(confidence: float) -> float:
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion."""
    if n <= 0:
        raise ValueError("n must be positive")
    z = _z(confidence)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17.
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def newcombe_difference(
    x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95
) -> tuple[float, float, float]:
    """p1 - p2 with Newcombe's hybrid score interval (1998, method 10): (estimate, low, high)."""
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson_interval(x1, n1, confidence)
    l2, u2 = wilson_interval(x2, n2, confidence)
    d = p1 - p2
    return (
        d,
        d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2),
        d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2),
    )


def _welch(a: np.ndarray, b: np.ndarray, confidence: float, what: str) -> Interval:
    d = float(a.mean() - b.mean())
    var = (a.var(ddof=1) if len(a) > 1 else 0.0) / len(a)
    var += (b.var(ddof=1) if len(b) > 1 else 0.0) / len(b)
    half = _z(confidence) * math.sqrt(var)
    return Interval(
        estimate=d,
        ci_low=d - half,
        ci_high=d + half,
        method=f"difference of mean {what} per customer, Welch normal approximation",
    )


def _boot_means(x: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Column means of ``resamples`` bootstrap resamples of the rows of ``x``: (resamples, k)."""
    n = len(x)
    out = np.empty((resamples, x.shape[1]))
    step = max(1, _MAX_BOOT_CELLS // n)
    for s in range(0, resamples, step):
        m = min(step, resamples - s)
        idx = rng.integers(0, n, size=(m, n))
        for j in range(x.shape[1]):
            out[s : s + m, j] = x[:, j][idx].mean(axis=1)
    return out


def _roi(d_rev: np.ndarray | float, d_spend: np.ndarray | float) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (np.asarray(d_rev, float) - d_spend) / d_spend
    return np.where(np.asarray(d_spend) > 0, r, np.nan)


# ----------------------------------------------------------------------------------- reading


def _first_row(mask: pd.Series) -> int:
    """1-based data row of the first True in ``mask`` (nullable booleans count NA as False)."""
    return int(np.flatnonzero(mask.fillna(False).to_numpy(dtype=bool))[0]) + 1


def _flag(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    s = df[col]
    if s.dtype == bool:
        return s.astype(int)
    if s.dtype == object:
        s = s.map(lambda v: _BOOL_WORDS.get(v.strip().lower(), v) if isinstance(v, str) else v)
        s = coerce_column(s.to_frame(col), col, "number", source)
    bad = s.isna() | ~s.isin([0, 1])
    if bad.any():
        row = _first_row(bad)
        raise DataValidationError(
            source, f"expected 0 or 1, got {df[col].iloc[row - 1]!r}", column=col, rows=[row]
        )
    return s.astype(int)


def _amount(df: pd.DataFrame, col: str, source: str) -> pd.Series:
    s = df[col] if df[col].dtype != object else coerce_column(df, col, "number", source)
    s = pd.to_numeric(s, errors="coerce")
    bad = s.isna() | ~np.isfinite(s) | (s < 0)
    if bad.any():
        row = _first_row(bad)
        raise DataValidationError(
            source,
            f"expected a finite amount >= 0, got {df[col].iloc[row - 1]!r}",
            column=col,
            rows=[row],
        )
    return s.astype(float)


def read_outcomes(outcomes: pd.DataFrame | str | Path) -> tuple[pd.DataFrame, str]:
    """The validated outcomes table and its name for messages; CSV or Parquet by extension.

    Errors name the file, the column and the first bad row (1-based data row; line = row + 1).
    """
    if isinstance(outcomes, pd.DataFrame):
        source, raw = "outcomes", outcomes.reset_index(drop=True)
    else:
        source = str(outcomes)
        raw = parse_table(read_bytes(source), source, DatasetSpec(uri=source))
        raw.columns = [str(c).strip() for c in raw.columns]
    if raw.empty:
        raise DataValidationError(source, "no data rows")
    missing = [c for c in COLUMNS if c not in raw.columns]
    if missing:
        raise DataValidationError(
            source,
            f"missing (need {', '.join(COLUMNS)}; found {', '.join(map(str, raw.columns))})",
            column=missing[0],
        )
    ids = raw["customer_id"].astype("string").str.strip()
    blank = ids.isna() | (ids == "")
    if blank.any():
        row = _first_row(blank)
        raise DataValidationError(source, "empty customer id", column="customer_id", rows=[row])
    dup = ids.duplicated()
    if dup.any():
        row = _first_row(dup)
        raise DataValidationError(
            source,
            f"customer {ids.iloc[row - 1]!r} appears twice (one row per customer)",
            column="customer_id",
            rows=[row],
        )
    arm = raw["arm"].astype("string").str.strip().str.lower()
    bad = ~arm.isin(ARMS).fillna(False)
    if bad.any():
        row = _first_row(bad)
        raise DataValidationError(
            source,
            f"expected treatment or control, got {raw['arm'].iloc[row - 1]!r}",
            column="arm",
            rows=[row],
        )
    df = pd.DataFrame(
        {
            "customer_id": ids,
            "arm": arm.astype(str),
            "contacted": _flag(raw, "contacted", source),
            "offer_cost": _amount(raw, "offer_cost", source),
            "retained": _flag(raw, "retained", source),
            "value": _amount(raw, "value", source),
        }
    )
    for name in ARMS:
        if not (df["arm"] == name).any():
            raise DataValidationError(source, f"no {name} rows: both arms are needed", column="arm")
    return df, source


# ------------------------------------------------------------------------------------ report


def ab_report(
    outcomes: pd.DataFrame | str | Path,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> ABReport:
    """Compare the arms of an experiment (see the module docstring for the estimators)."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected 0 < confidence < 1, got {confidence!r}")
    if resamples < 100:
        raise ValueError(f"resamples: at least 100 for a percentile interval, got {resamples}")
    df, source = read_outcomes(outcomes)
    df["revenue"] = df["value"] * df["retained"]
    arms: dict[str, ArmSummary] = {}
    data: dict[str, pd.DataFrame] = {}
    for name in ARMS:
        g = df[df["arm"] == name]
        data[name] = g
        n, kept = len(g), int(g["retained"].sum())
        arms[name] = ArmSummary(
            n=n,
            contacted_rate=float(g["contacted"].mean()),
            retained=kept,
            retention_rate=kept / n,
            retention_ci=wilson_interval(kept, n, confidence),
            spend=float(g["offer_cost"].sum()),
            spend_per_customer=float(g["offer_cost"].mean()),
            revenue=float(g["revenue"].sum()),
            revenue_per_customer=float(g["revenue"].mean()),
        )
    t, c = arms["treatment"], arms["control"]
    d, lo, hi = newcombe_difference(t.retained, t.n, c.retained, c.n, confidence)
    uplift = Interval(
        estimate=d,
        ci_low=lo,
        ci_high=hi,
        method="difference of retention rates, Newcombe hybrid score interval (Wilson per arm)",
    )
    tr, co = data["treatment"], data["control"]
    d_rev = _welch(tr["revenue"].to_numpy(), co["revenue"].to_numpy(), confidence, "revenue")
    d_spend = _welch(tr["offer_cost"].to_numpy(), co["offer_cost"].to_numpy(), confidence, "spend")
    d_net = _welch(
        (tr["revenue"] - tr["offer_cost"]).to_numpy(),
        (co["revenue"] - co["offer_cost"]).to_numpy(),
        confidence,
        "revenue minus spend",
    )

    rng = np.random.default_rng(seed)
    cols = ["revenue", "offer_cost"]
    boot_t = _boot_means(tr[cols].to_numpy(float), resamples, rng)
    boot_c = _boot_means(co[cols].to_numpy(float), resamples, rng)
    boot_rev, boot_spend = (boot_t - boot_c).T
    boot_roi = _roi(boot_rev, boot_spend)
    point = float(_roi(d_rev.estimate, d_spend.estimate))
    finite = boot_roi[np.isfinite(boot_roi)]
    notes: list[str] = []
    alpha = 1 - confidence
    if math.isfinite(point) and len(finite) >= 0.5 * resamples:
        low, high = (float(q) for q in np.quantile(finite, [alpha / 2, 1 - alpha / 2]))
    else:
        low = high = None
    if not math.isfinite(point):
        notes.append("ROI undefined: treatment does not spend more per customer than control")
    share_bad = 1 - len(finite) / resamples
    if math.isfinite(point) and share_bad > alpha / 2:
        notes.append(
            f"incremental spend was <= 0 in {share_bad:.1%} of resamples: the ROI interval is "
            "unreliable (too little spend difference to divide by)"
        )
    roi = Interval(
        estimate=point if math.isfinite(point) else None,
        ci_low=low,
        ci_high=high,
        method=(
            "(incremental revenue - incremental spend) / incremental spend; percentile bootstrap, "
            f"{resamples} resamples of customers within each arm, seed {seed}"
        ),
    )
    if lo <= 0 <= hi:
        notes.append("the retention uplift interval includes 0: no significant effect")
    return ABReport(
        source=source,
        confidence=confidence,
        arms=arms,
        retention_uplift=uplift,
        incremental_revenue_per_customer=d_rev,
        incremental_spend_per_customer=d_spend,
        incremental_net_per_customer=d_net,
        roi=roi,
        bootstrap_resamples=resamples,
        seed=seed,
        notes=notes,
    )
