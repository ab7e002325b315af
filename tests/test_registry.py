"""The embedded registry: register, list, promote, rollback, atomic flips, Vertex dry-run."""

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from retention import catalogue
from retention.config import ModelGates
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.registry.registry import Registry, format_listing
from retention.registry.release import code_version, push_models
from retention.results import RiskResult
from retention.store.model_store import LocalBackend, ModelStore

RELEASED = [s.name for s in catalogue.released()]


def _trained(tmp_path, tag: str, auc: float = 0.9):
    """Every released model as a folder; risk with its metrics (the one gated here)."""
    dirs = {}
    for name in RELEASED:
        d = tmp_path / f"run-{tag}" / name
        (d / MODEL_DIR).mkdir(parents=True)
        (d / MODEL_DIR / "weights").write_text(f"{name}-{tag}")
        dirs[name] = d
    RiskResult(test_auc=auc, test_ece=0.01).save(dirs["risk"] / METRICS_FILE)
    return dirs


@pytest.fixture
def profile(tiny, tmp_path):
    gates = {"risk": ModelGates(min={"test_auc": 0.8})}
    return tiny.model_copy(update={"model_store": str(tmp_path / "store"), "gates": gates})


def _weights(store: ModelStore, model: str = "risk") -> str:
    return (store.resolve(model) / "weights").read_text()


def test_a_push_registers_metrics_gates_data_and_code(profile, tmp_path):
    splits = tmp_path / "splits" / "customers"
    splits.mkdir(parents=True)
    (splits / "train.parquet").write_bytes(b"not really parquet")
    pointer = push_models(profile, _trained(tmp_path, "a"))
    reg = Registry(ModelStore(profile.model_store))
    entry = reg.get(pointer["registered"])
    assert entry.models == dict.fromkeys(RELEASED, entry.release)
    assert entry.metrics["risk"]["test_auc"] == 0.9
    assert entry.passed and entry.gates[0]["metric"] == "test_auc"
    assert entry.gates[0]["passed"] and entry.gates[0]["value"] == 0.9
    assert entry.code_version == code_version()
    assert reg.aliases() == {"champion": entry.release}
    # A release whose push found a failing gate is recorded as such.
    second = push_models(profile, _trained(tmp_path, "b", auc=0.7))
    assert reg.get(second["registered"]).passed is False


def test_code_version_prefers_the_images_and_else_names_the_checkout():
    assert code_version({"RETENTION_CODE_VERSION": "abc123"}) == "abc123"
    v = code_version({})
    assert v and v != "abc123"  # a git sha here (+dirty), or the package version


def test_promote_rollback_and_listing(profile, tmp_path):
    store = ModelStore(profile.model_store)
    reg = Registry(store)
    a = push_models(profile, _trained(tmp_path, "a"))["registered"]
    b = push_models(profile, _trained(tmp_path, "b"))["registered"]
    assert store.production()["release"] == b and _weights(store) == "risk-b"
    assert store.production()["champions"] == [a]
    rows = format_listing(reg.listing())
    assert b in rows.splitlines()[1] and "champion" in rows.splitlines()[1]
    assert "previous-champion-1" in rows

    pointer = reg.rollback()
    assert pointer["release"] == a and pointer["rolled_back"] == b
    assert store.production()["release"] == a and _weights(store) == "risk-a"
    assert store.production()["models"] == dict.fromkeys(RELEASED, a)
    with pytest.raises(ValueError, match="no earlier champion to roll back to"):
        reg.rollback()
    reg.promote(b)  # forward again
    assert store.production()["release"] == b and store.production()["champions"] == [a]
    with pytest.raises(ValueError, match="no registered release 'nope'"):
        reg.promote("nope")


def test_manual_mode_registers_a_challenger_until_promoted(profile, tmp_path):
    manual = profile.model_copy(
        update={"registry": profile.registry.model_copy(update={"promote": "manual"})}
    )
    store = ModelStore(profile.model_store)
    reg = Registry(store)
    a = push_models(manual, _trained(tmp_path, "a"))["registered"]  # the first: the champion
    b = push_models(manual, _trained(tmp_path, "b"))["registered"]
    assert store.production()["release"] == a and _weights(store) == "risk-a"
    assert reg.aliases() == {"champion": a, "challenger": b}
    reg.promote("challenger")
    assert store.production()["release"] == b and reg.aliases() == {"champion": b}
    c = push_models(manual, _trained(tmp_path, "c", auc=0.5))["registered"]
    with pytest.raises(ValueError, match=f"release {c} did not pass its gates"):
        reg.promote("challenger")
    assert store.production()["release"] == b


