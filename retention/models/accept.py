"""train-accept: P(accept | customer, offer level 0–3), monotone non-decreasing in the offer level.

Every member of the trainer's ensemble is non-decreasing in ``offer_level``: XGBoost's and
LightGBM's monotone constraints, and the linear member takes the level as its value alone with a
coefficient bounded below by 0. The blend weights are non-negative, so the blended margin keeps
that order, and the calibrators (isotonic, Platt with a positive slope) are non-decreasing maps,
so the calibrated probability keeps it too: a bigger discount never lowers acceptance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from retention.config import Profile
from retention.data.split import read_split
from retention.models.binary import BinaryModel, Columns, train_binary
from retention.models.outputs import save_outputs
from retention.results import AcceptResult

OFFER = "offer_level"
LEVELS = (0, 1, 2, 3)
MONOTONE = {OFFER: 1}


def bank_marketing_adapter(df: pd.DataFrame) -> pd.DataFrame:
    """UCI Bank Marketing → the offer table.

    ``duration`` is dropped: it is only known after the call and leaks the outcome. The data has no
    explicit offer, so the offer level is derived from the bank's campaign intensity towards the
    client before this call: the number of earlier-campaign contacts (``previous``) capped at 3.
    More prior effort goes with more acceptance in the data (8.8 % at 0, 21 % at 1, 46 % at 2,
    59 % at 3+), the direction the monotone constraint encodes. ``previous`` itself is replaced by
    the level so the model cannot bypass the constraint through a copy of it.
    """
    out = df.drop(columns=[c for c in ("duration",) if c in df.columns]).copy()
    if "previous" not in out.columns:
        raise KeyError("bank marketing table lacks the 'previous' column needed for offer_level")
    out[OFFER] = np.minimum(pd.to_numeric(out["previous"]), 3).astype(int)
    if "pdays" in out.columns:
        # 999 is the file's sentinel for "never contacted before", not a number of days.
        pdays = pd.to_numeric(out["pdays"], errors="coerce")
        out["pdays"] = pdays.where(pdays != 999)
    return out.drop(columns=["previous"])


def columns_for(profile: Profile) -> Columns:
    spec = profile.data.offers
    if not spec.target:
        raise ValueError("data.offers needs a target column for the accept model")
    return Columns(target=spec.target, id_column=spec.id_column)


def acceptance_curve(model: BinaryModel, customers: pd.DataFrame) -> np.ndarray:
    """Calibrated P(accept) for every customer at each offer level: shape (n, 4).

    The customers are prepared once; each row is repeated at every level, so the four levels of a
    customer are four consecutive rows of one prediction (``curve_of_rows``)."""
    return curve_of_rows(model, model.pre.transform(customers.assign(**{OFFER: LEVELS[0]})))


def curve_of_rows(model: BinaryModel, x: np.ndarray) -> np.ndarray:
    """The acceptance curve of rows already prepared for ``model`` (their offer level ignored)."""
    at = model.pre.features.index(OFFER)
    levels = np.repeat(x, len(LEVELS), axis=0)
    levels[:, at] = np.tile(np.asarray(LEVELS, dtype=np.float32), len(x))
    return model.proba_matrix(levels).reshape(len(x), len(LEVELS))


def train_accept(profile: Profile, split_dir: str | Path, out_dir: str | Path) -> AcceptResult:
    parts = [read_split(split_dir, "offers", p) for p in ("train", "valid", "test")]
    if OFFER not in parts[0].columns:
        raise KeyError(f"data.offers has no '{OFFER}' column (use bank_marketing_adapter)")
    model, result, curves = train_binary(
        *parts,
        columns_for(profile),
        profile.accept,
        profile.seed,
        monotone=MONOTONE,
        result=AcceptResult,
    )
    curve = acceptance_curve(model, parts[2])
    result.monotone_violations = int((np.diff(curve, axis=1) < -1e-9).sum())
    result.details["mean_accept_by_level"] = curve.mean(axis=0).round(4).tolist()
    save_outputs(out_dir, model, result, curves)
    return result
