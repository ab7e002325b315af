import json

import pytest

from retention.config import GatesConfig, ModelGates
from retention.evaluation.gates import evaluate, gates_from_config
from retention.store.model_store import LocalBackend, ModelStore


def test_gates_come_from_config_fields():
    gates = gates_from_config(GatesConfig(risk=ModelGates(min={"auc": 0.8}, max={"ece": 0.05})))
    triples = {(g.model, g.metric, g.op) for g in gates}
    assert {("risk", "auc", ">="), ("risk", "ece", "<=")} <= triples
    assert ("accept", "monotone_violations", "<=") in triples


def test_failed_gate_says_which_metric_and_by_how_much():
    res = evaluate(
        GatesConfig(
            risk=ModelGates(min={"auc": 0.8}, max={"ece": 0.05}),
            accept=ModelGates(),
            phase_health=ModelGates(),
            ltv=ModelGates(),
            decision=ModelGates(),
            rm=ModelGates(),
            writer=ModelGates(),
        ),
        {"risk": {"test_auc": 0.75, "test_ece": 0.01}},
    )
    failed = [r for r in res if not r.passed]
    assert len(failed) == 1
    assert "risk.auc = 0.7500 misses >= 0.8 by 0.0500" in failed[0].message


def test_missing_model_fails_its_gates():
    res = evaluate(GatesConfig(), {})
    assert res and not any(r.passed for r in res)
    assert "was not measured" in res[0].message


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
