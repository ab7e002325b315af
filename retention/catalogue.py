"""The model catalogue: one spec per model, from which everything else is derived.

A spec names the model once (``name``: its model-store folder, its gates key, its KFP input and
output name) and maps it to the other vocabularies in one place: the DAG task that trains it,
the component module, the KServe predictor / InferenceService name. The DAG wiring, the
evaluate-gates and push inputs, the model-store names, the predictors, the manifests, the
profile's validation and the tests' task list all read this tuple.

Adding a model is three files: a domain module under ``retention/`` that trains it and returns a
:class:`retention.results.ModelResult`, a component under ``components/`` that calls it, and a
``ModelSpec`` here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from retention.results import (
    AcceptResult,
    LtvResult,
    ModelResult,
    NarrativesResult,
    PhaseHealthResult,
    PolicyResult,
    RewardResult,
    RiskResult,
    SegmentsResult,
    SftResult,
    UpliftResult,
    WriterResult,
)

# Input name of the split tables; any other name in ``ModelSpec.needs`` is another spec's output.
SPLITS = "splits"
# The DAG's steps around the models.
DATA_TASKS = ("ingest", "split")
FINAL_TASKS = ("evaluate-gates", "push")
# The orchestrating transformer's InferenceService.
ORCHESTRATOR = "retention"


@dataclass(frozen=True)
class ModelSpec:
    """Everything the platform needs to know to train, gate, release and serve one model."""

    name: str  # python identifier: store folder, gates key, KFP artifact name
    task: str  # the DAG task name
    component: str  # components.<module>; the component function has the same name
    result: type[ModelResult]
    needs: tuple[str, ...] = (SPLITS,)
    released: bool = True  # copied to the model store by push
    service: str | None = None  # KServe predictor / InferenceService name; None: not served
    gates_min: dict[str, float] = field(default_factory=dict)
    gates_max: dict[str, float] = field(default_factory=dict)
    deployment: dict[str, Any] = field(default_factory=dict)  # serving.Deployment defaults
    description: str = ""

    @property
    def gated(self) -> bool:
        return bool(self.gates_min or self.gates_max)


CATALOGUE: tuple[ModelSpec, ...] = (
    ModelSpec(
        name="risk",
        task="train-risk",
        component="train_binary",
        result=RiskResult,
        service="risk",
        gates_min={"test_auc": 0.78},
        gates_max={"test_ece": 0.05},
        description="calibrated P(churn) with TreeSHAP risk factors",
    ),
    ModelSpec(
        name="accept",
        task="train-accept",
        component="train_binary",
        result=AcceptResult,
        service="accept",
        gates_min={"test_auc": 0.70},
        gates_max={"test_ece": 0.05, "monotone_violations": 0},
        description="P(accept | customer, offer level), monotone in the level",
    ),
    ModelSpec(
        name="phase_health",
        task="train-phase-health",
        component="train_phase_health",
        result=PhaseHealthResult,
        service="phase-health",
        gates_min={"test_auc": 0.70, "test_min_phase_auc": 0.65},
        deployment={"max_replicas": 2},
        description="one LightGBM per journey phase with SHAP drivers",
    ),
    ModelSpec(
        name="ltv",
        task="train-ltv",
        component="train_ltv",
        result=LtvResult,
        service="ltv",
        gates_min={"test_top10_capture": 0.25},
        gates_max={"test_abs_revenue_error": 0.3},
        # A few JSON tables and one small model: a quarter of a core serves it.
        deployment={"cpu": "250m", "memory": "1Gi", "max_replicas": 2},
        description="12-month value with an interval, from order facts or the book mapping",
    ),
    ModelSpec(
        name="segments",
        task="train-segments",
        component="train_segments",
        result=SegmentsResult,
        needs=(SPLITS, "ltv"),
        gates_min={"silhouette": 0.30, "min_segment_share": 0.03},
        description="RFM segments (k-means, k by silhouette) with CLV, revenue and churn each",
    ),
    ModelSpec(
        name="narratives",
        task="narratives",
        component="narratives",
        result=NarrativesResult,
        needs=("phase_health", "segments"),
        # A profile with a model too small to phrase facts faithfully says so in its gates.
        gates_min={"acceptance_share": 0.5},
        gates_max={"ungrounded_released": 0},
        description="per-phase and per-segment narratives phrased by the base LM, fact-checked",
    ),
    ModelSpec(
        name="uplift",
        task="train-uplift",
        component="train_uplift",
        result=UpliftResult,
        # The policy's env takes each customer's offer effect from it; serving does not call it.
        gates_min={"test_qini": 0.05},
        description="treatment effect (two-model LightGBM) from the randomised campaign",
    ),
    ModelSpec(
        name="policy",
        task="ppo-decision",
        component="ppo_decision",
        result=PolicyResult,
        needs=(SPLITS, "risk", "accept", "ltv", "uplift"),
        service="policy",
        # Champion/challenger: the released policy (PPO or a servable heuristic) is the
        # strongest heuristic itself, or better than it by a paired interval above 0.
        gates_min={"released_vs_best_baseline_low": 0.0},
        gates_max={
            "budget_overshoot": 0.01,
            "fatigue_violations": 0,
            "cooldown_violations": 0,
            # The shield refuses contacts that would break a limit; this bounds how often it had
            # to, i.e. how well the released policy keeps the limits itself.
            "blocked_rate": 0.05,
        },
        description="the contact policy (PPO on RLlib with Lagrangian limits)",
    ),
    ModelSpec(
        name="sft",
        task="sft",
        component="sft",
        result=SftResult,
        needs=(),
        released=False,  # ppo-text releases both adapters in the writer
        description="LoRA SFT of the message writer",
    ),
    ModelSpec(
        name="rm",
        task="rm",
        component="rm",
        result=RewardResult,
        needs=(),
        released=False,
        gates_min={"accuracy": 0.95},
        description="Bradley-Terry reward model",
    ),
    ModelSpec(
        name="writer",
        task="ppo-text",
        component="ppo_text",
        result=WriterResult,
        needs=("sft", "rm"),
        service="writer",
        # The released writer (champion/challenger picks PPO over SFT only when it wins with
        # an interval above 0.5): its messages go out as written, varied as the references.
        gates_min={"pass_rate_as_written": 0.95, "distinct_2_vs_reference": 0.8},
        gates_max={"violation_rate_after_shield": 0.0, "mean_kl_to_reference": 20.0},
        deployment={"cpu": "4", "memory": "8Gi", "max_replicas": 2, "scale_target": 4},
        description="the message writer (PPO with adaptive KL on the SFT writer, or SFT, or the "
        "template: champion/challenger)",
    ),
)

ORCHESTRATOR_DEPLOYMENT: dict[str, Any] = {"max_replicas": 5, "scale_target": 32}


def _index() -> dict[str, ModelSpec]:
    out: dict[str, ModelSpec] = {}
    for s in CATALOGUE:
        if s.name in out or not s.name.isidentifier():
            raise ValueError(f"catalogue: model name {s.name!r} is repeated or not an identifier")
        for need in s.needs:
            if need != SPLITS and need not in out:
                raise ValueError(
                    f"catalogue: {s.name} needs {need!r}, which is not listed before it"
                )
        out[s.name] = s
    return out


BY_NAME: dict[str, ModelSpec] = _index()


def spec(name: str) -> ModelSpec:
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r} (known: {', '.join(BY_NAME)})") from None


def released() -> tuple[ModelSpec, ...]:
    return tuple(s for s in CATALOGUE if s.released)


def gated() -> tuple[ModelSpec, ...]:
    return tuple(s for s in CATALOGUE if s.gated)


def judged() -> tuple[ModelSpec, ...]:
    """The models evaluate-gates reads: every gated or released one (a profile may gate these)."""
    return tuple(s for s in CATALOGUE if s.gated or s.released)


def require_exactly(what: str, given: Iterable[str], expected: Iterable[str]) -> None:
    """A ValueError naming what is missing and what is extra, unless ``given`` == ``expected``."""
    given, expected = list(given), list(expected)
    missing = [n for n in expected if n not in given]
    extra = [n for n in given if n not in expected]
    if missing or extra:
        raise ValueError(
            f"{what}: missing {', '.join(missing) or 'none'}; not expected "
            f"{', '.join(extra) or 'none'} (expected: {', '.join(expected)})"
        )


def served() -> tuple[ModelSpec, ...]:
    return tuple(s for s in CATALOGUE if s.service)


def services() -> tuple[str, ...]:
    """Predictor names, in catalogue order."""
    return tuple(s.service for s in served() if s.service)


def by_service(service: str) -> ModelSpec:
    for s in served():
        if s.service == service:
            return s
    raise KeyError(f"unknown predictor {service!r} (known: {', '.join(services())})")


def tasks() -> tuple[str, ...]:
    """Every task of the training DAG, in order."""
    return (*DATA_TASKS, *(s.task for s in CATALOGUE), *FINAL_TASKS)