def test_a_crash_mid_promote_leaves_production_as_it_was(profile, tmp_path, monkeypatch):
    store = ModelStore(profile.model_store)
    reg = Registry(store)
    a = push_models(profile, _trained(tmp_path, "a"))["registered"]
    push_models(profile, _trained(tmp_path, "b"))
    before = (tmp_path / "store" / "production").read_bytes()

    def crash(src, dst):  # the rename that would publish the new pointer
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        reg.rollback()
    with pytest.raises(OSError, match="power cut"):
        reg.promote(a)
    monkeypatch.undo()
    assert (tmp_path / "store" / "production").read_bytes() == before
    assert [p.name for p in (tmp_path / "store").glob(".production*")] == []
    assert reg.rollback()["release"] == a  # and the same step works once the disk does


def test_a_crash_mid_push_leaves_production_and_aliases_as_they_were(
    profile, tmp_path, monkeypatch
):
    store = ModelStore(profile.model_store)
    push_models(profile, _trained(tmp_path, "a"))
    before = (tmp_path / "store" / "production").read_bytes()
    original = LocalBackend.write_text_atomic

    def flaky(self, key, text):
        if key == "production":
            raise OSError("disk full")
        return original(self, key, text)

    monkeypatch.setattr(LocalBackend, "write_text_atomic", flaky)
    with pytest.raises(OSError, match="disk full"):
        push_models(profile, _trained(tmp_path, "b"))
    monkeypatch.undo()
    assert (tmp_path / "store" / "production").read_bytes() == before
    assert json.loads(before)["aliases"] == Registry(store).aliases()


@pytest.mark.slow
def test_a_running_stack_picks_up_a_rollback_without_restart(tmp_path):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.reload import install
    from serving.server import build_transformer, served_versions
    from tests.serving_fixtures import FACTS, NOON_TOMORROW, build_release, tiny_serving_profile

    profile = tiny_serving_profile(
        tmp_path,
        "serving.predictor_timeout_ms=5000",
        f"serving.ledger.url=sqlite:///{tmp_path}/l.db",
    )
    a = build_release(profile, tmp_path)["registered"]
    trained = {s.name: tmp_path / "trained" / s.name for s in catalogue.released()}
    b = push_models(profile, trained, splits=tmp_path / "splits")["registered"]
    t, extra = build_transformer(profile, {})
    app = create_app(t.served_models(), extra, versions=served_versions(profile))
    install(app, profile, list(t.hops.local), t)
    client = TestClient(app)

    def served():
        body = {"request_id": f"r-{len(calls)}", "send_at": NOON_TOMORROW.isoformat()}
        calls.append(1)
        answer = client.post("/retain", json={**body, "customer_facts": FACTS}).json()
        return answer["models"]["risk"], client.get("/v2/models/risk").json()["versions"]

    calls: list[int] = []
    assert served() == (b, [b])
    risk_before = t.hops.local["risk"]
    assert client.post("/admin/reload").json()["changed"] is False  # nothing new: a no-op

    Registry(ModelStore(profile.model_store)).rollback()
    answer = client.post("/admin/reload").json()
    assert answer["release"] == a and answer["previous"] == b and "risk" in answer["loaded"]
    assert served() == (a, [a])
    assert t.hops.local["risk"] is not risk_before

    # A release whose model cannot load is refused whole: the stack stays on what it serves.
    c = push_models(profile, trained, splits=tmp_path / "splits")["registered"]
    shutil.rmtree(tmp_path / "model-store" / "risk" / c)
    (tmp_path / "model-store" / "risk" / c).mkdir()
    bad = client.post("/admin/reload")
    assert bad.status_code == 500 and "risk" in bad.json()["error"] and a in bad.json()["error"]
    assert served() == (a, [a])


@pytest.fixture(scope="module")
def risk_releases(tmp_path_factory):
    """Two releases pushed with real tiny risk models (different seeds) and the run's splits;
    the other released models are placeholders (only risk is served here)."""
    from retention.config import load_profile
    from retention.data.ingest import ingest
    from retention.data.split import read_split, split
    from retention.models.binary import train_binary
    from retention.models.risk import columns_for

    root = tmp_path_factory.mktemp("risk-releases")
    profile = load_profile("tiny", overrides=[f"model_store={root / 'store'}"])
    ingest(profile, root / "data")
    split(profile, root / "data", root / "splits")
    parts = [read_split(root / "splits", "customers", p) for p in ("train", "valid", "test")]
    releases = []
    for seed in (1, 2):
        dirs = _trained(root, f"s{seed}")
        model = train_binary(
            *parts, columns_for(profile), profile.risk, seed, cross_validation=False
        )[0]
        shutil.rmtree(dirs["risk"] / MODEL_DIR)
        model.save(dirs["risk"] / MODEL_DIR)
        releases.append(push_models(profile, dirs, splits=root / "splits")["registered"])
    return profile, root, releases


