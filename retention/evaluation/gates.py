"""Exit criteria: each gate compares one metric of one model with a threshold from the profile."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from retention.config import ModelGates
from retention.results import ModelResult


@dataclass(frozen=True)
class Gate:
    model: str
    metric: str  # a numeric field of the model's result
    op: Literal[">=", "<="]
    threshold: float

    def judge(self, value: float | None) -> GateResult:
        if value is None or math.isnan(value):
            return GateResult(self, None, False, f"{self.model}.{self.metric} was not measured")
        ok = value >= self.threshold if self.op == ">=" else value <= self.threshold
        gap = abs(value - self.threshold)
        if ok:
            msg = f"{self.model}.{self.metric} = {value:.4f} {self.op} {self.threshold:g}"
        else:
            side = "below" if self.op == ">=" else "above"
            msg = (
                f"{self.model}.{self.metric} = {value:.4f} misses {self.op} {self.threshold:g} "
                f"by {gap:.4f} ({side} the threshold)"
            )
        return GateResult(self, value, ok, msg)


@dataclass(frozen=True)
class GateResult:
    gate: Gate
    value: float | None
    passed: bool
    message: str

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self.gate),
            "value": self.value,
            "passed": self.passed,
            "message": self.message,
        }


@dataclass(frozen=True)
class Verdict:
    """Every gate judged, with the results they read."""

    gates: list[GateResult]
    results: dict[str, ModelResult]

    @property
    def passed(self) -> bool:
        return bool(self.gates) and all(g.passed for g in self.gates)

    @property
    def failures(self) -> list[str]:
        return [g.message for g in self.gates if not g.passed]

    def to_dict(self) -> dict[str, Any]:
        """The JSON beside the report (what ``retention run`` summarises)."""
        return {
            "passed": self.passed,
            "gates": [g.to_dict() for g in self.gates],
            "failures": self.failures,
            "metrics": {name: r.scalars() for name, r in self.results.items()},
        }


def gates_from_config(gates: dict[str, ModelGates]) -> list[Gate]:
    out = []
    for model, bounds in gates.items():
        out += [Gate(model, metric, ">=", float(v)) for metric, v in bounds.min.items()]
        out += [Gate(model, metric, "<=", float(v)) for metric, v in bounds.max.items()]
    return out


def evaluate(gates: dict[str, ModelGates], results: dict[str, ModelResult]) -> list[GateResult]:
    """Judge every gate on its model's result; a gated model with no result fails each gate."""
    out = []
    for g in gates_from_config(gates):
        result = results.get(g.model)
        if result is None:
            msg = f"{g.model}.{g.metric}: {g.model} was not trained in this run (no result)"
            out.append(GateResult(g, None, False, msg))
        else:
            out.append(g.judge(result.value(g.metric)))
    return out
