"""A/B assignment and report: determinism, interval coverage on known truths, validation, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from retention.config import ExperimentConfig
from retention.experiments.ab import (
    ab_report,
    assign_arm,
    newcombe_difference,
    wilson_interval,
)
from retention_cli.main import main

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------- assignment


def test_assignment_is_deterministic_across_processes():
    cfg = ExperimentConfig(salt="s-1", treatment_share=0.5)
    ids = [f"c-{i}" for i in range(200)]
    here = [assign_arm(i, cfg) for i in ids]
    code = (
        "from retention.config import ExperimentConfig\n"
        "from retention.experiments.ab import assign_arm\n"
        "cfg = ExperimentConfig(salt='s-1', treatment_share=0.5)\n"
        "print(','.join(assign_arm(f'c-{i}', cfg) for i in range(200)))\n"
    )
    # A fresh interpreter has a different str-hash seed: the arm must not depend on it.
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip().split(",") == here


@pytest.mark.parametrize("share", [0.5, 0.2, 0.9])
def test_assignment_matches_the_share(share):
    cfg = ExperimentConfig(salt="retention-ab-1", treatment_share=share)
    arms = [assign_arm(f"customer-{i}", cfg) for i in range(10_000)]
    assert set(arms) <= {"treatment", "control"}
    assert abs(arms.count("treatment") / len(arms) - share) < 0.02


def test_assignment_changes_with_the_salt_and_honours_the_extremes():
    ids = [f"c-{i}" for i in range(2000)]
    a = [assign_arm(i, ExperimentConfig(salt="one")) for i in ids]
    b = [assign_arm(i, ExperimentConfig(salt="two")) for i in ids]
    assert 0.4 < np.mean([x != y for x, y in zip(a, b, strict=True)]) < 0.6  # independent
    assert {assign_arm(i, ExperimentConfig(treatment_share=0.0)) for i in ids} == {"control"}
    assert {assign_arm(i, ExperimentConfig(treatment_share=1.0)) for i in ids} == {"treatment"}
    with pytest.raises(ValueError, match="customer_id"):
        assign_arm("", ExperimentConfig())


# -------------------------------------------------------------------------------- statistics


def test_newcombe_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II example (56/70 vs 48/80).
    d, lo, hi = newcombe_difference(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)


def _outcomes(n: int, p_control: float, p_treat: float, seed: int, cost: float = 5.0):
    rng = np.random.default_rng(seed)
    value = rng.gamma(4.0, 25.0, 2 * n)  # mean 100: a 12-month value per customer
    return pd.DataFrame(
        {
            "customer_id": [f"c-{i}" for i in range(2 * n)],
            "arm": ["treatment"] * n + ["control"] * n,
            "contacted": [1] * n + [0] * n,
            "offer_cost": [cost] * n + [0.0] * n,
            "retained": np.r_[rng.binomial(1, p_treat, n), rng.binomial(1, p_control, n)],
            "value": value,
        }
    )


def test_report_recovers_a_known_uplift_and_roi():
    report = ab_report(_outcomes(20_000, 0.70, 0.80, seed=3), resamples=1000, seed=1)
    t, c = report.arms["treatment"], report.arms["control"]
    assert (t.n, c.n) == (20_000, 20_000)
    assert t.retention_rate == pytest.approx(0.80, abs=0.01)
    assert c.retention_rate == pytest.approx(0.70, abs=0.01)
    u = report.retention_uplift
    assert u.ci_low < 0.10 < u.ci_high and u.ci_low > 0
    assert u.estimate == pytest.approx(t.retention_rate - c.retention_rate)
    # Truth: revenue per customer 100 * (0.80 - 0.70) = 10, spend 5, ROI (10 - 5) / 5 = 1.
    rev, spend, roi = (
        report.incremental_revenue_per_customer,
        report.incremental_spend_per_customer,
        report.roi,
    )
    assert rev.ci_low < 10.0 < rev.ci_high
    assert spend.estimate == pytest.approx(5.0)
    assert roi.ci_low < 1.0 < roi.ci_high and roi.ci_low > 0
    assert roi.estimate == pytest.approx((rev.estimate - 5.0) / 5.0)
    assert t.spend == pytest.approx(100_000.0) and c.spend == 0.0
    assert not any("includes 0" in n for n in report.notes)


def test_null_experiment_interval_covers_zero():
    report = ab_report(_outcomes(5_000, 0.70, 0.70, seed=4), resamples=500)
    u = report.retention_uplift
    assert u.ci_low < 0 < u.ci_high
    assert report.roi.ci_low < -1.0 < report.roi.ci_high  # truth: spend is simply lost
    assert any("includes 0" in n for n in report.notes)


def test_bootstrap_is_seeded():
    df = _outcomes(2_000, 0.6, 0.7, seed=5)
    a = ab_report(df, resamples=300, seed=9).roi
    b = ab_report(df, resamples=300, seed=9).roi
    c = ab_report(df, resamples=300, seed=10).roi
    assert a == b and a.ci_low != c.ci_low


def test_roi_is_undefined_without_extra_spend():
    df = _outcomes(1_000, 0.7, 0.75, seed=6, cost=0.0)
    report = ab_report(df, resamples=200)
    assert report.roi.estimate is None and report.roi.ci_low is None
    assert any("ROI undefined" in n for n in report.notes)
    json.dumps(report.model_dump(mode="json"))  # None, not NaN: valid JSON


# -------------------------------------------------------------------------------- validation


def _csv(tmp_path: Path, rows: list[str], name: str = "outcomes.csv") -> Path:
    path = tmp_path / name
    path.write_text("\n".join(["customer_id,arm,contacted,offer_cost,retained,value", *rows]))
    return path


GOOD = ["c1,treatment,1,5,1,100", "c2,control,0,0,0,80", "c3,control,0,0,1,90"]


@pytest.mark.parametrize(
    ("bad_row", "column", "match"),
    [
        ("c4,both,1,5,1,100", "arm", "'both'"),
        ("c4,treatment,1,5,2,100", "retained", "0 or 1"),
        ("c4,treatment,1,5,,100", "retained", "0 or 1"),
        ("c4,treatment,maybe,5,1,100", "contacted", "maybe"),
        ("c4,treatment,1,-5,1,100", "offer_cost", "amount"),
        ("c4,treatment,1,5,1,lots", "value", "lots"),
        ("c1,treatment,1,5,1,100", "customer_id", "twice"),
    ],
)
def test_validation_names_file_column_and_row(tmp_path, bad_row, column, match):
    path = _csv(tmp_path, [*GOOD, bad_row])
    with pytest.raises(ValueError, match=match) as err:
        ab_report(path, resamples=100)
    msg = str(err.value)
    assert "outcomes.csv" in msg and f"column '{column}'" in msg and "row 4 (line 5)" in msg


def test_missing_column_and_missing_arm_are_named(tmp_path):
    path = tmp_path / "o.csv"
    path.write_text("customer_id,arm,contacted,offer_cost,value\nc1,treatment,1,5,100\n")
    with pytest.raises(ValueError, match=r"o\.csv: column 'retained': missing"):
        ab_report(path)
    with pytest.raises(ValueError, match=r"column 'arm': no control rows"):
        ab_report(_csv(tmp_path, ["c1,treatment,1,5,1,100"]))


def test_reads_parquet_and_accepts_booleans(tmp_path):
    df = pd.DataFrame(
        {
            "customer_id": ["a", "b", "c", "d"],
            "arm": ["treatment", "Treatment ", "control", "control"],
            "contacted": [True, True, False, False],
            "offer_cost": [2.0, 2.0, 0.0, 0.0],
            "retained": [True, False, True, False],
            "value": [50.0, 0.0, 40.0, 0.0],
        }
    )
    df.to_parquet(tmp_path / "o.parquet")
    report = ab_report(tmp_path / "o.parquet", resamples=100)
    assert report.arms["treatment"].n == 2 and report.arms["treatment"].revenue == 50.0
    assert report.source.endswith("o.parquet")


# ------------------------------------------------------------------------------------------ CLI


def test_cli_prints_a_table_and_writes_json(tmp_path, capsys):
    src = tmp_path / "outcomes.csv"
    _outcomes(500, 0.6, 0.7, seed=8).to_csv(src, index=False)
    out = tmp_path / "reports" / "ab.json"
    assert main(["ab-report", str(src), "--out", str(out), "--resamples", "200"]) == 0
    printed = capsys.readouterr().out
    assert "retention uplift" in printed and "treatment" in printed and "ROI" in printed
    data = json.loads(out.read_text())
    assert data["arms"]["treatment"]["n"] == 500 and data["bootstrap_resamples"] == 200
    assert set(data["retention_uplift"]) == {"estimate", "ci_low", "ci_high", "method"}
    assert [p.name for p in out.parent.iterdir()] == ["ab.json"]  # no temp file left behind


def test_cli_reports_bad_input_without_a_traceback(tmp_path, capsys):
    path = _csv(tmp_path, [*GOOD, "c4,both,1,5,1,100"])
    assert main(["ab-report", str(path)]) == 2
    assert "column 'arm'" in capsys.readouterr().err
