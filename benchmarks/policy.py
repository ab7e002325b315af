"""The decision policy: PPO against every heuristic on the same held-out episodes, and its speed.

Trains the upstream models the policy's env is built from (ingest, split, risk, accept, LTV,
uplift) on the chosen profile in-process, then the ppo-decision step (champion/challenger
included), checks the off-policy estimators' coverage on simulated logs, and writes one JSON
document. The Hillstrom Qini is `make bench-uplift`'s.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from retention.config import load_profile
from retention.data.ingest import ingest
from retention.data.split import split
from retention.decision.ope_log import simulated_coverage
from retention.decision.train import train_decision
from retention.fileio import read_json, write_json
from retention.models.accept import train_accept
from retention.models.ltv import train_ltv
from retention.models.outputs import CURVES_FILE
from retention.models.risk import train_risk
from retention.models.uplift import train_uplift


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench-results/policy.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    profile = load_profile(args.profile, overrides=args.set)
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp:
        d = Path(tmp)
        t = time.perf_counter()
        ingest(profile, d / "data")
        split(profile, d / "data", d / "splits")
        train_risk(profile, d / "splits", d / "risk")
        train_accept(profile, d / "splits", d / "accept")
        train_ltv(profile, d / "splits", d / "ltv")
        uplift = train_uplift(profile, d / "splits", d / "uplift")
        upstream_s = time.perf_counter() - t
        t = time.perf_counter()
        metrics = train_decision(
            profile, d / "splits", d / "risk", d / "accept", d / "ltv", d / "uplift", d / "decision"
        ).model_dump()
        decision_s = time.perf_counter() - t
        policies = read_json(d / "decision" / CURVES_FILE)["policies"]
    doc = {
        "profile": profile.name,
        "machine_note": "2 cores; say in the closing note whether it was otherwise idle",
        "env": profile.decision.env.model_dump(),
        "contract": profile.contract.model_dump(),
        "iterations": profile.decision.iterations,
        "upstream_models_s": round(upstream_s, 1),
        "ppo_decision_step_s": round(decision_s, 1),
        "ppo_decision_budget_s": 240,
        "ppo_train_wall_s": round(metrics["train_wall_s"], 1),
        "env_steps": metrics["env_steps"],
        "env_steps_per_s_sampling": round(metrics["env_steps_per_s"], 1),
        "env_steps_per_s_overall": round(metrics["env_steps"] / metrics["train_wall_s"], 1),
        "eval_customers": metrics["eval_customers"],
        "eval_unique_customers": metrics["eval_unique_customers"],
        "eval_episodes": metrics["eval_episodes"],
        "best_baseline": metrics["best_baseline"],
        "released": metrics["released"],
        "released_reason": metrics["released_reason"],
        "released_vs_best_baseline": {
            "relative": metrics["uplift_vs_best_baseline"],
            "paired_95": [
                metrics["released_vs_best_baseline_low"],
                metrics["released_vs_best_baseline_high"],
            ],
        },  # fmt: skip
        "ppo_vs_best_baseline": {
            "relative": metrics["ppo_uplift_vs_best_baseline"],
            "paired_95": [
                metrics["difference_vs_best_baseline_low"],
                metrics["difference_vs_best_baseline_high"],
            ],
            "target_relative": 0.10,
        },  # fmt: skip
        "heuristics": metrics["details"]["heuristics"],
        "uplift_model": {k: uplift.model_dump()[k] for k in ("test_qini", "mean_uplift", "fit_s")},
        "ope_coverage_on_simulated_logs": simulated_coverage(),
        "export_max_abs_diff": metrics["export_max_abs_diff"],
        "policies": policies,
    }
    write_json(args.out, doc)
    print(f"wrote {args.out}: released {metrics['released']} ({metrics['released_reason']}); "
          f"ppo-decision {decision_s:.0f} s")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
