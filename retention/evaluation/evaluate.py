"""evaluate-gates: judge every trained model against the profile's thresholds and write the report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention.config import Profile
from retention.evaluation.gates import evaluate
from retention.evaluation.report import render
from retention.fileio import atomic_path, read_json, write_json
from retention.models.outputs import CURVES_FILE, METRICS_FILE, SHAP_FILE


def evaluate_run(
    profile: Profile, model_dirs: dict[str, str | Path], report_path: str | Path
) -> dict[str, Any]:
    """``model_dirs`` maps a model name to the directory its trainer wrote (metrics.json inside)."""
    metrics, curves = {}, {}
    for name, d in model_dirs.items():
        d = Path(d)
        if (d / METRICS_FILE).is_file():
            metrics[name] = read_json(d / METRICS_FILE)
        if (d / CURVES_FILE).is_file():
            curves[name] = read_json(d / CURVES_FILE)
        if (d / SHAP_FILE).is_file():
            curves.setdefault(name, {})["shap"] = read_json(d / SHAP_FILE)
    results = evaluate(profile.gates, metrics)
    passed = bool(results) and all(r.passed for r in results)
    with atomic_path(report_path) as tmp:
        tmp.write_text(render(results, metrics, curves), encoding="utf-8")
    summary = {
        "passed": passed,
        "gates": [r.to_dict() for r in results],
        "failures": [r.message for r in results if not r.passed],
        "metrics": {
            name: {k: v for k, v in m.items() if isinstance(v, (int, float))}
            for name, m in metrics.items()
        },
    }
    write_json(Path(report_path).with_suffix(".json"), summary)
    return summary
