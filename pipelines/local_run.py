"""Run the DAG on this machine with ``kfp.local.SubprocessRunner`` and summarise the outcome."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from retention.config import Profile


@dataclass
class RunSummary:
    run_dir: Path
    seconds: float
    gates: dict[str, Any] = field(default_factory=dict)
    pushed: dict[str, Any] | None = None
    report: Path | None = None


def _absolute_profile(profile: Profile, base: Path) -> Profile:
    """Tasks run as subprocesses: pin relative paths to where the user ran the command."""
    p = profile.model_copy(deep=True)
    if "://" not in p.model_store:
        p.model_store = str((base / p.model_store).resolve())
    for _, spec in p.data.items():
        if spec.uri and "://" not in spec.uri and not os.path.isabs(spec.uri):
            spec.uri = str((base / spec.uri).resolve())
    return p


def _newest_run(root: Path, before: set[Path]) -> Path:
    runs = [d for d in root.iterdir() if d.is_dir() and d not in before]
    if not runs:
        raise RuntimeError(f"the pipeline wrote no run folder under {root}")
    return max(runs, key=lambda d: d.stat().st_mtime)


def _find(run_dir: Path, task: str, name: str) -> Path | None:
    hits = sorted(run_dir.glob(f"{task}*/{name}"))
    return hits[0] if hits else None


def run_local(profile: Profile, base: Path | None = None) -> RunSummary:
    from kfp import local

    from pipelines.dag import build_pipeline

    base = (base or Path.cwd()).resolve()
    profile = _absolute_profile(profile, base)
    root = (base / profile.pipeline.pipeline_root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    before = set(root.iterdir())
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    logging.getLogger("kfp").setLevel(logging.INFO)
    started = time.perf_counter()
    build_pipeline(profile, target="local")(config_json=profile.model_dump_json())
    summary = RunSummary(_newest_run(root, before), time.perf_counter() - started)
    report = _find(summary.run_dir, "evaluate-gates", "report")
    if report and report.with_suffix(".json").is_file():
        summary.report = report
        summary.gates = json.loads(report.with_suffix(".json").read_text())
    store = Path(profile.model_store) / "production"
    if summary.gates.get("passed") and store.is_file():
        summary.pushed = json.loads(store.read_text())
    return summary


def format_summary(s: RunSummary, model_store: str) -> str:
    lines = [f"pipeline finished in {s.seconds:.1f} s; artifacts under {s.run_dir}"]
    for g in s.gates.get("gates", []):
        lines.append(f"  gate {'PASS' if g['passed'] else 'FAIL'}: {g['message']}")
    for model, m in s.gates.get("metrics", {}).items():
        shown = ("test_auc", "test_ece", "test_brier", "cv_auc", "oof_ece", "test_revenue_error",
                 "test_top10_capture", "test_interval_coverage", "churn_cv_auc",
                 "net_revenue_retained", "uplift_vs_best_baseline", "budget_overshoot",
                 "env_steps_per_s", "train_wall_s", "accuracy", "win_rate_rm",
                 "win_rate_checklist", "violation_rate_after_shield", "distinct_2",
                 "mean_kl_to_reference", "train_s")  # fmt: skip
        keys = [k for k in shown if k in m]
        lines.append(f"  {model}: " + ", ".join(f"{k}={m[k]:.4f}" for k in keys))
    if s.report:
        lines.append(f"  report: {s.report}")
    if s.pushed:
        lines.append(f"  pushed release {s.pushed['release']} to {model_store} (production)")
        for model, uri in s.pushed.get("uris", {}).items():
            lines.append(f"    {model}: {uri}")
    else:
        lines.append("  nothing pushed: production unchanged")
    return "\n".join(lines)
