"""The five predictors, each a ``kserve.Model`` speaking V1 and V2.

Each loads from a directory (the model store's ``production`` version, or the ``/mnt/models``
that KServe's storage initializer fills from the InferenceService's ``storageUri``) and is
``ready`` only once loaded. ``predict`` is async and runs the model in a worker thread, so a slow
model never stalls the server's event loop (a known KServe pain with blocking predict).

Tabular predictors take partial rows: a feature the request lacks is missing (NaN) for the
trees, which handle it natively, and the answer lists the features it had to do without.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput

from serving.protocol import respond, rows_from


def _frame(rows: list[dict[str, Any]], features: list[str]) -> tuple[pd.DataFrame, list[str]]:
    df = pd.DataFrame.from_records(rows)
    missing = [f for f in features if f not in df.columns]
    return df.reindex(columns=features), missing


class _Predictor(Model):
    def __init__(self, name: str, model_dir: str | Path):
        super().__init__(name)
        self.model_dir = Path(model_dir)

    async def predict(self, payload, headers=None, response_headers=None):
        rows = rows_from(payload)
        out = await asyncio.to_thread(self.predict_rows, rows)
        return respond(payload, self.name, out)

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError


class RiskPredictor(_Predictor):
    """P(churn within the period), calibrated, with the top SHAP factors of each row."""

    def load(self) -> bool:
        from retention.models.binary import BinaryModel

        self.model = BinaryModel.load(self.model_dir)
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        df, missing = _frame(rows, self.model.pre.features)
        p = self.model.predict_proba(df)
        factors = self.model.top_factors(df)
        return [
            {"churn_probability": float(pi), "factors": f, "missing_features": missing}
            for pi, f in zip(p, factors, strict=True)
        ]


class AcceptPredictor(_Predictor):
    """P(accept) at all four offer levels in one call."""

    def load(self) -> bool:
        from retention.models.binary import BinaryModel

        self.model = BinaryModel.load(self.model_dir)
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        from retention.models.accept import OFFER, acceptance_curve

        features = [f for f in self.model.pre.features if f != OFFER]
        df, missing = _frame(rows, features)
        curve = acceptance_curve(self.model, df)
        return [
            {"accept_probability": [float(x) for x in c], "missing_features": missing}
            for c in curve
        ]


class PolicyPredictor(_Predictor):
    """The PPO contact policy: action and the probability of each action component."""

    def load(self) -> bool:
        from retention.decision.policy import ExportedPolicy

        self.policy = ExportedPolicy(self.model_dir)
        self.meta = self.policy.meta
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        from retention.decision.env import OBS_NAMES
        from retention.decision.policy import argmax_action, split_probabilities

        obs = []
        for i, r in enumerate(rows):
            vec = r.get("observation") if isinstance(r, dict) else None
            if not isinstance(vec, list) or len(vec) != len(OBS_NAMES):
                raise InvalidInput(
                    f"instances[{i}].observation: expected {len(OBS_NAMES)} numbers "
                    f"({', '.join(OBS_NAMES)})"
                )
            obs.append(vec)
        try:
            x = np.asarray(obs, dtype=np.float32)
        except (TypeError, ValueError) as err:
            raise InvalidInput(f"instances[].observation: not numbers ({err})") from err
        if not np.isfinite(x).all():
            raise InvalidInput("instances[].observation: NaN or infinite values")
        logits = self.policy.logits(x)
        probs = split_probabilities(logits)
        out = []
        for i in range(len(x)):
            a = argmax_action(logits[i])
            p = [float(probs[k][i, a[k]]) for k in range(3)]
            out.append(
                {
                    "contact": int(a[0]),
                    "offer_level": int(a[1]),
                    "followup_index": int(a[2]),
                    "followup_days": int(self.meta["env"]["followup_days"][a[2]]),
                    "action_probability": math.prod(p),
                    "contact_probability": float(probs[0][i, 1]),
                }
            )
        return out


class WriterPredictor(_Predictor):
    """The message writer's raw text; the caller shields it before anything is sent."""

    def __init__(self, name: str, model_dir: str | Path, cache_dir: str | None = None):
        super().__init__(name, model_dir)
        self.cache_dir = cache_dir

    def load(self) -> bool:
        from retention.messaging.writer import MessageWriter

        self.writer = MessageWriter.load(self.model_dir, cache_dir=self.cache_dir)
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        from retention.messaging.shield import safe_facts

        facts, levels = [], []
        for i, r in enumerate(rows):
            if not isinstance(r.get("facts"), dict):
                raise InvalidInput(f"instances[{i}].facts: expected an object")
            level = r.get("offer_level")
            if not isinstance(level, int) or not 0 <= level <= 3:
                raise InvalidInput(f"instances[{i}].offer_level: expected an integer 0-3")
            facts.append(safe_facts(r["facts"])[0])
            levels.append(level)
        return [{"message": m} for m in self.writer.write(facts, levels)]


class PhaseHealthPredictor(_Predictor):
    """Health of each journey phase (one row per phase) and overall."""

    def load(self) -> bool:
        from retention.models.phase_health import load_phase_models

        self.features, self.boosters = load_phase_models(self.model_dir)
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        out = []
        for i, r in enumerate(rows):
            phase = r.get("phase")
            if phase not in self.boosters:
                raise InvalidInput(
                    f"instances[{i}].phase: {phase!r} is not one of {sorted(self.boosters)}"
                )
            x, missing = _frame([r], self.features)
            x = x.apply(pd.to_numeric, errors="coerce").astype(float)
            out.append(
                {
                    "phase": phase,
                    "health": float(self.boosters[phase].predict(x)[0]),
                    "missing_features": missing,
                }
            )
        return out


PREDICTOR_CLASSES = {
    "risk": RiskPredictor,
    "accept": AcceptPredictor,
    "policy": PolicyPredictor,
    "writer": WriterPredictor,
    "phase-health": PhaseHealthPredictor,
}
