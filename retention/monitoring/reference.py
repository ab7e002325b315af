"""A release's training reference: what the monitor compares the served traffic with.

Built at registration from the run's splits and the released risk model: every feature of the
risk model summarised on the training split (``drift.summarise_*``), the model's calibrated
scores on the held-out rows (valid + test: scores on rows it was fitted on are overconfident,
and serving scores rows it never saw), the churn rate and the held-out AUC, ECE and Brier. It is
stored in the model store beside the release (``reference/<release>.json``), small and
self-contained: the monitor needs neither the training data nor the run's artifacts again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from retention.config import MonitoringConfig, Profile
from retention.data.split import read_split
from retention.models.binary import BinaryModel
from retention.models.metrics import binary_metrics
from retention.models.outputs import MODEL_DIR
from retention.monitoring.drift import numeric_values, summarise_categorical, summarise_numeric

FORMAT = "retention.reference/v1"
SCORE = "churn_probability"  # the served risk score, as the decision log names it


def reference_key(release: str) -> str:
    return f"reference/{release}.json"


def build_reference(
    train: pd.DataFrame,
    numeric: list[str],
    categorical: list[str],
    scores: np.ndarray,
    labels: np.ndarray,
    cfg: MonitoringConfig,
    seed: int = 0,
) -> dict[str, Any]:
    """The reference of ``train``'s features and of held-out ``scores`` with their ``labels``."""
    features: dict[str, Any] = {}
    for i, col in enumerate(numeric):
        features[col] = summarise_numeric(
            numeric_values(train[col]), cfg.bins, cfg.reference_sample, seed + i
        )
    for col in categorical:
        features[col] = summarise_categorical(train[col])
    labels = np.asarray(labels, dtype=float)
    return {
        "format": FORMAT,
        "rows": len(train),
        "features": features,
        "score": summarise_numeric(np.asarray(scores, float), cfg.bins, cfg.reference_sample, seed),
        "positive_rate": float(labels.mean()),
        "heldout": binary_metrics(labels, scores) if len(set(labels)) == 2 else {},
    }


def reference_for_release(profile: Profile, splits_dir: str | Path, risk_dir: str | Path) -> dict:
    """The reference of a trained risk model (its trainer's folder or its ``model/``)."""
    risk_dir = Path(risk_dir)
    model = BinaryModel.load(risk_dir / MODEL_DIR if (risk_dir / MODEL_DIR).is_dir() else risk_dir)
    train = read_split(splits_dir, "customers", "train")
    heldout = pd.concat(
        [read_split(splits_dir, "customers", p) for p in ("valid", "test")], ignore_index=True
    )
    ref = build_reference(
        train,
        model.pre.numeric,
        list(model.pre.categorical),
        model.predict_proba(heldout),
        heldout[model.columns.target].to_numpy(dtype=float),
        profile.monitoring,
        profile.seed,
    )
    ref["target"] = model.columns.target
    ref["id_column"] = model.columns.id_column
    return ref
