"""Exit criteria: each gate compares one metric of one model with a threshold from the profile."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

from retention.config import GatesConfig


@dataclass(frozen=True)
class Gate:
    model: str
    metric: str
    op: Literal[">=", "<="]
    threshold: float

    def judge(self, value: float | None) -> GateResult:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return GateResult(self, value, False, f"{self.model}.{self.metric} was not measured")
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


def gates_from_config(cfg: GatesConfig) -> list[Gate]:
    gates = []
    for model, bounds in cfg.items():
        gates += [Gate(model, metric, ">=", float(v)) for metric, v in bounds.min.items()]
        gates += [Gate(model, metric, "<=", float(v)) for metric, v in bounds.max.items()]
    return gates


def metric_value(metrics: dict[str, Any], name: str) -> float | None:
    for key in (f"test_{name}", name):
        if key in metrics and isinstance(metrics[key], (int, float)):
            return float(metrics[key])
    return None


def evaluate(cfg: GatesConfig, metrics_by_model: dict[str, dict[str, Any]]) -> list[GateResult]:
    """Judge every gate whose model was trained in this run; a configured model that is absent fails."""
    return [
        g.judge(metric_value(metrics_by_model.get(g.model, {}), g.metric))
        for g in gates_from_config(cfg)
    ]
