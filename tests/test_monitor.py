"""The monitor: injected shifts are flagged with the right feature or metric; unshifted resamples
rarely raise an alarm; bad input names the file and the column."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from retention.config import MonitoringConfig
from retention.data.validate import DataValidationError
from retention.monitoring.monitor import run_monitor
from retention.monitoring.reference import build_reference
from retention.monitoring.report import prometheus_text, write_report

CFG = MonitoringConfig()
RELEASE = "20261101T000000Z-abc123"
NOW = datetime(2026, 12, 1, tzinfo=UTC)
CONTRACTS = ["Month-to-month", "One year", "Two year"]


def customers(n: int, rng: np.random.Generator) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "tenure": rng.integers(0, 73, n),
            "MonthlyCharges": rng.uniform(18, 120, n).round(2),
            "Contract": rng.choice(CONTRACTS, n, p=[0.55, 0.25, 0.2]),
        }
    )


def churn_probability(df: pd.DataFrame, shift: float = 0.0) -> np.ndarray:
    """The true P(churn): what a perfectly calibrated risk model would serve."""
    contract = df["Contract"].map({"Month-to-month": 1.2, "One year": -0.6, "Two year": -1.8})
    logit = -0.5 - 0.07 * df["tenure"] + 0.02 * df["MonthlyCharges"] + contract.fillna(0.0)
    return 1 / (1 + np.exp(-(logit.to_numpy() + shift)))


@pytest.fixture(scope="module")
def reference():
    rng = np.random.default_rng(0)
    train, heldout = customers(6000, rng), customers(1500, rng)
    p = churn_probability(heldout)
    return build_reference(
        train, ["tenure", "MonthlyCharges"], ["Contract"], p, rng.random(len(p)) < p, CFG
    )


def served(seed: int, n: int = 1500, days: int = 28):
    """A decision log, the batch of the customers decided and their outcomes, unshifted."""
    rng = np.random.default_rng(seed)
    batch = customers(n, rng)
    p = churn_probability(batch)
    ids = [f"c{seed}-{i}" for i in range(n)]
    log = pd.DataFrame(
        {
            "customer_id": ids,
            "decided_at": [NOW - timedelta(days=float(d)) for d in rng.uniform(0, days, n)],
            "churn_probability": p,
            "release": RELEASE,
        }
    )
    outcomes = pd.DataFrame({"customer_id": ids, "churned": (rng.random(n) < p).astype(int)})
    return log, batch, outcomes


def monitor(reference, log, batch=None, outcomes=None, created=NOW - timedelta(days=30)):
    sources = {"decisions": "decisions.parquet", "batch": "batch.csv", "outcomes": "outcomes.csv"}
    release = {"release": RELEASE, "created": created.isoformat()}
    return run_monitor(
        reference, release, log, CFG, sources=sources, batch=batch, outcomes=outcomes, now=NOW
    )


def fired(report):
    return {r.name: r for r in report.rules if r.fired}


def test_unshifted_resamples_raise_a_false_alarm_at_most_once_in_20(reference):
    alarms = []
    for seed in range(20):
        log, batch, outcomes = served(100 + seed)
        report = monitor(reference, log, batch, outcomes)
        assert report.recent.auc > CFG.auc_min  # the served model is good: the AUC rule is live
        if report.retrain:
            alarms.append((seed, report.fired))
    assert len(alarms) <= 1, alarms


def test_halved_tenure_is_flagged_as_drift_of_tenure(reference):
    log, batch, outcomes = served(1)
    batch["tenure"] = batch["tenure"] // 2
    report = monitor(reference, log, batch)
    rule = fired(report)["drift"]
    assert "tenure" in rule.features and "MonthlyCharges" not in rule.features
    assert "Contract" not in rule.features
    tenure = next(d for d in report.features if d["column"] == "tenure")
    assert tenure["psi"] > CFG.psi_max and "ks" in tenure["drifted"]


def test_a_new_contract_category_is_flagged_by_name(reference):
    log, batch, _ = served(2)
    rng = np.random.default_rng(2)
    batch.loc[rng.random(len(batch)) < 0.1, "Contract"] = "Four year"
    report = monitor(reference, log, batch)
    rule = fired(report)["drift"]
    assert rule.features == ["Contract"]
    assert "levels training never saw: 'Four year'" in rule.detail
    contract = next(d for d in report.features if d["column"] == "Contract")
    assert "new_category" in contract["drifted"] and 0.07 < contract["unseen_share"] < 0.13


def test_a_changed_churn_rate_is_flagged(reference):
    log, batch, outcomes = served(3)
    rng = np.random.default_rng(3)
    more = churn_probability(batch, shift=1.0)
    outcomes["churned"] = (rng.random(len(more)) < more).astype(int)
    report = monitor(reference, log, batch, outcomes)
    assert "churn_rate" in fired(report)
    assert "drift" not in fired(report)  # the customers did not change, their behaviour did
    assert report.recent.churn_rate > reference["positive_rate"] + CFG.churn_rate_max_change


def test_a_calibration_shift_is_flagged_by_ece_not_by_auc(reference):
    log, batch, outcomes = served(4)
    log["churn_probability"] = log["churn_probability"] ** 0.4  # same ranking, overconfident
    report = monitor(reference, log, batch, outcomes)
    rules = fired(report)
    assert rules["calibration"].value > CFG.ece_max
    assert "auc" not in rules and "churn_rate" not in rules
    assert "churn_probability" in rules["drift"].features  # the scores moved, the features not


def test_auc_below_the_floor_for_two_weeks_fires_and_one_week_does_not(reference):
    log, batch, outcomes = served(5, n=4000)
    rng = np.random.default_rng(5)
    recent = log["decided_at"] > NOW - timedelta(days=14)
    shuffled = outcomes["churned"].to_numpy().copy()
    shuffled[recent.to_numpy()] = rng.permutation(shuffled[recent.to_numpy()])
    report = monitor(reference, log, batch, outcomes.assign(churned=shuffled))
    assert fired(report)["auc"].value < CFG.auc_min
    assert [w.auc < CFG.auc_min for w in report.windows[-2:]] == [True, True]
    # Only the last week: one window below the floor is not two weeks.
    last_week = (log["decided_at"] > NOW - timedelta(days=7)).to_numpy()
    once = outcomes["churned"].to_numpy().copy()
    once[last_week] = rng.permutation(once[last_week])
    report = monitor(reference, log, batch, outcomes.assign(churned=once))
    assert "auc" not in fired(report)


def test_an_old_release_is_due(reference):
    log, _, _ = served(6, n=300)
    report = monitor(reference, log, created=NOW - timedelta(days=CFG.max_age_days + 5))
    assert fired(report)["age"].value > CFG.max_age_days
    assert report.retrain and report.fired == ["age"]


def test_a_log_from_another_release_names_file_column_and_row(reference):
    log, _, _ = served(7, n=50)
    log.loc[10, "release"] = "20260101T000000Z-000000"
    with pytest.raises(DataValidationError, match=r"decisions.parquet: column 'release': row 11"):
        monitor(reference, log)


def test_missing_columns_are_named_with_their_file(reference):
    log, batch, outcomes = served(8, n=50)
    with pytest.raises(DataValidationError, match=r"decisions.parquet: column 'churn_probability'"):
        monitor(reference, log.drop(columns=["churn_probability"]))
    with pytest.raises(DataValidationError, match=r"batch.csv: column 'MonthlyCharges'"):
        monitor(reference, log, batch.drop(columns=["MonthlyCharges"]))
    with pytest.raises(DataValidationError, match=r"outcomes.csv: column 'churned'"):
        monitor(reference, log, batch, outcomes.rename(columns={"churned": "label"}))
    bad = log.copy()
    bad.loc[3, "churn_probability"] = 1.7
    with pytest.raises(DataValidationError, match=r"column 'churn_probability': row 4"):
        monitor(reference, bad)


def test_report_json_html_and_gauges(reference, tmp_path):
    log, batch, outcomes = served(9)
    batch["tenure"] = batch["tenure"] // 2
    report = monitor(reference, log, batch, outcomes)
    paths = write_report(report, tmp_path / "out")
    page = paths["html"].read_text()
    assert "Retrain: drift" in page and "<svg" in page and "<script" not in page
    assert paths["json"].is_file()
    prom = prometheus_text(report)
    assert f'retention_monitor_retrain{{release="{RELEASE}"}} 1.0' in prom
    assert 'retention_monitor_psi{feature="tenure"' in prom
    assert 'retention_monitor_rule_fired{release="' in prom or "rule=" in prom


def test_retraining_runs_only_when_asked_and_a_rule_fired(reference):
    from retention.registry.monitor import act_on

    calm = monitor(reference, served(10)[0])
    log, batch, _ = served(11)
    drifted = monitor(reference, log, batch.assign(tenure=batch["tenure"] // 2))
    runs = []

    def run():
        runs.append(1)
        return 0

    assert act_on(calm, retrain=True, run=run) is None and runs == []
    assert act_on(drifted, retrain=False, run=run) is None and runs == []
    assert act_on(drifted, retrain=True, run=run) == 0 and runs == [1]


def test_the_monitor_pipeline_compiles_submits_and_schedules_offline(tmp_path, monkeypatch):
    import yaml

    from pipelines import vertex
    from pipelines.compile import compile_pipeline
    from retention.config import load_profile

    monkeypatch.setenv("NO_GCE_CHECK", "true")
    gcp = load_profile("gcp")
    tpl = compile_pipeline(gcp, "vertex", tmp_path / "monitor.yaml", "monitor")
    spec = yaml.safe_load(tpl.read_text())
    assert spec["pipelineInfo"]["name"] == f"{gcp.pipeline.name}-monitor"
    tasks = spec["root"]["dag"]["tasks"]
    assert "monitor" in tasks
    condition = next(t for n, t in tasks.items() if n != "monitor")
    assert condition["taskInfo"]["name"] == "retrain"
    assert "monitor-Output'] == true" in condition["triggerPolicy"]["condition"]
    inner = spec["components"][condition["componentRef"]["name"]]["dag"]["tasks"]
    assert list(inner) == ["submit-training"]
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["decisions"]["defaultValue"] == gcp.monitoring.decisions
    job = vertex.submit(gcp, tpl, dry_run=True, pipeline="monitor")
    assert job["display_name"] == f"{gcp.pipeline.name}-monitor"
    assert job["labels"]["pipeline"] == "monitor"
    sched = vertex.schedule(gcp, tpl, dry_run=True, pipeline="monitor")
    assert sched["cron"] == gcp.gcp.monitor_schedule_cron
    assert sched["display_name"] == gcp.gcp.monitor_schedule_name


@pytest.mark.slow
def test_monitor_retrain_runs_the_training_dag_when_a_rule_fires(tiny_run, tmp_path):
    """The real thing: the tiny DAG's release, a drifted batch, `retention monitor --retrain`."""
    import subprocess
    import sys

    from retention.data.split import read_split
    from retention.models.binary import BinaryModel
    from retention.registry.registry import Registry
    from retention.store.model_store import ModelStore

    root, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-2000:]
    store = ModelStore(str(root / "model-store"))
    first = store.production()["release"]
    run_dir = next((root / "runs").glob("retention-training-*"))
    test = read_split(next(run_dir.rglob("splits")), "customers", "test")
    model = BinaryModel.load(root / "model-store" / "risk" / first)
    pd.DataFrame(
        {
            "customer_id": test["customerID"],
            "decided_at": NOW,
            "churn_probability": model.predict_proba(test),
            "release": first,
        }
    ).to_csv(tmp_path / "log.csv", index=False)
    test.assign(tenure=test["tenure"] // 2).to_csv(tmp_path / "batch.csv", index=False)
    args = ["--decisions", str(tmp_path / "log.csv"), "--batch", str(tmp_path / "batch.csv")]
    cmd = [sys.executable, "-m", "retention_cli.main", "monitor", "--profile", "tiny", *args]
    done = subprocess.run([*cmd, "--retrain"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "FIRED drift" in done.stdout and "running the training DAG" in done.stdout
    assert store.production()["release"] != first
    assert store.production()["champions"][-1] == first
    assert Registry(store).get(store.production()["release"]).reference


def test_the_policys_realised_roi_is_set_against_its_estimate(reference):
    log, batch, outcomes = served(12, n=3000)
    rng = np.random.default_rng(12)
    arm = np.where(rng.random(len(log)) < 0.5, "treatment", "control")
    contacted = (arm == "treatment") & (log["churn_probability"].to_numpy() > 0.3)
    # Contacted customers churn less: the treatment arm keeps more value than it spends.
    churned = outcomes["churned"].to_numpy() * ~(contacted & (rng.random(len(log)) < 0.5))
    log = log.assign(arm=arm, contact=contacted, offer_cost=np.where(contacted, 5.0, 0.0))
    outcomes = outcomes.assign(churned=churned.astype(int), value=100.0)
    sources = {"decisions": "decisions.parquet", "outcomes": "outcomes.csv"}

    def judged(estimate):
        release = {"release": RELEASE, "metrics": {"policy": {"roi": estimate}}}
        report = run_monitor(
            reference, release, log, CFG, sources=sources, outcomes=outcomes, now=NOW
        )
        return report.policy, next(r for r in report.rules if r.name == "policy_value")

    policy, rule = judged(1.0)
    realised = policy["realised_roi"]
    assert realised["ci_low"] < realised["estimate"] < realised["ci_high"]
    assert realised["estimate"] > 1.0 and not rule.fired  # it does better than it promised
    _, rule = judged(realised["ci_high"] + 5.0)
    assert rule.fired and "estimated ROI" in rule.detail


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_monitor_reads_a_contact_ledger_export(reference, tmp_path, suffix):
    """Decisions recorded by the contact ledger (its batch path, and answers as serving stores
    them), exported, and read back as the monitor reads any log: the same figures as the log
    they were recorded from; decisions made while risk was down are counted, not judged."""
    from retention.contract import ContactLimits
    from retention.data.sources import read_frame
    from serving.ledger import ContactLedger, Proposal

    log, batch, outcomes = served(13, n=400)
    url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with ContactLedger(url, ContactLimits(), sqlite_synchronous="NORMAL") as ledger:

        def proposal(churn, release=RELEASE):
            return Proposal(False, 0, 0.0, 7, "treatment", 1.0, "rules", churn, release)

        for at, part in log.groupby("decided_at"):
            items = [
                (f"r-{c}", c, proposal(float(p)), None)
                for c, p in zip(part["customer_id"], part["churn_probability"], strict=True)
            ]
            ledger.decide_many(items, at.to_pydatetime())
        # Served while the risk model was down, and by another release.
        ledger.answer("down", "c-down", proposal(None), NOW, None, lambda d: {"risk": None})
        ledger.decide("older", "c-old", proposal(0.4, "20261001T000000Z-000000"), NOW, None)
        with pytest.raises(DataValidationError, match=r"column 'release'"):
            monitor(reference, read_frame(str(ledger.export_decisions(tmp_path / f"all{suffix}"))))
        out = ledger.export_decisions(tmp_path / f"decisions{suffix}", release=RELEASE)

    exported = read_frame(str(out))
    assert {"customer_id", "decided_at", "churn_probability", "release"} <= set(exported.columns)
    report = monitor(reference, exported, batch, outcomes)
    direct = monitor(reference, log, batch, outcomes)
    assert report.decisions == direct.decisions == len(log) and report.unscored == 1
    assert "(and 1 without a score)" in report.summary()
    assert report.score["psi"] == pytest.approx(direct.score["psi"])
    assert report.recent.auc == pytest.approx(direct.recent.auc)
    assert [r.fired for r in report.rules] == [r.fired for r in direct.rules]
