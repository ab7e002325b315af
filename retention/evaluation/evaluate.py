"""evaluate-gates: judge every trained model against the profile's thresholds and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention.catalogue import spec
from retention.config import Profile
from retention.evaluation.gates import Verdict, evaluate
from retention.evaluation.report import render
from retention.fileio import atomic_path, read_json, write_json
from retention.models.outputs import CURVES_FILE, METRICS_FILE, SHAP_FILE
from retention.results import ModelResult


def load_results(
    model_dirs: dict[str, str | Path],
) -> tuple[dict[str, ModelResult], dict[str, dict[str, Any]]]:
    """Each model's typed result and its curves; a folder with no ``metrics.json`` is left out."""
    results: dict[str, ModelResult] = {}
    curves: dict[str, dict[str, Any]] = {}
    for name, d in model_dirs.items():
        d = Path(d)
        result_type = spec(name).result
        if (d / METRICS_FILE).is_file():
            results[name] = result_type.load(d / METRICS_FILE)
        if (d / CURVES_FILE).is_file():
            curves[name] = read_json(d / CURVES_FILE)
        if (d / SHAP_FILE).is_file():
            curves.setdefault(name, {})["shap"] = read_json(d / SHAP_FILE)
    return results, curves


def evaluate_run(
    profile: Profile, model_dirs: dict[str, str | Path], report_path: str | Path
) -> Verdict:
    """``model_dirs`` maps a model name to the directory its trainer wrote (metrics.json inside).

    Writes the HTML report and, beside it, its JSON (``report.json``).
    """
    results, curves = load_results(model_dirs)
    verdict = Verdict(evaluate(profile.gates, results), results)
    with atomic_path(report_path) as tmp:
        html = render(verdict.gates, results, curves, profile.contract.percents)
        tmp.write_text(html, encoding="utf-8")
    write_json(Path(report_path).with_suffix(".json"), verdict.to_dict())
    return verdict
