"""A trainer's typed result into KFP artifacts: the one copy every component body imports.

Imported inside component bodies (the image has this project installed), so these helpers run in
the task, not at compile time.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfp.dsl import ClassificationMetrics, Metrics, Model

    from retention.evaluation.gates import Verdict
    from retention.results import BinaryResult, ModelResult


def log_result(result: ModelResult, model: Model, metrics: Metrics) -> None:
    """Every measured scalar into ``metrics``; the framework and the text fields on ``model``."""
    for key, value in result.scalars().items():
        metrics.log_metric(key, value)
    model.metadata["framework"] = result.framework
    for key in result.text_fields():
        if (value := getattr(result, key)) is not None:
            model.metadata[key] = value


def log_curves(result: BinaryResult, model: Model, roc: ClassificationMetrics) -> None:
    """The test ROC curve and confusion matrix the trainer wrote beside the model."""
    from retention.fileio import read_json
    from retention.models.outputs import CURVES_FILE

    curves = read_json(Path(model.path) / CURVES_FILE)
    roc.log_roc_curve(curves["roc"]["fpr"], curves["roc"]["tpr"], curves["roc"]["thresholds"])
    roc.log_confusion_matrix(list(result.class_names), curves["confusion"])


def log_gates(verdict: Verdict, summary: Metrics) -> bool:
    """Each judged value and the overall verdict into ``summary``; failures on stdout."""
    for gate in verdict.gates:
        if gate.value is not None:
            summary.log_metric(f"{gate.gate.model}.{gate.gate.metric}", gate.value)
    summary.log_metric("passed", 1.0 if verdict.passed else 0.0)
    for line in verdict.failures:
        print(f"GATE FAILED: {line}")
    return verdict.passed
