"""The predictors, one ``kserve.Model`` class per served model of the catalogue, V1 and V2.

Each class is registered with ``@predictor_for(SERVICE)`` under its catalogue spec's service name;
importing this module fails if a served spec has no class or a class names a service the
catalogue does not serve, so the catalogue and the servable models cannot drift apart.

Each loads from a directory (the model store's ``production`` version of ``spec.name``, or the
``/mnt/models`` that KServe's storage initializer fills from the InferenceService's
``storageUri``) and is ``ready`` only once loaded. ``predict`` is async and runs the model in a
worker thread, so a slow model never stalls the server's event loop (a known KServe pain with
blocking predict).

Tabular predictors take partial rows: a feature the request lacks is missing (NaN) for the
trees, which handle it natively, and the answer lists the features it had to do without.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pandas as pd
from kserve import Model
from kserve.errors import InvalidInput

from retention import catalogue
from retention.catalogue import ModelSpec
from retention.config import Profile
from retention.contract import N_LEVELS, ContactContract
from serving.protocol import respond, rows_from


def _frame(rows: list[dict[str, Any]], features: list[str]) -> tuple[pd.DataFrame, list[str]]:
    df = pd.DataFrame.from_records(rows)
    missing = [f for f in features if f not in df.columns]
    return df.reindex(columns=features), missing


class Predictor(Model):
    """A served model: its name is its catalogue service, its files one model-store folder."""

    service: ClassVar[str]

    def __init__(self, model_dir: str | Path):
        super().__init__(self.service)
        self.model_dir = Path(model_dir)

    @classmethod
    def spec(cls) -> ModelSpec:
        return catalogue.by_service(cls.service)

    @classmethod
    def from_profile(cls, profile: Profile, model_dir: str | Path) -> Predictor:
        """The predictor as the profile configures it (unloaded)."""
        return cls(model_dir)

    async def predict(self, payload, headers=None, response_headers=None):
        rows = rows_from(payload)
        out = await asyncio.to_thread(self.predict_rows, rows)
        return respond(payload, self.name, out)

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError


_P = TypeVar("_P", bound=type[Predictor])
_REGISTRY: dict[str, type[Predictor]] = {}


def predictor_for(service: str) -> Callable[[_P], _P]:
    """Register a class as the predictor of the catalogue's served model ``service``."""
    catalogue.by_service(service)  # an unknown service is a KeyError naming the known ones

    def register(cls: _P) -> _P:
        if service in _REGISTRY:
            raise ValueError(
                f"predictor {service!r}: both {_REGISTRY[service].__name__} and "
                f"{cls.__name__} are registered for it"
            )
        cls.service = service
        _REGISTRY[service] = cls
        return cls

    return register


def check_complete(registry: Mapping[str, type[Predictor]]) -> None:
    """Every served spec has exactly one predictor class, and no class serves anything else."""
    catalogue.require_exactly(
        "predictor classes for the served specs", registry, catalogue.services()
    )


def predictor_class(service: str) -> type[Predictor]:
    try:
        return _REGISTRY[service]
    except KeyError:
        raise KeyError(
            f"unknown predictor {service!r} (known: {', '.join(catalogue.services())})"
        ) from None


def predictor_classes() -> dict[str, type[Predictor]]:
    """Service name -> class, in catalogue order."""
    return {s: _REGISTRY[s] for s in catalogue.services()}


class BinaryPredictor(Predictor):
    """A :class:`retention.models.binary.BinaryModel` saved by its trainer."""

    def load(self) -> bool:
        from retention.models.binary import BinaryModel

        self.model = BinaryModel.load(self.model_dir)
        self.ready = True
        return self.ready


@predictor_for("risk")
class RiskPredictor(BinaryPredictor):
    """P(churn within the period), calibrated, with the top SHAP factors of each row."""

    def predict_rows(self, rows):
        df, missing = _frame(rows, self.model.pre.features)
        p = self.model.predict_proba(df)
        factors = self.model.top_factors(df)
        return [
            {"churn_probability": float(pi), "factors": f, "missing_features": missing}
            for pi, f in zip(p, factors, strict=True)
        ]


@predictor_for("accept")
class AcceptPredictor(BinaryPredictor):
    """P(accept) at every offer level in one call."""

    def predict_rows(self, rows):
        from retention.models.accept import OFFER, acceptance_curve

        features = [f for f in self.model.pre.features if f != OFFER]
        df, missing = _frame(rows, features)
        curve = acceptance_curve(self.model, df)
        return [
            {"accept_probability": [float(x) for x in c], "missing_features": missing}
            for c in curve
        ]


@predictor_for("policy")
class PolicyPredictor(Predictor):
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
            p = [float(probs[k][i, a[k]]) for k in range(len(probs))]
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


@predictor_for("writer")
class WriterPredictor(Predictor):
    """The message writer's raw text; the caller shields it before anything is sent."""

    def __init__(
        self, model_dir: str | Path, contract: ContactContract, cache_dir: str | None = None
    ):
        super().__init__(model_dir)
        self.contract = contract  # prompts state the offer in its words
        self.cache_dir = cache_dir

    @classmethod
    def from_profile(cls, profile: Profile, model_dir: str | Path) -> WriterPredictor:
        # The base model is rebuilt (tiny) or converted (smollm2) into the profile's cache.
        return cls(model_dir, profile.contract, cache_dir=profile.writer.model.cache_dir)

    def load(self) -> bool:
        from retention.messaging.writer import MessageWriter

        self.writer = MessageWriter.load(self.model_dir, self.contract, cache_dir=self.cache_dir)
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        from retention.messaging.shield import safe_facts

        facts, levels = [], []
        for i, r in enumerate(rows):
            if not isinstance(r.get("facts"), dict):
                raise InvalidInput(f"instances[{i}].facts: expected an object")
            level = r.get("offer_level")
            if not isinstance(level, int) or not 0 <= level < N_LEVELS:
                raise InvalidInput(
                    f"instances[{i}].offer_level: expected an integer 0-{N_LEVELS - 1}"
                )
            facts.append(safe_facts(r["facts"])[0])
            levels.append(level)
        return [{"message": m} for m in self.writer.write(facts, levels)]


@predictor_for("phase-health")
class PhaseHealthPredictor(Predictor):
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


check_complete(_REGISTRY)
