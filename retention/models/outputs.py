"""The folder layout every trainer writes and evaluate-gates / push read."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from retention.fileio import write_json
from retention.results import ModelResult

MODEL_DIR = "model"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.json"
SHAP_FILE = "shap.json"


class Saveable(Protocol):
    def save(self, out_dir: str | Path) -> None: ...


def save_outputs(
    out_dir: str | Path, model: Saveable, result: ModelResult, curves: dict[str, Any]
) -> None:
    out = Path(out_dir)
    model.save(out / MODEL_DIR)
    write_json(out / CURVES_FILE, curves)
    result.save(out / METRICS_FILE)
