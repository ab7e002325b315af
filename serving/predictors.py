"""The predictors, one ``kserve.Model`` class per served model of the catalogue, V1 and V2.

Each class is registered with ``@predictor_for(SERVICE)`` under its catalogue spec's service name;
importing this module fails if a served spec has no class or a class names a service the
catalogue does not serve, so the catalogue and the servable models cannot drift apart.

Each loads from a directory (the model store's ``production`` version of ``spec.name``, or the
``/mnt/models`` that KServe's storage initializer fills from the InferenceService's
``storageUri``) and is ``ready`` only once loaded. ``warm_up`` then times it on a representative
request: a predictor that answers in well under a millisecond (the compiled tabular models, the
policy) runs inline, where a worker-thread hop would cost more than the model; a slower one runs
in a worker thread, so it never stalls the server's event loop (a known KServe pain with blocking
predict). Each model predicts on ``serving.model_threads`` threads.

Tabular predictors take partial rows: a feature the request lacks is missing (NaN) for the
trees, which handle it natively. Risk factors are only features the row gave a usable value for;
the answer lists the features it lacked (``missing_features``: not sent or null) and those it
could not read (``unrecognised_features``: a level unseen in training, text that is no number).

Each predictor lists its V2 inputs and outputs (``GET /v2/models/NAME``); a V2 response encodes
the outputs exactly as listed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from kserve import Model
from kserve.errors import InvalidInput

from retention import catalogue
from retention.catalogue import ModelSpec
from retention.config import Profile, WriterServeConfig
from retention.contract import N_LEVELS, ContactContract
from retention.models.preprocess import FeatureValueError
from serving.protocol import Tensor, respond, rows_from

log = logging.getLogger(__name__)

# Outputs every tabular predictor has: the features a row lacked and those it could not read.
FEATURE_REPORT = (Tensor("missing_features", "BYTES"), Tensor("unrecognised_features", "BYTES"))
WARM_UP_CALLS = 20


class Predictor(Model):
    """A served model: its name is its catalogue service, its files one model-store folder."""

    service: ClassVar[str]
    # The V2 outputs, in order (model metadata, and how a V2 response encodes them).
    OUTPUTS: ClassVar[tuple[Tensor, ...]] = ()

    def __init__(self, model_dir: str | Path, threads: int = 1):
        super().__init__(self.service)
        self.model_dir = Path(model_dir)
        self.threads = threads
        # Run predict_rows on the event loop: set by warm_up when it is cheaper than a thread hop.
        self.inline = False

    @classmethod
    def spec(cls) -> ModelSpec:
        return catalogue.by_service(cls.service)

    @classmethod
    def from_profile(cls, profile: Profile, model_dir: str | Path) -> Predictor:
        """The predictor as the profile configures it (unloaded)."""
        return cls(model_dir, threads=profile.serving.model_threads)

    async def predict(self, payload, headers=None, response_headers=None):
        rows = rows_from(payload)
        out = await self.run(rows)
        return respond(payload, self.name, out, self.OUTPUTS or None)

    async def run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """``predict_rows`` inline or in a worker thread, as ``warm_up`` measured."""
        if self.inline:
            return self.predict_rows(rows)
        return await asyncio.to_thread(self.predict_rows, rows)

    def predict_rows(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        raise NotImplementedError

    def warmup_rows(self) -> list[dict[str, Any]] | None:
        """A representative request to time at load; None: never timed, always a worker thread."""
        return None

    def warm_up(self, inline_below_ms: float) -> float | None:
        """Time ``predict_rows`` on ``warmup_rows``; inline when the 90th percentile of the
        timed calls is under ``inline_below_ms``. Returns that percentile in ms, or None."""
        rows = self.warmup_rows()
        self.inline = False
        if rows is None or not self.ready:
            return None
        times = []
        try:
            for _ in range(3 + WARM_UP_CALLS):  # the first calls allocate; they are not timed
                t = time.perf_counter()
                self.predict_rows(rows)
                times.append((time.perf_counter() - t) * 1000)
        except Exception as err:  # noqa: BLE001 - a model that fails its warm-up is not inlined
            log.warning("predictor %s failed its warm-up (%s): worker thread", self.name, err)
            return None
        p90 = sorted(times[3:])[int(0.9 * WARM_UP_CALLS) - 1]
        self.inline = p90 < inline_below_ms
        log.info("predictor %s: p90 %.3f ms per call, %s", self.name, p90,
                 "inline" if self.inline else "worker thread")  # fmt: skip
        return p90

    def inputs(self) -> tuple[Tensor, ...]:
        """The V2 inputs, one per column (the loaded model's features, for tabular ones)."""
        raise NotImplementedError(f"{type(self).__name__} does not list its V2 inputs")

    def get_input_types(self) -> list[dict[str, Any]]:
        return [t.to_dict() for t in self.inputs()]

    def get_output_types(self) -> list[dict[str, Any]]:
        if not self.OUTPUTS:
            raise NotImplementedError(f"{type(self).__name__} does not list its V2 outputs")
        return [t.to_dict() for t in self.OUTPUTS]


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
    """A :class:`retention.models.binary.BinaryModel` saved by its trainer, served through its
    compiled path (:mod:`retention.models.fastpath`)."""

    def load(self) -> bool:
        from retention.models.binary import BinaryModel

        self.model = BinaryModel.load(self.model_dir)
        self.fast = self.compile(self.model)
        self.ready = True
        return self.ready

    def compile(self, model):
        raise NotImplementedError

    def inputs(self) -> tuple[Tensor, ...]:
        pre = self.model.pre
        return tuple(
            Tensor(name, "BYTES" if name in pre.categorical else "FP64")
            for _, name in self.fast.encoder.read
        )

    def warmup_rows(self) -> list[dict[str, Any]]:
        return [{}]  # every feature missing: the same trees walked, the same SHAP computed


@predictor_for("risk")
class RiskPredictor(BinaryPredictor):
    """P(churn within the period), calibrated, with the top SHAP factors of each row."""

    OUTPUTS = (
        Tensor("churn_probability", "FP64"),
        Tensor("factors", "BYTES"),  # JSON: [{"feature", "value", "shap"}, ...]
        *FEATURE_REPORT,
    )

    def compile(self, model):
        from retention.models.fastpath import CompiledRisk

        return CompiledRisk(model, nthread=self.threads)

    def predict_rows(self, rows):
        try:
            return [s.to_dict() for s in self.fast.score(rows)]
        except FeatureValueError as err:
            raise InvalidInput(str(err)) from None


@predictor_for("accept")
class AcceptPredictor(BinaryPredictor):
    """P(accept) at every offer level in one call."""

    OUTPUTS = (Tensor("accept_probability", "FP64", (-1, N_LEVELS)), *FEATURE_REPORT)

    def compile(self, model):
        from retention.models.fastpath import CompiledAccept

        return CompiledAccept(model, nthread=self.threads)

    def predict_rows(self, rows):
        try:
            return [c.to_dict() for c in self.fast.curves(rows)]
        except FeatureValueError as err:
            raise InvalidInput(str(err)) from None


@predictor_for("ltv")
class LtvPredictor(Predictor):
    """12-month value with its 80 % interval and its source, per customer.

    From the row's order facts (``model.order_facts``: recency, frequency, monetary value, ...)
    when it carries all of them, else by the customer book's mapping (the rank of its
    ``book_mapping.column``, e.g. MonthlyCharges): the value the policy was trained on.
    ``LtvModel.customer_values``, the one function the book and the batch path call too.
    """

    OUTPUTS = (
        Tensor("value", "FP64"),
        Tensor("low", "FP64"),  # null where there is no interval (a given value)
        Tensor("high", "FP64"),
        Tensor("source", "BYTES"),
        Tensor("missing_order_facts", "BYTES"),
    )

    def load(self) -> bool:
        from retention.models.ltv import LtvModel

        self.model = LtvModel(self.model_dir)
        self.ready = True
        return self.ready

    def inputs(self) -> tuple[Tensor, ...]:
        from retention.models.ltv import GIVEN

        mapping = self.model.book_mapping
        columns = [GIVEN, *self.model.order_facts, *([mapping.column] if mapping else [])]
        return tuple(Tensor(c, "FP64") for c in dict.fromkeys(c for c in columns if c))

    def warmup_rows(self) -> list[dict[str, Any]]:
        return [{}]  # valued by the book mapping, the path a request without order facts takes

    def predict_rows(self, rows):
        for i, r in enumerate(rows):
            if not isinstance(r, dict):
                raise InvalidInput(f"instances[{i}]: expected an object of customer facts")
        try:
            values = self.model.customer_values(rows)
        except ValueError as err:
            raise InvalidInput(f"instances: {err}") from None
        return [values.answer(i).model_dump() for i in range(len(values))]


@predictor_for("policy")
class PolicyPredictor(Predictor):
    """The PPO contact policy: action and the probability of each action component.

    Torch's intra-op threads are the serving process's (``serving.model_threads``, set where the
    server starts): a process-wide setting that a library or one predictor must not change.
    """

    OUTPUTS = (
        Tensor("contact", "INT64"),
        Tensor("offer_level", "INT64"),
        Tensor("followup_index", "INT64"),
        Tensor("followup_days", "INT64"),
        Tensor("action_probability", "FP64"),
        Tensor("contact_probability", "FP64"),
    )

    def load(self) -> bool:
        from retention.decision.policy import ExportedPolicy

        self.policy = ExportedPolicy(self.model_dir)
        self.meta = self.policy.meta
        self.ready = True
        return self.ready

    def inputs(self) -> tuple[Tensor, ...]:
        from retention.decision.env import OBS_NAMES

        return (Tensor("observation", "FP32", (-1, len(OBS_NAMES))),)

    def warmup_rows(self) -> list[dict[str, Any]]:
        from retention.decision.env import OBS_NAMES

        return [{"observation": [0.0] * len(OBS_NAMES)}]

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
    """The message writer's raw text; the caller shields it before anything is sent.

    Generation runs in worker threads; ``MessageWriter`` itself serialises them (one generation
    at a time), the tokenizer and the model being unsafe to share between threads.
    """

    OUTPUTS = (Tensor("message", "BYTES"),)

    def __init__(
        self,
        model_dir: str | Path,
        contract: ContactContract,
        cache_dir: str | None = None,
        serve: WriterServeConfig | None = None,
    ):
        super().__init__(model_dir)
        self.contract = contract  # prompts state the offer in its words
        self.cache_dir = cache_dir
        self.serve = serve or WriterServeConfig()

    def inputs(self) -> tuple[Tensor, ...]:
        # facts: a JSON object of what may be said (name, plan, tenure, ...), as text in V2.
        return (Tensor("facts", "BYTES"), Tensor("offer_level", "INT64"))

    @classmethod
    def from_profile(cls, profile: Profile, model_dir: str | Path) -> WriterPredictor:
        # The base model is rebuilt (tiny) or converted (smollm2) into the profile's cache.
        return cls(
            model_dir, profile.contract, profile.writer.model.cache_dir, profile.writer.serve
        )

    def load(self) -> bool:
        from retention.messaging.writer import MessageWriter

        self.writer = MessageWriter.load(
            self.model_dir,
            self.contract,
            cache_dir=self.cache_dir,
            max_new_tokens=self.serve.max_new_tokens,
            quantize_int8=self.serve.quantize_int8,
        )
        self.ready = True
        return self.ready

    def predict_rows(self, rows):
        from retention.messaging.shield import safe_facts

        facts, levels = [], []
        for i, r in enumerate(rows):
            given = r.get("facts") if isinstance(r, dict) else None
            if isinstance(given, str):  # V2 carries the object as JSON text
                try:
                    given = json.loads(given)
                except ValueError:
                    given = None
            if not isinstance(given, dict):
                raise InvalidInput(f"instances[{i}].facts: expected an object")
            level = r.get("offer_level")
            if isinstance(level, float) and level.is_integer():  # V2 INT64 read back as JSON
                level = int(level)
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level < N_LEVELS:
                raise InvalidInput(
                    f"instances[{i}].offer_level: expected an integer 0-{N_LEVELS - 1}"
                )
            facts.append(safe_facts(given)[0])
            levels.append(level)
        return [{"message": m} for m in self.writer.write(facts, levels)]


@predictor_for("phase-health")
class PhaseHealthPredictor(Predictor):
    """Health of each journey phase (one row per phase) and overall."""

    OUTPUTS = (Tensor("phase", "BYTES"), Tensor("health", "FP64"), *FEATURE_REPORT)

    def load(self) -> bool:
        from retention.models.phase_health import PhaseHealthModels

        self.models = PhaseHealthModels(self.model_dir, num_threads=self.threads)
        self.ready = True
        return self.ready

    def inputs(self) -> tuple[Tensor, ...]:
        return (Tensor("phase", "BYTES"), *(Tensor(f, "FP64") for f in self.models.features))

    def warmup_rows(self) -> list[dict[str, Any]]:
        return [{"phase": phase} for phase in self.models.phases]

    def predict_rows(self, rows):
        from retention.models.phase_health import UnknownPhase

        try:
            return [s.to_dict() for s in self.models.score(rows)]
        except (UnknownPhase, FeatureValueError) as err:
            raise InvalidInput(str(err)) from None


check_complete(_REGISTRY)
