"""`retention run --profile tiny` end to end through kfp.local, and the CLI's other entry points."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from retention import catalogue
from retention.contract import ContactContract
from retention.data import synthetic
from tests.conftest import PIPELINE_TASKS, SHARED_DATA

CLI = [sys.executable, "-m", "retention_cli.main"]


def _run(args, cwd):
    return subprocess.run(CLI + args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_tiny_profile_trains_gates_and_pushes(tiny_run):
    tmp, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prod = json.loads((tmp / "model-store" / "production").read_text())
    assert set(prod["models"]) == {s.name for s in catalogue.released()}
    version = prod["models"]["risk"]
    model_dir = tmp / "model-store" / "risk" / version
    assert (model_dir / "model.json").is_file() and (model_dir / "preprocess.json").is_file()
    policy_dir = tmp / "model-store" / "policy" / prod["models"]["policy"]
    # Champion/challenger: the release is named, and it never loses to the best heuristic; a
    # released rule is its policy.json alone, PPO is the TorchScript net beside it.
    (metrics,) = (tmp / "runs").glob("*/ppo-decision/model/metrics.json")
    released = json.loads(metrics.read_text())
    assert released["released"] in ("ppo", "risk_threshold", "lagrangian")
    assert released["released_reason"]
    assert released["released_vs_best_baseline_low"] >= 0
    meta = json.loads((policy_dir / "policy.json").read_text())
    assert (policy_dir / "policy.pt").is_file() == (released["released"] == "ppo")
    assert meta.get("rule", {}).get("kind", "ppo") == released["released"]
    assert "gate PASS: policy.released_vs_best_baseline_low" in proc.stdout
    assert "gate PASS: policy.fatigue_violations" in proc.stdout
    assert "gate PASS: uplift.test_qini" in proc.stdout
    writer_dir = tmp / "model-store" / "writer" / prod["models"]["writer"]
    assert (writer_dir / "ppo_adapter" / "adapter_config.json").is_file()
    assert (writer_dir / "sft_adapter" / "adapter_config.json").is_file()
    assert "gate PASS: writer.violation_rate_after_shield" in proc.stdout
    assert "gate PASS: risk.test_auc" in proc.stdout and "pushed release" in proc.stdout
    reports = list((tmp / "runs").glob("*/evaluate-gates/report"))
    assert reports and "<img" in reports[0].read_text()
    assert "greedy_knapsack" in reports[0].read_text()  # the policy comparison table
    (log,) = (tmp / "runs").glob("*/kfp.log")
    for task in PIPELINE_TASKS:
        assert f"Task '{task}' finished with status SUCCESS" in _plain(log.read_text()), task
    # The terminal: a start and an end line per task with its time, a time table, the log's
    # path, and none of the executor JSON (the profile) that goes to the log.
    import re

    for task in PIPELINE_TASKS:
        assert f"▶ {task}\n" in proc.stdout, task
        assert re.search(rf"^✓ {re.escape(task)}\s+\d+\.\d s$", proc.stdout, re.M), task
        assert re.search(rf"^  {re.escape(task)}\s+\d+\.\d\s+ok$", proc.stdout, re.M), task
    assert str(log) in proc.stdout
    assert '"config_json"' not in proc.stdout and "customers_per_episode" not in proc.stdout
    assert len(proc.stdout.splitlines()) < 150
    # The push registered the release: its registry entry and training reference are in the
    # model store, and it is the champion (the production pointer's alias).
    release = prod["release"]
    entry = json.loads((tmp / "model-store" / "registry" / f"{release}.json").read_text())
    assert entry["release"] == release and entry["passed"] is True and entry["gates"]
    assert entry["models"] == {s.name: release for s in catalogue.released()}
    assert entry["data"]["fingerprint"] and entry["code_version"]
    assert entry["reference"] == f"reference/{release}.json"
    reference = json.loads((tmp / "model-store" / entry["reference"]).read_text())
    assert reference["release"] == release and "tenure" in reference["features"]
    assert prod["aliases"]["champion"] == release
    assert f"pushed release {release} to " in proc.stdout and "(production)" in proc.stdout


def _plain(text: str) -> str:
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


# A second full tiny run (~3 min on 2 cores): in make test-all. The default suite still checks
# that push sits under the gate's dsl.If (test_pipeline) and that a failing gate fails (gates).
@pytest.mark.slow
def test_failed_gate_pushes_nothing_and_keeps_production(tiny_run):
    tmp, _ = tiny_run
    before = (tmp / "model-store" / "production").read_text()
    versions = sorted((tmp / "model-store" / "risk").iterdir())
    proc = _run(["run", "--profile", "tiny", "--set", "gates.risk.min.test_auc=0.999"], cwd=tmp)
    assert proc.returncode == 3
    assert "gate FAIL: risk.test_auc" in proc.stdout and "misses >= 0.999 by" in proc.stdout
    assert "nothing pushed" in proc.stdout
    assert (tmp / "model-store" / "production").read_text() == before
    assert sorted((tmp / "model-store" / "risk").iterdir()) == versions


def test_config_error_exits_2_naming_the_key(tmp_path):
    proc = _run(["run", "--profile", "tiny", "--set", "risk.depth=3"], cwd=tmp_path)
    assert proc.returncode == 2
    assert "unknown key 'risk.depth'" in proc.stderr


def test_train_risk_on_a_csv_it_has_never_seen(tmp_path):
    df = synthetic.bank_offers(1500, 3, ContactContract())
    df = df.rename(columns={"y": "subscribed"}).drop(columns=["contact_id"])
    data = tmp_path / "any.csv"
    df.to_csv(data, sep=";", index=False)
    proc = _run(
        [
            "train",
            "risk",
            "--data",
            str(data),
            "--target",
            "subscribed",
            "--positive",
            "yes",
            "--sep",
            ";",
            "--drop",
            "euribor3m",
            "--out",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["test_auc"] > 0.6
    meta = json.loads((tmp_path / "out" / "model" / "preprocess.json").read_text())
    assert "euribor3m" not in meta["preprocess"]["numeric"]


def test_train_risk_reports_bad_data_clearly(tmp_path):
    data = tmp_path / "bad.csv"
    data.write_text("a,b\n1,x\n")
    proc = _run(
        [
            "train",
            "risk",
            "--data",
            str(data),
            "--target",
            "y",
            "--positive",
            "1",
            "--out",
            str(tmp_path / "o"),
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "bad.csv: column 'y': required column is missing" in proc.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "telco.csv").is_file(), reason="../shared/data absent")
def test_telco_profile_trains_on_the_real_file(tmp_path):
    root = Path(__file__).resolve().parent.parent
    proc = _run(
        ["run", "--config", str(root / "configs" / "telco.yaml"),
         "--set", f"data.customers.uri={SHARED_DATA / 'telco.csv'}"],
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "gate PASS: risk.test_auc" in proc.stdout
