"""train-risk: P(churn) for the customer table, with calibration, cost threshold and SHAP factors."""

from __future__ import annotations

from pathlib import Path

from retention.config import Profile
from retention.data.split import read_split
from retention.models.binary import Columns, train_binary
from retention.models.outputs import save_outputs
from retention.results import RiskResult


def columns_for(profile: Profile) -> Columns:
    spec = profile.data.customers
    if not spec.target:
        raise ValueError("data.customers needs a target column for the risk model")
    exclude = [c for c in (spec.time_column, spec.group_column) if c]
    return Columns(target=spec.target, id_column=spec.id_column, exclude=exclude)


def train_risk(profile: Profile, split_dir: str | Path, out_dir: str | Path) -> RiskResult:
    """Train on the customers split; write ``model/``, ``metrics.json`` and ``curves.json``."""
    parts = [read_split(split_dir, "customers", p) for p in ("train", "valid", "test")]
    model, result, curves = train_binary(
        *parts, columns_for(profile), profile.risk, profile.seed, result=RiskResult
    )
    save_outputs(out_dir, model, result, curves)
    return result
