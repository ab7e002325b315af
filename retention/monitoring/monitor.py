"""``retention monitor``: what is served against what the release was trained on, and a verdict.

Inputs (each a CSV/Parquet file, ``gs://``, ``https://`` or ``bq://project.dataset.table``):

* the **decision log**: one row per decision, with ``customer_id``, ``decided_at``,
  ``churn_probability`` (the served risk score) and ``release`` (the production release that
  decided); any of the risk model's feature columns it also has are compared too;
* a **data batch** (optional): new customer rows with the risk model's features;
* **outcomes** (optional): ``customer_id`` and ``churned`` (or ``retained``), joined to each
  customer's last decision; with ``arm``, ``contacted``, ``offer_cost`` and ``value`` as well (the
  A/B report's columns), the policy's realised ROI is set against its estimate.

It computes PSI and KS of every feature and of the score against the release's reference
(``retention.monitoring.reference``), AUC, ECE, Brier and the churn rate over rolling windows of
``monitoring.window_days``, and judges the rules of ``monitoring`` (the source document's
retraining criteria by default). Each rule says whether it fired and why; the verdict is
``retrain`` when any did.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field
from scipy import stats
from sklearn.metrics import brier_score_loss, roc_auc_score

from retention.config import MonitoringConfig
from retention.data.validate import DataValidationError
from retention.models.metrics import calibration_curve, ece
from retention.monitoring.drift import ColumnDrift, column_drift
from retention.monitoring.reference import FORMAT, SCORE

LOG_COLUMNS = ("customer_id", "decided_at", SCORE, "release")
_TRUE = {"1", "1.0", "true", "yes", "y", "t"}
_FALSE = {"0", "0.0", "false", "no", "n", "f"}
AB_COLUMNS = ("arm", "contacted", "offer_cost", "value")


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    fired: bool
    detail: str
    value: float | None = None
    threshold: float | None = None
    features: list[str] = Field(default_factory=list, description="drift: what drifted")


class Window(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str
    end: str
    rows: int
    churn_rate: float | None = None
    auc: float | None = None
    ece: float | None = None
    brier: float | None = None
    judged: bool = False


class MonitorReport(BaseModel):
    """Everything ``retention monitor`` measured and judged; ``retrain`` is the verdict."""

    model_config = ConfigDict(extra="forbid")

    release: str
    generated: str
    sources: dict[str, str]
    decisions: int
    unscored: int = Field(default=0, description="decisions without a score: risk was down")
    batch_rows: int | None = None
    outcomes: int | None = None
    release_age_days: float | None = None
    features: list[dict[str, Any]] = Field(default_factory=list)
    score: dict[str, Any] | None = None
    windows: list[Window] = Field(default_factory=list)
    recent: Window | None = None
    calibration: dict[str, list[float]] | None = None
    reference: dict[str, Any] = Field(default_factory=dict)
    policy: dict[str, Any] | None = None
    rules: list[Rule]
    retrain: bool
    fired: list[str]

    def summary(self) -> str:
        lines = [
            f"release {self.release}: {self.decisions} decisions"
            + (f" (and {self.unscored} without a score)" if self.unscored else "")
            + (f", {self.batch_rows} batch rows" if self.batch_rows is not None else "")
            + (f", {self.outcomes} outcomes" if self.outcomes is not None else "")
        ]
        for r in self.rules:
            lines.append(f"  {'FIRED' if r.fired else 'ok   '} {r.name:<13} {r.detail}")
        lines.append(
            "verdict: retrain (" + ", ".join(self.fired) + ")" if self.retrain else "verdict: keep"
        )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------- inputs


def check_reference(reference: dict[str, Any], source: str) -> None:
    if reference.get("format") != FORMAT:
        raise ValueError(f"{source}: not a training reference (format {reference.get('format')!r})")


def decision_log(df: pd.DataFrame, source: str, release: str) -> pd.DataFrame:
    """The log validated: its columns, one release, scores in [0, 1], times; rows by time."""
    for col in LOG_COLUMNS:
        if col not in df.columns:
            raise DataValidationError(
                source,
                f"required column is missing (a decision log has {', '.join(LOG_COLUMNS)}; "
                f"found {', '.join(map(str, df.columns))})",
                column=col,
            )
    if df.empty:
        raise DataValidationError(source, "no decisions in the log")
    out = df.reset_index(drop=True).copy()
    other = out["release"].astype(str) != release
    if other.any():
        first = int(np.flatnonzero(other.to_numpy())[0])
        raise DataValidationError(
            source,
            f"decided by release {out['release'].iloc[first]!r}, but the monitor checks "
            f"release {release!r} (its training reference): monitor each release with its "
            "own log (--release)",
            column="release",
            rows=[first + 1],
        )
    out["customer_id"] = out["customer_id"].astype(str)
    # A decision made while the risk model was down has no score (the contact ledger's export
    # leaves it empty): there is nothing of the model's to judge in it. Rows keep their numbers
    # in the file until the checks are done.
    scored = out[SCORE].notna()
    if not scored.any():
        raise DataValidationError(source, "no decision in the log has a score", column=SCORE)
    score = pd.to_numeric(out[SCORE], errors="coerce")
    bad = scored & (score.isna() | (score < 0) | (score > 1))
    if bad.any():
        raise DataValidationError(
            source,
            "expected a probability between 0 and 1",
            column=SCORE,
            rows=(np.flatnonzero(bad.to_numpy()) + 1).tolist(),
        )
    out[SCORE] = score.astype(float)
    when = pd.to_datetime(out["decided_at"], errors="coerce", utc=True, format="mixed")
    if when.isna().any():
        raise DataValidationError(
            source,
            "expected a date-time",
            column="decided_at",
            rows=(np.flatnonzero(when.isna().to_numpy()) + 1).tolist(),
        )
    out["decided_at"] = when
    out = out[scored.to_numpy()]
    return out.sort_values("decided_at", kind="stable").reset_index(drop=True)


def feature_frame(
    df: pd.DataFrame, source: str, reference: dict[str, Any], required: bool
) -> pd.DataFrame | None:
    """The reference's feature columns of ``df``; a missing one is an error when ``required``
    (a data batch), else the frame is not used for feature drift (a log without features)."""
    names = list(reference["features"])
    missing = [c for c in names if c not in df.columns]
    if missing and required:
        raise DataValidationError(
            source,
            f"required column is missing (the release's risk model reads {', '.join(names)})",
            column=missing[0],
        )
    if missing:
        return None
    if df.empty:
        raise DataValidationError(source, "no rows")
    return df[names]


def _flag(s: pd.Series, source: str, column: str, true: set[str], false: set[str]) -> pd.Series:
    text = s.astype(str).str.strip().str.lower()
    yes, no = text.isin(true), text.isin(false)
    bad = ~(yes | no)
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataValidationError(
            source,
            f"expected yes/no (1/0, true/false), got {str(s.iloc[first])[:40]!r}",
            column=column,
            rows=[first + 1],
        )
    return yes.astype(int)


def outcomes_frame(df: pd.DataFrame, source: str) -> pd.DataFrame:
    """``customer_id`` and ``churned`` (0/1), from ``churned`` or ``retained``; the A/B
    columns kept when all are present."""
    if "customer_id" not in df.columns:
        raise DataValidationError(source, "required column is missing", column="customer_id")
    if "churned" in df.columns:
        churned = _flag(df["churned"], source, "churned", _TRUE, _FALSE)
    elif "retained" in df.columns:
        churned = 1 - _flag(df["retained"], source, "retained", _TRUE, _FALSE)
    else:
        raise DataValidationError(
            source,
            "required column is missing (outcomes need 'churned' or 'retained' per customer)",
            column="churned",
        )
    out = pd.DataFrame({"customer_id": df["customer_id"].astype(str), "churned": churned})
    for col in AB_COLUMNS:
        if col in df.columns:
            out[col] = df[col].to_numpy()
    dup = out["customer_id"].duplicated()
    if dup.any():
        raise DataValidationError(
            source,
            "a customer has more than one outcome",
            column="customer_id",
            rows=(np.flatnonzero(dup.to_numpy()) + 1).tolist(),
        )
    return out


# ----------------------------------------------------------------------------------- measures


def _window(frame: pd.DataFrame, start, end, cfg: MonitoringConfig) -> Window:
    y = frame["churned"].to_numpy(dtype=float)
    p = frame[SCORE].to_numpy(dtype=float)
    w = Window(start=start.isoformat(), end=end.isoformat(), rows=len(frame))
    if len(frame):
        w.churn_rate = float(y.mean())
        w.ece = ece(y, p)
        w.brier = float(brier_score_loss(y, p))
        if 0 < y.sum() < len(y):
            w.auc = float(roc_auc_score(y, p))
        w.judged = len(frame) >= cfg.min_window_rows and w.auc is not None
    return w


def rolling_windows(joined: pd.DataFrame, cfg: MonitoringConfig) -> list[Window]:
    """Windows of ``window_days`` ending at the last decision, oldest first."""
    if joined.empty:
        return []
    step = timedelta(days=cfg.window_days)
    end = joined["decided_at"].max() + timedelta(microseconds=1)
    first = joined["decided_at"].min()
    out = []
    while end > first:
        start = end - step
        part = joined[(joined["decided_at"] >= start) & (joined["decided_at"] < end)]
        out.append(_window(part, start, end, cfg))
        end = start
    return out[::-1]


def policy_value(joined: pd.DataFrame, estimate: float | None, seed: int) -> dict[str, Any] | None:
    """The policy's realised ROI (the A/B report on the joined outcomes) against its estimate."""
    if not all(c in joined.columns for c in AB_COLUMNS):
        return None
    from retention.experiments.ab import ab_report

    frame = joined[["customer_id", *AB_COLUMNS]].assign(retained=1 - joined["churned"])
    try:
        report = ab_report(frame, resamples=1000, seed=seed)
    except ValueError as err:  # e.g. one arm only: nothing to compare
        return {"estimate": estimate, "error": str(err)}
    roi = report.model_dump(mode="json").get("roi", {})
    return {"estimate": estimate, "realised_roi": roi}


