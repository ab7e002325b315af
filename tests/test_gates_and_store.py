import json

import pytest

from retention import catalogue
from retention.config import ModelGates
from retention.evaluation.evaluate import evaluate_run
from retention.evaluation.gates import evaluate, gates_from_config
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.registry.release import push_models
from retention.results import AcceptResult, PhaseHealthResult, RiskResult
from retention.store.model_store import LocalBackend, ModelStore


def test_gates_come_from_config_fields():
    gates = gates_from_config(
        {"risk": ModelGates(min={"test_auc": 0.8}, max={"test_ece": 0.05})}
        | {"accept": ModelGates(max={"monotone_violations": 0})}
    )
    triples = {(g.model, g.metric, g.op) for g in gates}
    assert triples == {
        ("risk", "test_auc", ">="),
        ("risk", "test_ece", "<="),
        ("accept", "monotone_violations", "<="),
    }


def test_failed_gate_says_which_metric_and_by_how_much():
    res = evaluate(
        {"risk": ModelGates(min={"test_auc": 0.8}, max={"test_ece": 0.05})},
        {"risk": RiskResult(test_auc=0.75, test_ece=0.01)},
    )
    failed = [r for r in res if not r.passed]
    assert len(failed) == 1
    assert "risk.test_auc = 0.7500 misses >= 0.8 by 0.0500" in failed[0].message


def test_a_gated_model_that_was_not_trained_fails_saying_so():
    res = evaluate({"accept": ModelGates(min={"test_auc": 0.7})}, {})
    assert len(res) == 1 and not res[0].passed
    assert res[0].message == "accept.test_auc: accept was not trained in this run (no result)"


def test_an_unmeasured_field_fails_its_gate():
    # NaN (an empty bootstrap) is stored as not measured, and a gate on it fails.
    r = RiskResult(test_auc=0.8, test_ece=0.01, test_auc_ci_low=float("nan"))
    assert r.test_auc_ci_low is None
    res = evaluate({"risk": ModelGates(min={"test_auc_ci_low": 0.7})}, {"risk": r})
    assert not res[0].passed and "was not measured" in res[0].message


def test_a_gate_reads_the_field_of_the_models_own_result():
    with pytest.raises(KeyError, match="RiskResult has no numeric field 'monotone_violations'"):
        RiskResult(test_auc=0.8, test_ece=0.01).value("monotone_violations")
    assert (
        AcceptResult(test_auc=0.8, test_ece=0.01, monotone_violations=0).value(
            "monotone_violations"
        )
        == 0.0
    )


def test_evaluate_run_loads_typed_results_and_writes_the_report(tmp_path, tiny):
    dirs = {}
    for name, result in {
        "risk": RiskResult(test_auc=0.9, test_ece=0.01, calibration="platt"),
        "phase_health": PhaseHealthResult(
            test_auc=0.8,
            test_min_phase_auc=0.75,
            details={
                "phase_order": ["Learn"],
                "phases": {
                    "Learn": {
                        "test_auc": 0.75,
                        "healthy_share": 0.5,
                        "drivers": [{"feature": "visits", "mean_abs_shap": 0.2}],
                        "summary": "Learn: 50% of customers are healthy.",
                    }
                },
            },
        ),
    }.items():
        (tmp_path / name).mkdir()
        result.save(tmp_path / name / METRICS_FILE)
        dirs[name] = tmp_path / name
    (tmp_path / "accept").mkdir()  # trained nothing
    dirs["accept"] = tmp_path / "accept"
    gates = {
        "risk": ModelGates(min={"test_auc": 0.8}),
        "phase_health": ModelGates(min={"test_min_phase_auc": 0.7}),
        "accept": ModelGates(min={"test_auc": 0.7}),
    }
    verdict = evaluate_run(tiny.model_copy(update={"gates": gates}), dirs, tmp_path / "report")
    assert not verdict.passed
    assert verdict.failures == ["accept.test_auc: accept was not trained in this run (no result)"]
    assert isinstance(verdict.results["risk"], RiskResult)
    html = (tmp_path / "report").read_text()
    assert "risk.test_auc = 0.9000 &gt;= 0.8" in html and "Learn: 50% of customers" in html
    assert "<td>calibration</td><td>platt</td>" in html
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["passed"] is False and saved["metrics"]["risk"]["test_auc"] == 0.9


def test_push_copies_exactly_the_released_models_under_their_names(tmp_path, tiny):
    released = [s.name for s in catalogue.released()]
    assert "policy" in released and "decision" not in released
    dirs = {}
    for name in released:
        (tmp_path / "run" / name / MODEL_DIR).mkdir(parents=True)
        (tmp_path / "run" / name / MODEL_DIR / "weights").write_text(name)
        dirs[name] = tmp_path / "run" / name
    profile = tiny.model_copy(update={"model_store": str(tmp_path / "store")})
    with pytest.raises(ValueError, match=r"missing writer; not expected none"):
        push_models(profile, {k: v for k, v in dirs.items() if k != "writer"})
    with pytest.raises(ValueError, match=r"not expected rm"):
        push_models(profile, dirs | {"rm": tmp_path / "run" / "risk"})
    assert not (tmp_path / "store" / "production").exists()
    pointer = push_models(profile, dirs)
    assert set(pointer["models"]) == set(released)
    for name in released:
        stored = tmp_path / "store" / name / pointer["models"][name] / "weights"
        assert stored.read_text() == name


def _model_dir(tmp_path, name, content):
    d = tmp_path / "src" / name
    d.mkdir(parents=True)
    (d / "model.json").write_text(content)
    return d


def test_push_creates_a_version_and_flips_production(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    first = store.push({"risk": _model_dir(tmp_path, "a", "v1")})
    second = store.push({"risk": _model_dir(tmp_path, "b", "v2")})
    prod = store.production()
    assert prod["release"] == second["release"] != first["release"]
    assert prod["previous_release"] == first["release"]
    assert (store.resolve("risk") / "model.json").read_text() == "v2"
    # The first version is still there, untouched.
    assert (
        tmp_path / "store" / "risk" / first["models"]["risk"] / "model.json"
    ).read_text() == "v1"


def test_crash_mid_push_leaves_production_unchanged(tmp_path, monkeypatch):
    store = ModelStore(str(tmp_path / "store"))
    before = store.push({"risk": _model_dir(tmp_path, "a", "v1")})
    calls = []

    def flaky_copy(self, src, dest):
        calls.append(dest)
        if len(calls) == 2:
            raise OSError("disk full")
        return original(self, src, dest)

    original = LocalBackend.copy_dir
    monkeypatch.setattr(LocalBackend, "copy_dir", flaky_copy)
    with pytest.raises(OSError, match="disk full"):
        store.push(
            {"risk": _model_dir(tmp_path, "b", "v2"), "accept": _model_dir(tmp_path, "c", "x")}
        )
    assert store.production() == before
    assert (
        json.loads((tmp_path / "store" / "production").read_text())["release"] == before["release"]
    )
    leftovers = [p.name for p in (tmp_path / "store").rglob(".*")]
    assert leftovers == []


def test_push_refuses_a_missing_model_dir(tmp_path):
    store = ModelStore(str(tmp_path / "store"))
    with pytest.raises(FileNotFoundError, match="model 'risk'"):
        store.push({"risk": tmp_path / "nope"})
    assert store.production() is None