def test_a_predictor_server_follows_a_rollback_on_reload(risk_releases):
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.reload import install
    from serving.server import build_predictors, served_versions

    profile, _, (a, b) = risk_releases
    store = ModelStore(profile.model_store)
    assert store.production()["release"] == b  # the last push is the champion
    app = create_app(build_predictors(profile, ["risk"]), versions=served_versions(profile))
    install(app, profile, ["risk"])
    client = TestClient(app)
    row = {"instances": [{"tenure": 3, "MonthlyCharges": 89.5, "Contract": "Month-to-month"}]}

    def state():
        p = client.post("/v1/models/risk:predict", json=row).json()["predictions"][0]
        return client.get("/v2/models/risk").json()["versions"], p["churn_probability"]

    (served_b, p_b) = state()
    assert served_b == [b]
    Registry(store).rollback()
    assert state() == (served_b, p_b)  # the flip alone changes nothing served...
    assert client.post("/admin/reload").json()["loaded"] == ["risk"]
    served_a, p_a = state()  # ...the reload does, without a restart
    assert served_a == [a] and p_a != p_b
    assert client.get(f"/v2/models/risk/versions/{b}").status_code == 404


def test_the_release_reference_drives_the_monitor_from_the_store(risk_releases, tmp_path):
    from retention.data.split import read_split
    from retention.models.binary import BinaryModel
    from retention.registry.monitor import monitor_release

    profile, root, (a, _) = risk_releases
    store = ModelStore(profile.model_store)
    entry = Registry(store).get(a)
    assert entry.reference == f"reference/{a}.json" and entry.data["fingerprint"]
    assert set(json.loads(store.backend.read_text(entry.reference))["features"]) >= {
        "tenure",
        "Contract",
    }
    # What the release would have served on the held-out customers, as a decision log.
    test = read_split(root / "splits", "customers", "test")
    model = BinaryModel.load(store.backend.root / "risk" / a)
    log = pd.DataFrame(
        {
            "customer_id": test["customerID"].astype(str),
            "decided_at": pd.Timestamp("2026-11-20", tz="UTC"),
            "churn_probability": model.predict_proba(test),
            "release": a,
        }
    )
    log.to_parquet(tmp_path / "log.parquet")
    halved = test.assign(tenure=test["tenure"] // 2)
    halved.to_csv(tmp_path / "batch.csv", index=False)
    report, paths, stored = monitor_release(
        profile,
        str(tmp_path / "log.parquet"),
        batch=str(tmp_path / "batch.csv"),
        release=a,
        out_dir=tmp_path / "out",
    )
    drift = next(r for r in report.rules if r.name == "drift")
    assert drift.fired and "tenure" in drift.features
    assert "churn_probability" not in drift.features  # served as trained: no score drift
    assert (Path(stored) / "report.html").is_file() and paths["json"].is_file()
    other = next(r for r in Registry(store).releases() if r != a)
    with pytest.raises(ValueError, match=r"log.parquet: column 'release': row 1 .*release"):
        monitor_release(profile, str(tmp_path / "log.parquet"), release=other)


def test_vertex_model_registry_requests_offline(profile, tmp_path, monkeypatch):
    """The requests the SDK itself builds for Model.upload and the alias moves, captured where
    it would send them: the champion/challenger pattern, versions under one parent model."""
    from retention.config import load_profile
    from retention.registry import vertex

    monkeypatch.setenv("NO_GCE_CHECK", "true")
    gcp = load_profile("gcp", overrides=[f"model_store={tmp_path / 'store'}"])
    reg = Registry(ModelStore(gcp.model_store))
    a = push_models(profile, _trained(tmp_path, "a"))["registered"]
    entry = reg.get(a).model_copy(
        update={"uris": {"risk": f"gs://my-retention-project-models/models/risk/{a}"}}
    )
    first = vertex.upload_release(gcp, reg, entry, promote=True, dry_run=True)["risk"]
    assert first["method"] == "UploadModel"
    req = first["request"]
    assert req["parent"] == "projects/my-retention-project/locations/us-central1"
    assert req["model_id"] == "retention-risk" and "parent_model" not in req
    model = req["model"]
    assert model["artifact_uri"] == entry.uris["risk"]
    assert model["version_aliases"] == [vertex.version_alias(a), "champion", "default"]
    assert model["container_spec"]["image_uri"] == gcp.serving.image
    assert model["labels"]["release"] == a.lower()

    # A later release is a new version of the same model; a challenger is not the default.
    reg.store.backend.write_text_atomic(
        f"registry/{a}.json",
        entry.model_copy(update={"vertex": {"risk": first}}).model_dump_json(),
    )
    later = vertex.upload_release(gcp, reg, entry, promote=False, dry_run=True)["risk"]["request"]
    assert later["parent_model"].endswith("/models/retention-risk") and "model_id" not in later
    assert later["model"]["version_aliases"] == [vertex.version_alias(a), "challenger"]

    moved = vertex.move_aliases(gcp, entry, dry_run=True)
    assert moved == [
        {
            "method": "MergeVersionAliases",
            "request": {
                "name": "projects/my-retention-project/locations/us-central1/models/"
                f"retention-risk@{vertex.version_alias(a)}",
                "version_aliases": ["champion", "default"],
            },
        }
    ]


def test_models_cli_lists_shows_rolls_back_and_dry_runs(profile, tmp_path, capsys):
    from retention_cli.main import main

    a = push_models(profile, _trained(tmp_path, "a"))["registered"]
    b = push_models(profile, _trained(tmp_path, "b"))["registered"]
    store = ["--profile", "tiny", "--set", f"model_store={profile.model_store}"]
    assert main(["models", "list", *store]) == 0
    out = capsys.readouterr().out
    assert out.index(b) < out.index(a) and "champion" in out
    assert main(["models", "show", "champion", *store]) == 0
    assert json.loads(capsys.readouterr().out)["release"] == b
    assert main(["models", "rollback", "--dry-run", *store]) == 0
    assert f"would make {a} production" in capsys.readouterr().out
    assert ModelStore(profile.model_store).production()["release"] == b
    assert main(["models", "rollback", *store]) == 0
    assert ModelStore(profile.model_store).production()["release"] == a
    assert main(["models", "rollback", *store]) == 2  # nothing earlier: an error, not a crash
    assert "no earlier champion" in capsys.readouterr().err


def test_the_registry_works_the_same_on_cloud_storage(tmp_path):
    from retention.registry.registry import RegistryEntry
    from retention.store.model_store import new_version
    from tests.test_fileio import _Client

    client = _Client()
    store = ModelStore("gs://models-bucket/retention", client=client)
    reg = Registry(store)
    made = []
    for tag in ("a", "b"):
        src = tmp_path / tag
        src.mkdir()
        (src / "weights").write_text(tag)
        v = new_version()
        uris = store.copy_versions({"risk": src}, v)
        reg.record(
            RegistryEntry(release=v, created=tag, models={"risk": v}, uris=uris, passed=True)
        )
        reg.promote(v)
        made.append(v)
    assert reg.releases() == sorted(made) and reg.aliases()["champion"] == made[1]
    assert reg.rollback()["release"] == made[0]
    assert (store.resolve("risk", tmp_path / "cache") / "weights").read_text() == "a"
    assert (
        json.loads(client.buckets["models-bucket"].objects["retention/production"])["champions"]
        == []
    )


def test_the_monitor_component_runs_under_kfp_local(risk_releases, tmp_path):
    """The monitor pipeline's first task, through kfp.local: its verdict and its HTML report."""
    from kfp import dsl, local

    from components.factory import build
    from components.monitor import monitor
    from retention.data.split import read_split
    from retention.models.binary import BinaryModel

    profile, root, (a, _) = risk_releases
    store = ModelStore(profile.model_store)
    test = read_split(root / "splits", "customers", "test")
    model = BinaryModel.load(store.backend.root / "risk" / a)
    pd.DataFrame(
        {
            "customer_id": test["customerID"].astype(str),
            "decided_at": pd.Timestamp("2026-11-20", tz="UTC"),
            "churn_probability": model.predict_proba(test),
            "release": a,
        }
    ).to_csv(tmp_path / "log.csv", index=False)
    test.assign(tenure=test["tenure"] // 2).to_csv(tmp_path / "batch.csv", index=False)
    task = build(monitor, profile, "monitor")

    @dsl.pipeline(name="monitor-only")
    def pipe() -> bool:
        return task(
            config_json=profile.model_dump_json(),
            decisions=str(tmp_path / "log.csv"),
            batch=str(tmp_path / "batch.csv"),
            outcomes="",
            release=a,
        ).outputs["Output"]

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"))
    assert pipe().output is True
    (page,) = (tmp_path / "kfp").rglob("report")
    assert "Retrain: drift" in page.read_text()