# ------------------------------------------------------------------------------------ monitor


def run_monitor(
    reference: dict[str, Any],
    release: dict[str, Any],
    decisions: pd.DataFrame,
    cfg: MonitoringConfig,
    *,
    sources: dict[str, str],
    batch: pd.DataFrame | None = None,
    outcomes: pd.DataFrame | None = None,
    now: datetime | None = None,
    seed: int = 0,
) -> MonitorReport:
    """``release``: the registry's entry as a dict (``release``, ``created``, ``metrics``)."""
    now = now or datetime.now(UTC)
    name = str(release["release"])
    check_reference(reference, sources.get("reference", "reference"))
    log = decision_log(decisions, sources["decisions"], name)
    bounds = dict(
        psi_max=cfg.psi_max,
        ks_max=cfg.ks_max,
        ks_alpha=cfg.ks_alpha,
        new_category_max=cfg.new_category_max,
    )
    rules: list[Rule] = []

    # Drift: the batch's features (or the log's, when it carries them) and the served scores.
    feats = None
    if batch is not None:
        feats = feature_frame(batch, sources["batch"], reference, required=True)
    else:
        feats = feature_frame(log, sources["decisions"], reference, required=False)
    drifts: list[ColumnDrift] = []
    if feats is not None:
        drifts = [column_drift(c, reference["features"][c], feats[c], **bounds) for c in feats]
    score = column_drift(SCORE, reference["score"], log[SCORE], **bounds)
    moved = [d for d in [*drifts, score] if d.drifted]
    rules.append(
        Rule(
            name="drift",
            fired=bool(moved),
            detail="; ".join(_describe(d, cfg) for d in moved)
            if moved
            else f"no feature or score past PSI {cfg.psi_max}, KS {cfg.ks_max}, "
            f"unseen levels {cfg.new_category_max:.0%}"
            + ("" if feats is not None else " (scores only: no feature columns given)"),
            value=max((d.psi for d in [*drifts, score]), default=None),
            threshold=cfg.psi_max,
            features=[d.column for d in moved],
        )
    )

    # Outcomes: rolling AUC / ECE / Brier, the churn rate, the policy's value.
    windows: list[Window] = []
    recent = None
    curve = None
    joined = None
    if outcomes is not None:
        outs = outcomes_frame(outcomes, sources["outcomes"])
        last = log.drop_duplicates("customer_id", keep="last")
        ab_from_log = {"contact": "contacted"} if "contact" in last.columns else {}
        last = last.rename(columns=ab_from_log)
        keep = [c for c in AB_COLUMNS if c in outs.columns]
        joined = last.drop(columns=[c for c in keep if c in last.columns]).merge(
            outs, on="customer_id", how="inner"
        )
        if joined.empty:
            raise DataValidationError(
                sources["outcomes"],
                f"no customer in it has a decision in {sources['decisions']}",
                column="customer_id",
            )
        windows = rolling_windows(joined, cfg)
        horizon = joined["decided_at"].max() - timedelta(days=cfg.window_days * cfg.auc_windows)
        pool = joined[joined["decided_at"] > horizon]
        recent = _window(pool, horizon, joined["decided_at"].max(), cfg)
        curve = calibration_curve(pool["churned"].to_numpy(), pool[SCORE].to_numpy())
        rules += _outcome_rules(windows, recent, pool, reference, cfg)
        est = release.get("metrics", {}).get("policy", {}).get("roi")
        policy = policy_value(joined, est, seed)
        if policy and "realised_roi" in policy and est is not None:
            hi = policy["realised_roi"].get("ci_high")
            fired = hi is not None and est > hi
            rules.append(
                Rule(
                    name="policy_value",
                    fired=fired,
                    detail=f"estimated ROI {est:.3f} vs realised "
                    f"{_fmt(policy['realised_roi'].get('estimate'))} (95 % CI up to {_fmt(hi)})",
                    value=policy["realised_roi"].get("estimate"),
                    threshold=est,
                )
            )
    else:
        policy = None

    age = None
    if release.get("created"):
        created = datetime.fromisoformat(str(release["created"]))
        age = (now - created).total_seconds() / 86400
        rules.append(
            Rule(
                name="age",
                fired=age > cfg.max_age_days,
                detail=f"release is {age:.0f} days old (limit {cfg.max_age_days})",
                value=age,
                threshold=cfg.max_age_days,
            )
        )
    fired = [r.name for r in rules if r.fired]
    return MonitorReport(
        release=name,
        generated=now.isoformat(),
        sources=sources,
        decisions=len(log),
        unscored=len(decisions) - len(log),
        batch_rows=None if batch is None else len(batch),
        outcomes=None if joined is None else len(joined),
        release_age_days=age,
        features=[d.to_dict() for d in drifts],
        score=score.to_dict(),
        windows=windows,
        recent=recent,
        calibration=curve,
        reference={
            "positive_rate": reference.get("positive_rate"),
            "heldout": reference.get("heldout", {}),
            "rows": reference.get("rows"),
        },
        policy=policy,
        rules=rules,
        retrain=bool(fired),
        fired=fired,
    )


def _outcome_rules(
    windows: list[Window],
    recent: Window,
    pool: pd.DataFrame,
    reference: dict[str, Any],
    cfg: MonitoringConfig,
) -> list[Rule]:
    out = []
    last = windows[-cfg.auc_windows :]
    judged = len(last) == cfg.auc_windows and all(w.judged for w in last)
    low = judged and all((w.auc or 0.0) < cfg.auc_min for w in last)
    aucs = ", ".join(_fmt(w.auc) for w in last)
    span = cfg.window_days * cfg.auc_windows
    out.append(
        Rule(
            name="auc",
            fired=low,
            detail=(
                f"AUC {aucs} in the last {cfg.auc_windows} windows of {cfg.window_days} days "
                f"({span} days) {'all below' if low else 'against'} {cfg.auc_min}"
                if judged
                else f"not judged: fewer than {cfg.auc_windows} windows with "
                f"{cfg.min_window_rows}+ outcomes of both kinds"
            ),
            value=min((w.auc for w in last if w.auc is not None), default=None),
            threshold=cfg.auc_min,
        )
    )
    enough = recent.rows >= cfg.min_window_rows
    out.append(
        Rule(
            name="calibration",
            fired=enough and (recent.ece or 0.0) > cfg.ece_max,
            detail=f"ECE {_fmt(recent.ece)} over the last {span} days "
            f"({recent.rows} outcomes; limit {cfg.ece_max})"
            if enough
            else f"not judged: {recent.rows} outcomes in the last {span} days",
            value=recent.ece,
            threshold=cfg.ece_max,
        )
    )
    ref_rate = reference.get("positive_rate")
    if ref_rate is not None and enough:
        churned = int(pool["churned"].sum())
        test = stats.binomtest(churned, len(pool), min(max(ref_rate, 1e-6), 1 - 1e-6))
        change = churned / len(pool) - ref_rate
        fired = abs(change) > cfg.churn_rate_max_change and test.pvalue < cfg.ks_alpha
        out.append(
            Rule(
                name="churn_rate",
                fired=fired,
                detail=f"churn rate {churned / len(pool):.3f} against {ref_rate:.3f} in training "
                f"(change {change:+.3f}, limit ±{cfg.churn_rate_max_change}, "
                f"p = {test.pvalue:.2g})",
                value=churned / len(pool),
                threshold=ref_rate,
            )
        )
    return out


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _describe(d: ColumnDrift, cfg: MonitoringConfig) -> str:
    parts = []
    if "psi" in d.drifted:
        parts.append(f"PSI {d.psi:.3f} > {cfg.psi_max}")
    if "ks" in d.drifted:
        parts.append(f"KS {d.ks:.3f} > {cfg.ks_max} (p = {d.ks_pvalue:.2g})")
    if "new_category" in d.drifted:
        levels = ", ".join(f"{k!r} {v:.1%}" for k, v in d.unseen_levels.items())
        parts.append(f"levels training never saw: {levels}")
    if d.mean is not None and d.reference_mean is not None:
        parts.append(f"mean {d.mean:.4g} vs {d.reference_mean:.4g}")
    return f"{d.column}: " + ", ".join(parts)


def report_paths(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    return {"json": out / "report.json", "html": out / "report.html", "prom": out / "monitor.prom"}
