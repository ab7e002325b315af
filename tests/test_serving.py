"""serving: the predictors (V1 and V2) and the orchestrating transformer on a tiny real release.

The release is built in-process (``tests.serving_fixtures``): every served model of the
catalogue trained or exported by the project's own code from the tiny profile's synthetic data
and pushed with the real push, in seconds, without the training DAG. Predictors are called as
``kserve.Model`` objects and through the app; the transformer reaches them over HTTP, so they
also run in a real uvicorn server on loopback, and stopping that server is how a predictor
outage is tested.
"""

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest
import uvicorn
import yaml
from fastapi.testclient import TestClient
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferResponse

from retention import catalogue
from retention.config import load_profile
from retention.deploy.manifests import render
from retention.store.model_store import ModelStore
from serving import predictors as P
from serving.app import create_app
from serving.manifest_check import validate_inference_service
from serving.protocol import v2_request
from serving.server import (
    build_predictors,
    build_transformer,
    model_dir_for,
    production_versions,
    serve_model,
    server_names,
    wait_ready,
)
from tests.serving_fixtures import FACTS, NOON_TOMORROW, build_release, tiny_serving_profile

DAYTIME_AT = NOON_TOMORROW
DAYTIME = DAYTIME_AT.isoformat()


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """(profile, production pointer) of a tiny release pushed into a fresh model store."""
    root = tmp_path_factory.mktemp("serving")
    # Generous hop timeouts: the tests share two cores with other work and are not about them.
    profile = tiny_serving_profile(
        root, "serving.predictor_timeout_ms=5000", "serving.writer_timeout_ms=20000"
    )
    return profile, build_release(profile, root)


@pytest.fixture(scope="module")
def profile(release):
    return release[0]


@pytest.fixture(scope="module")
def predictors(profile):
    return build_predictors(profile, catalogue.services())


@pytest.fixture(scope="module")
def by_name(predictors):
    return {p.name: p for p in predictors}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A real uvicorn server on loopback in a thread; ``stop`` is the outage."""

    def __init__(self, app):
        self.port = _free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            assert time.monotonic() < deadline, "predictor server did not start"
            time.sleep(0.05)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def predictor_server(predictors):
    srv = Server(create_app(predictors))
    yield srv
    srv.stop()


def _urls(base: str) -> dict[str, str]:
    return {n: base for n in catalogue.services()}


def _transformer(
    profile, tmp_path, urls, treatment_share=None, ledger_url=None, mode="remote", local=None
):
    """The transformer on a fresh ledger; remote mode unless asked (these tests stop servers)."""
    p = profile.model_copy(deep=True)
    p.serving.ledger.url = ledger_url or f"sqlite:///{tmp_path / 'ledger.db'}"
    p.serving.mode = mode
    if treatment_share is not None:
        p.serving.experiment.treatment_share = treatment_share
    t, extra = build_transformer(p, urls, local=local)
    return t, create_app(t.served_models(), extra)


def _post_all(app, bodies):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(client.post("/retain", json=b) for b in bodies))

    return asyncio.run(go())


def _v2_outputs(response: InferResponse) -> dict[str, list]:
    body, _ = response.to_rest()  # the V2 REST body, as the server would send it
    return {o["name"]: o["data"] for o in body["outputs"]}


# ----------------------------------------------------------------------- catalogue -> predictors


def test_each_served_model_has_exactly_one_predictor_class():
    classes = P.predictor_classes()
    assert list(classes) == list(catalogue.services())
    for service, cls in classes.items():
        assert cls.service == service and cls.spec().service == service
    # One class per predictor: no two services share an implementation by accident.
    assert len(set(classes.values())) == len(classes)
    with pytest.raises(KeyError, match=r"unknown predictor 'uplift' \(known: risk, accept"):
        P.predictor_for("uplift")
    with pytest.raises(ValueError, match="both RiskPredictor and Again are registered"):

        @P.predictor_for("risk")
        class Again(P.BinaryPredictor):
            pass

    partial = {s: c for s, c in classes.items() if s != "writer"}
    with pytest.raises(ValueError, match=r"missing writer; not expected none"):
        P.check_complete(partial)
    with pytest.raises(KeyError, match="unknown predictor 'decision'"):
        P.predictor_class("decision")


def test_the_two_binary_predictors_share_one_loader():
    risk, accept = P.predictor_class("risk"), P.predictor_class("accept")
    assert issubclass(risk, P.BinaryPredictor) and issubclass(accept, P.BinaryPredictor)
    assert "load" not in vars(risk) and "load" not in vars(accept)


def test_predictors_load_the_store_folder_their_spec_names(release, predictors):
    profile, pointer = release
    assert [p.name for p in predictors] == list(catalogue.services())
    assert all(p.ready for p in predictors)
    for p in predictors:
        spec = catalogue.by_service(p.name)
        assert p.model_dir == model_dir_for(profile, p.name)
        assert p.model_dir.parent.name == spec.name  # e.g. phase-health -> phase_health/
    assert production_versions(profile) == {
        s.service: pointer["models"][s.name] for s in catalogue.served()
    }


# ------------------------------------------------------------------------------------ predictors


def test_risk_speaks_v1_and_v2(predictors, by_name):
    client = TestClient(create_app(predictors))
    v1 = client.post("/v1/models/risk:predict", json={"instances": [FACTS]})
    assert v1.status_code == 200, v1.text
    row = v1.json()["predictions"][0]
    assert 0.0 <= row["churn_probability"] <= 1.0 and len(row["factors"]) == 3
    v2 = client.post(
        "/v2/models/risk/infer",
        json={"inputs": [{"name": "instances", "shape": [1], "datatype": "BYTES",
                          "data": [json.dumps(FACTS)]}]},
    )  # fmt: skip
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    assert out["churn_probability"]["data"][0] == pytest.approx(row["churn_probability"])
    # The kserve.Model itself, called directly, answers both protocols the same.
    direct = asyncio.run(by_name["risk"].predict({"instances": [FACTS]}))
    assert direct["predictions"][0]["churn_probability"] == row["churn_probability"]
    v2_direct = asyncio.run(by_name["risk"].predict(v2_request([FACTS], "r-2")))
    assert v2_direct.id == "r-2"
    assert _v2_outputs(v2_direct)["churn_probability"][0] == pytest.approx(row["churn_probability"])


def test_partial_rows_name_the_features_they_lack(by_name):
    out = asyncio.run(by_name["risk"].predict({"instances": [{"tenure": 3}]}))["predictions"][0]
    assert 0.0 <= out["churn_probability"] <= 1.0
    assert "MonthlyCharges" in out["missing_features"] and "tenure" not in out["missing_features"]
    with pytest.raises(InvalidInput, match="non-empty list"):
        asyncio.run(by_name["risk"].predict({"instances": []}))


def test_accept_returns_every_offer_level_in_one_call(profile, predictors):
    client = TestClient(create_app(predictors))
    r = client.post("/v1/models/accept:predict", json={"instances": [FACTS, FACTS]})
    assert r.status_code == 200, r.text
    curves = [p["accept_probability"] for p in r.json()["predictions"]]
    levels = len(profile.contract.offers)
    assert len(curves) == 2 and all(len(c) == levels for c in curves)
    assert all(0 <= x <= 1 for c in curves for x in c)
    # The monotone constraint holds on the served model: more discount never less acceptance.
    assert all(a <= b + 1e-9 for c in curves for a, b in zip(c, c[1:], strict=False))


def test_policy_rejects_a_malformed_observation_naming_the_field(predictors, by_name):
    from retention.decision.env import OBS_NAMES

    client = TestClient(create_app(predictors))
    r = client.post("/v1/models/policy:predict", json={"instances": [{"observation": [0.1] * 3}]})
    assert r.status_code == 400
    assert "instances[0].observation" in r.text
    bad = client.post("/v1/models/policy:predict",
                      json={"instances": [{"observation": ["x"] * len(OBS_NAMES)}]})  # fmt: skip
    assert bad.status_code == 400 and "not numbers" in bad.text
    obs = {"observation": [0.2] * len(OBS_NAMES)}
    ok = client.post("/v1/models/policy:predict", json={"instances": [obs]})
    assert ok.status_code == 200, ok.text
    pred = ok.json()["predictions"][0]
    assert 0 < pred["action_probability"] <= 1 and pred["offer_level"] in range(4)
    env = by_name["policy"].meta["env"]
    assert pred["followup_days"] == env["followup_days"][pred["followup_index"]]
    v2 = asyncio.run(by_name["policy"].predict(v2_request([obs])))
    assert _v2_outputs(v2)["offer_level"][0] == pred["offer_level"]


def test_phase_health_scores_each_phase_and_names_an_unknown_one(predictors):
    from retention.models.phase_health import PHASES

    client = TestClient(create_app(predictors))
    rows = [{"phase": ph, "operational_metric": 0.5} for ph in PHASES]
    r = client.post("/v1/models/phase-health:predict", json={"instances": rows})
    assert r.status_code == 200, r.text
    out = r.json()["predictions"]
    assert [o["phase"] for o in out] == list(PHASES)
    assert all(0.0 <= o["health"] <= 1.0 for o in out)
    bad = client.post("/v1/models/phase-health:predict", json={"instances": [{"phase": "Sleep"}]})
    assert bad.status_code == 400 and "instances[0].phase" in bad.text


def test_writer_writes_raw_text_and_validates_its_input(by_name):
    writer = by_name["writer"]
    out = asyncio.run(writer.predict({"instances": [{"facts": {"name": "Sam"}, "offer_level": 2}]}))
    assert isinstance(out["predictions"][0]["message"], str)
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.offer_level: expected an integer 0-3"):
        asyncio.run(writer.predict({"instances": [{"facts": {}, "offer_level": 7}]}))
    with pytest.raises(InvalidInput, match=r"instances\[0\]\.facts"):
        asyncio.run(writer.predict({"instances": [{"facts": "Sam", "offer_level": 1}]}))


def test_an_unloaded_predictor_is_not_ready(profile, tmp_path):
    bad = profile.model_copy(deep=True)
    bad.model_store = str(tmp_path / "empty-store")
    (m,) = build_predictors(bad, ["risk"])
    client = TestClient(create_app([m]))
    assert client.get("/v1/models/risk").status_code == 503
    assert client.post("/v1/models/risk:predict", json={"instances": [FACTS]}).status_code == 503


def test_a_predictor_given_the_wrong_files_is_not_ready(profile):
    # The phase-health folder is not a BinaryModel: risk fails to load and answers 503.
    (m,) = build_predictors(
        profile, ["risk"], model_dir=str(model_dir_for(profile, "phase-health"))
    )
    assert not m.ready
    assert TestClient(create_app([m])).get("/v1/models/risk").status_code == 503


def test_serve_model_names_the_servers_it_knows(profile):
    assert server_names() == ("retention", "predictors", *catalogue.services())
    known = ", ".join(server_names())
    with pytest.raises(ValueError, match=rf"unknown model server 'decision' \(known: {known}\)"):
        serve_model(profile, "decision", "127.0.0.1", 0, None)


def test_wait_ready_returns_on_200_and_reports_a_dead_server(predictor_server, tmp_path):
    nowhere = f"http://127.0.0.1:{_free_port()}/"
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_ready(f"{predictor_server.url}/v1/models/risk", alive, seconds=10)
        with pytest.raises(TimeoutError, match="not ready after 1 s"):
            wait_ready(nowhere, alive, seconds=1)
    finally:
        alive.kill()
        alive.wait()
    log = tmp_path / "server.log"
    with log.open("w") as f:
        dead = subprocess.Popen(
            [sys.executable, "-c", "print('no model store'); raise SystemExit(3)"], stdout=f
        )
        dead.wait()
    with pytest.raises(RuntimeError, match=r"exited with code 3\nno model store"):
        wait_ready(nowhere, dead, seconds=10, log_path=log)


# ----------------------------------------------------------------------------------- transformer


def test_retain_answers_the_contract(profile, predictor_server, tmp_path):
    t, app = _transformer(profile, tmp_path, _urls(predictor_server.url), treatment_share=1.0)
    assert t.policy.available
    body = {"request_id": "r-1", "customer_facts": FACTS, "send_at": DAYTIME}
    (r,) = _post_all(app, [body])
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) >= {"decision", "message", "safety", "risk", "experiment", "models", "degraded"}
    assert out["degraded"] == []
    assert out["experiment"]["arm"] == "treatment" and out["decision"]["source"] == "policy"
    assert out["models"] == production_versions(profile)
    assert set(out["models"]) == set(catalogue.services())
    assert 0 <= out["risk"]["churn_probability"] <= 1
    # What the policy weighed: the expected net value of a contact at each level, for an
    # average responder (the request carries no campaign facts).
    assert len(out["uplift"]["expected_net_value"]) == 4 and out["uplift"]["offer_effect"] == 1.0
    if out["decision"]["contact"]:
        assert out["message"] and "Sam" in out["message"]
        assert out["safety"]["replaced_by_template"] is not out["safety"]["passed"]


def test_the_writers_text_is_shielded_and_the_template_sent_instead(
    profile, predictor_server, tmp_path
):
    from retention.messaging.shield import check_message

    # Only the writer deployed: the rules contact a customer in the first year (a check-in).
    _, app = _transformer(profile, tmp_path, {"writer": predictor_server.url}, treatment_share=1.0)
    (r,) = _post_all(app, [{"customer_facts": FACTS, "send_at": DAYTIME}])
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["decision"]["contact"] is True and "writer" not in out["degraded"]
    # The tiny random writer writes noise: the shield fails it and the template goes out.
    assert out["safety"]["passed"] is False and out["safety"]["replaced_by_template"] is True
    facts = {k: v for k, v in FACTS.items() if k != "customer_id"}
    level = out["decision"]["offer_level"]
    sent = check_message(out["message"], facts, level, profile.contract, send_at=DAYTIME_AT)
    assert sent.passed, sent.violations


def test_the_journey_adds_phase_health(profile, predictor_server, tmp_path):
    from retention.models.phase_health import PHASES

    _, app = _transformer(profile, tmp_path, _urls(predictor_server.url))
    journey = [{"phase": ph, "operational_metric": 0.4} for ph in PHASES]
    body = {"customer_facts": FACTS, "journey": journey, "send_at": DAYTIME}
    (r,) = _post_all(app, [body])
    assert r.status_code == 200, r.text
    health = r.json()["phase_health"]
    assert list(health["phases"]) == list(PHASES)
    assert health["overall"] == pytest.approx(sum(health["phases"].values()) / len(PHASES))


def test_validation_errors_name_the_field(profile, predictor_server, tmp_path):
    _, app = _transformer(profile, tmp_path, _urls(predictor_server.url))
    client = TestClient(app)
    r = client.post("/retain", json={"customer_facts": {"name": "Sam"}})
    assert r.status_code == 400 and "customer_facts.customer_id" in r.text
    r = client.post("/retain", json={"customer_facts": {**FACTS, "timezone": "Mars/Olympus"}})
    assert r.status_code == 400 and "customer_facts.timezone" in r.text
    r = client.post("/retain", json={"customer_facts": {**FACTS, "x": {"nested": 1}}})
    assert r.status_code == 400 and "customer_facts.x" in r.text
    r = client.post("/v1/models/retention:predict", json={"customer_facts": FACTS, "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.text
    r = client.post("/retain", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400


def test_a_retry_returns_the_first_answer_and_spends_once(profile, tmp_path):
    # No predictors: the rules engine contacts a customer in the first year (a check-in).
    t, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    body = {"request_id": "same", "customer_facts": FACTS, "send_at": DAYTIME}
    first, second = _post_all(app, [body]), _post_all(app, [body])
    assert first[0].json() == second[0].json()
    assert first[0].json()["decision"]["contact"] is True
    assert len(t.ledger.contacts("c-17")) == 1
    # The same id for another customer is a client error, never someone else's answer.
    other = {**body, "customer_facts": {**FACTS, "customer_id": "c-99"}}
    (r,) = _post_all(app, [other])
    assert r.status_code == 400 and "already used for another customer" in r.text


def test_200_concurrent_requests_for_one_customer_make_one_contact(profile, tmp_path):
    t, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    bodies = [{"request_id": f"c-{i}", "customer_facts": FACTS, "send_at": DAYTIME}
              for i in range(200)]  # fmt: skip
    responses = _post_all(app, bodies)
    assert all(r.status_code == 200 for r in responses)
    contacted = [r for r in responses if r.json()["decision"]["contact"]]
    assert len(contacted) == 1
    blocked = {b for r in responses for b in r.json()["decision"]["blocked_by"]}
    assert "cooldown" in blocked
    assert len(t.ledger.contacts("c-17")) == 1
    # Each proposed contact had its message before the write; only the one sent shows it.
    assert contacted[0].json()["message"] and contacted[0].json()["safety"]["passed"]
    refused = [r.json() for r in responses if not r.json()["decision"]["contact"]]
    assert all(a["message"] is None and a["safety"] is None for a in refused)


def test_a_killed_predictor_falls_back_and_says_so(profile, predictors, tmp_path):
    srv = Server(create_app(predictors))
    _, app = _transformer(profile, tmp_path, _urls(srv.url), treatment_share=1.0)
    (before,) = _post_all(app, [{"request_id": "k-1", "customer_facts": FACTS,
                                 "send_at": DAYTIME}])  # fmt: skip
    assert before.json()["degraded"] == []
    srv.stop()
    facts = {**FACTS, "customer_id": "c-18"}
    (after,) = _post_all(app, [{"request_id": "k-2", "customer_facts": facts,
                                "send_at": DAYTIME}])  # fmt: skip
    assert after.status_code == 200
    out = after.json()
    assert {"risk", "accept", "policy"} <= set(out["degraded"])
    assert out["decision"]["source"] == "rules"
    assert out["risk"]["churn_probability"] is None and out["uplift"] is None
    if out["decision"]["contact"]:
        # The writer is down too: the template, still shielded.
        assert "writer" in out["degraded"] and out["safety"]["passed"] is True


def test_quiet_hours_block_the_contact(profile, tmp_path):
    _, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    night = {"request_id": "n-1", "customer_facts": {**FACTS, "timezone": "Asia/Tokyo"},
             "send_at": DAYTIME_AT.replace(hour=14, minute=30).isoformat()}  # 23:30 in Tokyo  # fmt: skip
    (r,) = _post_all(app, [night])
    assert r.json()["decision"]["contact"] is False
    assert "quiet_hours" in r.json()["decision"]["blocked_by"]
    assert r.json()["message"] is None and r.json()["safety"] is None


def test_health_ready_and_metrics(profile, predictor_server, tmp_path):
    _, app = _transformer(profile, tmp_path, _urls(predictor_server.url))

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.post("/retain", json={"customer_facts": FACTS, "send_at": DAYTIME})
            return [await c.get(p) for p in ("/healthz", "/readyz", "/metrics")]

    health, ready, metrics = asyncio.run(go())
    assert health.status_code == 200
    assert ready.status_code == 200
    assert ready.json()["predictors"] == dict.fromkeys(sorted(catalogue.services()), True)
    assert ready.json()["policy_loaded"] is True
    text = metrics.text
    assert 'retention_hop_seconds_count{hop="risk"}' in text
    assert "retention_decisions_total" in text


def test_without_a_production_policy_treatment_uses_the_rules(profile, predictor_server, tmp_path):
    bare = profile.model_copy(deep=True)
    bare.model_store = str(tmp_path / "no-release")
    t, app = _transformer(bare, tmp_path, _urls(predictor_server.url), treatment_share=1.0)
    assert not t.policy.available and t.versions == {}
    (r,) = _post_all(app, [{"customer_facts": FACTS, "send_at": DAYTIME}])
    assert r.status_code == 200, r.text
    assert r.json()["decision"]["source"] == "rules" and r.json()["degraded"] == ["policy"]


def test_a_policy_trained_under_another_contract_is_not_used(profile, predictor_server, tmp_path):
    other = load_profile(
        "tiny",
        overrides=[f"model_store={profile.model_store}", "contract.limits.cooldown_days=30"],
    )
    t, app = _transformer(other, tmp_path, _urls(predictor_server.url), treatment_share=1.0)
    assert not t.policy.available
    (r,) = _post_all(app, [{"customer_facts": FACTS, "send_at": DAYTIME}])
    assert r.json()["decision"]["source"] == "rules" and "policy" in r.json()["degraded"]


# ------------------------------------------------------------------------------------- manifests


POINTER = {
    "release": "20261123-1",
    "uris": {s.name: f"gs://b/{s.name}/20261123-1" for s in catalogue.released()},
    "models": {s.name: f"v-{s.name}" for s in catalogue.released()},
}


def test_manifests_follow_the_inference_service_schema():
    gcp = load_profile("gcp", overrides=["serving.mode=remote"])
    docs = render(gcp, POINTER)
    # Remote mode: one service per served model and the orchestrator last.
    assert [d["metadata"]["name"] for d in docs] == [*catalogue.services(), catalogue.ORCHESTRATOR]
    for d in docs:
        assert validate_inference_service(d) == [], d["metadata"]["name"]
        pred = d["spec"]["predictor"]
        assert pred["minReplicas"] >= 0 and pred["maxReplicas"] >= 1 and pred["scaleMetric"]
        assert pred["containers"][0]["readinessProbe"]["httpGet"]["path"].startswith("/v1/models")
        dep = gcp.serving.deployments[d["metadata"]["name"]]
        assert (pred["minReplicas"], pred["maxReplicas"]) == (dep.min_replicas, dep.max_replicas)
    by_name = {d["metadata"]["name"]: d["spec"]["predictor"] for d in docs}
    for spec in catalogue.served():
        container = by_name[spec.service]["containers"][0]
        assert container["args"][:2] == ["serve-model", spec.service]
        env = {e["name"]: e["value"] for e in container["env"]}
        assert env["STORAGE_URI"] == f"gs://b/{spec.name}/20261123-1"
    writer = by_name["writer"]
    assert writer["nodeSelector"] == gcp.pipeline.gpu_pool.node_selector
    assert writer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert writer["containers"][0]["image"] == gcp.serving.writer_image
    assert writer["canaryTrafficPercent"] == 10
    assert {p["serviceAccountName"] for p in by_name.values()} == {"retention-serving"}
    assert "nvidia.com/gpu" not in by_name["risk"]["containers"][0]["resources"]["limits"]
    urls = json.loads(
        next(e["value"] for e in by_name["retention"]["containers"][0]["env"]
             if e["name"] == "RETENTION_PREDICTOR_URLS")
    )  # fmt: skip
    assert set(urls) == set(catalogue.services())
    assert urls["phase-health"] == "http://phase-health-predictor.retention.svc.cluster.local"
    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["predictor"]["minReplica"] = 1
    broken["spec"]["predictor"]["containers"][0]["resources"]["limits"] = "lots"
    errors = validate_inference_service(broken)
    assert "spec.predictor.minReplica: not a field of V1beta1PredictorSpec" in errors
    assert "spec.predictor.containers[0].resources.limits: expected a mapping" in errors
    broken["spec"]["predictor"]["tolerations"] = "all"
    assert "spec.predictor.tolerations: expected a list" in validate_inference_service(broken)


def test_a_release_missing_a_model_serves_only_what_it_has():
    release = {"release": "r1", "uris": {"risk": "gs://b/risk/r1"}}
    docs = render(load_profile("gcp", overrides=["serving.mode=remote"]), release)
    assert [d["metadata"]["name"] for d in docs] == ["risk", catalogue.ORCHESTRATOR]
    (colocated,) = render(load_profile("gcp"), release)
    mounts = colocated["spec"]["predictor"]["storageUris"]
    assert mounts == [{"uri": "gs://b/risk/r1", "mountPath": "/mnt/models/risk"}]


def _env(container) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container["env"]}


def test_colocated_manifests_mount_the_models_in_the_one_retention_service():
    gcp = load_profile("gcp")
    assert gcp.serving.mode == "colocated"
    docs = render(gcp, POINTER)
    # No service of their own for the co-located predictors: the writer stays remote (GPU).
    assert [d["metadata"]["name"] for d in docs] == ["writer", catalogue.ORCHESTRATOR]
    assert all(validate_inference_service(d) == [] for d in docs)
    retention = docs[-1]["spec"]["predictor"]
    colocated = [s for s in catalogue.served() if s.service != "writer"]
    # One storageUris entry per co-located model, its release URI under /mnt/models/SERVICE,
    # and the segments the orchestrator reads itself (answers' segments, the assistant).
    assert retention["storageUris"] == [
        *({"uri": POINTER["uris"][s.name], "mountPath": f"/mnt/models/{s.service}"}
          for s in colocated),
        {"uri": POINTER["uris"]["segments"], "mountPath": "/mnt/models/segments"},
    ]  # fmt: skip
    container = retention["containers"][0]
    assert container["args"][:2] == ["serve-model", catalogue.ORCHESTRATOR]
    assert container["args"][-2:] == ["--model-dir", "/mnt/models"]
    env = _env(container)
    assert "STORAGE_URI" not in env
    assert json.loads(env["RETENTION_PREDICTOR_URLS"]) == {
        "writer": "http://writer-predictor.retention.svc.cluster.local"
    }
    assert json.loads(env["RETENTION_MODEL_VERSIONS"]) == {
        catalogue.ORCHESTRATOR: "20261123-1",
        **{s.service: f"v-{s.name}" for s in colocated},
    }
    # Asked for, a co-located predictor gets its own service again (a canary), called over HTTP.
    canary = load_profile("gcp", overrides=['serving.remote_predictors=["risk", "writer"]'])
    docs = render(canary, POINTER)
    assert [d["metadata"]["name"] for d in docs] == ["risk", "writer", catalogue.ORCHESTRATOR]
    retention = docs[-1]["spec"]["predictor"]
    assert "/mnt/models/risk" not in {m["mountPath"] for m in retention["storageUris"]}
    assert set(json.loads(_env(retention["containers"][0])["RETENTION_PREDICTOR_URLS"])) == {
        "risk",
        "writer",
    }


def test_push_writes_the_manifests_of_the_release_it_pushed(release):
    profile, pointer = release
    store = ModelStore(profile.model_store)
    docs = list(yaml.safe_load_all(store.backend.read_text(f"manifests/{pointer['release']}.yaml")))
    assert docs == render(profile, pointer)
    uris = {d["metadata"]["name"]: e["value"] for d in docs
            for e in d["spec"]["predictor"]["containers"][0]["env"] if e["name"] == "STORAGE_URI"}  # fmt: skip
    uris |= {m["mountPath"].rsplit("/", 1)[-1]: m["uri"] for d in docs
             for m in d["spec"]["predictor"].get("storageUris", [])}  # fmt: skip
    # Every served model once: its own service's STORAGE_URI, or mounted in the orchestrator
    # (with the segments when co-located).
    want = {s.service: pointer["uris"][s.name] for s in catalogue.served()}
    if profile.serving.colocated():
        want["segments"] = pointer["uris"]["segments"]
    assert uris == want
    assert all(validate_inference_service(d) == [] for d in docs)


# ------------------------------------------------------------------------- ledger, idempotency


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request, tmp_path):
    """A fresh ledger database for one transformer: a SQLite file, or a PostgreSQL schema."""
    from tests.ledger_backends import (
        create_schema,
        drop_schema,
        new_schema_name,
        require_postgres,
        url_in_schema,
    )

    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    require_postgres()
    schema = new_schema_name("test_serving")
    create_schema(schema)
    yield url_in_schema(schema)
    drop_schema(schema)


def test_concurrent_retries_of_one_request_id_get_the_one_stored_answer(profile, ledger_url):
    # 24 requests with one id at once, each with another name, so an attempt that answered
    # with its own decision would show: every caller gets the single stored answer.
    t, app = _transformer(profile, None, {}, treatment_share=1.0, ledger_url=ledger_url)
    try:
        bodies = [{"request_id": "same-id", "send_at": DAYTIME,
                   "customer_facts": {**FACTS, "name": f"Sam{'i' * k}"}} for k in range(24)]  # fmt: skip
        responses = _post_all(app, bodies)
        assert [r.status_code for r in responses] == [200] * 24, responses[0].text
        answers = [r.json() for r in responses]
        assert all(a == answers[0] for a in answers)
        assert answers[0]["decision"]["contact"] is True and answers[0]["message"]
        stored = t.ledger.view("same-id", FACTS["customer_id"], DAYTIME_AT).answer
        assert stored == answers[0]
        assert len(list(t.ledger.decisions())) == 1 and len(t.ledger.contacts("c-17")) == 1
        # And a later retry, one by one, is the same answer again.
        (again,) = _post_all(app, [bodies[5]])
        assert again.json() == answers[0]
    finally:
        t.ledger.close()


def test_the_ledger_never_runs_on_the_event_loop(profile, tmp_path):
    from sqlalchemy import event

    t, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    threads: list[str] = []
    statements: list[str] = []

    def seen(conn, cursor, statement, *rest):
        threads.append(threading.current_thread().name)
        statements.append(statement)

    event.listen(t.ledger._base_engine, "before_cursor_execute", seen)
    bodies = [{"request_id": f"loop-{i}", "send_at": DAYTIME,
               "customer_facts": {**FACTS, "customer_id": f"c-{i % 3}"}} for i in range(12)]  # fmt: skip
    responses = [*_post_all(app, bodies), *_post_all(app, [bodies[0]])]
    assert all(r.status_code == 200 for r in responses)
    assert threads and all(name.startswith("ledger") for name in threads), set(threads)
    # One write transaction per decision; the retry was answered by its read alone.
    assert statements.count("BEGIN IMMEDIATE") == len(bodies)
    t.ledger.close()


def test_a_decision_recorded_by_a_batch_is_answered_as_recorded(profile, tmp_path):
    from dataclasses import replace

    from serving.ledger import Proposal

    t, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    rid = "batch:run-1:c-17"
    recorded = t.ledger.decide(
        rid, "c-17", Proposal(True, 2, 5.0, 30, "control", 1.0, "bau"), DAYTIME_AT
    )
    body = {"request_id": rid, "customer_facts": FACTS, "send_at": DAYTIME}
    (first,) = _post_all(app, [body])
    assert first.status_code == 200, first.text
    out = first.json()
    assert out["decision"]["contact"] is True and out["decision"]["offer_level"] == 2
    assert (out["decision"]["source"], out["decision"]["followup_days"]) == ("bau", 30)
    assert out["experiment"]["arm"] == "control" and out["experiment"]["propensity"] == 1.0
    assert out["message"] and out["safety"]["passed"]  # the recorded offer's message
    (again,) = _post_all(app, [body])
    assert again.json() == out
    assert t.ledger.get(rid) == replace(recorded, replay=True)
    assert len(t.ledger.contacts("c-17")) == 1
    t.ledger.close()


# ------------------------------------------------------------------------- co-located mode


def _colocated(predictors, profile):
    """The module's loaded predictors that the profile co-locates (the writer stays remote)."""
    return [p for p in predictors if p.name in profile.serving.colocated()]


def test_the_profile_chooses_which_predictors_are_colocated():
    from serving.server import stack_children

    local = load_profile("local")
    assert local.serving.mode == "colocated"
    assert local.serving.remote() == ("writer",)
    assert local.serving.colocated() == tuple(s for s in catalogue.services() if s != "writer")
    assert stack_children(local) == [("writer", ["writer"])]
    # Template messages only: no writer process to start at all.
    assert stack_children(load_profile("local", overrides=["serving.use_writer=false"])) == []
    remote = load_profile("local", overrides=["serving.mode=remote"])
    assert remote.serving.colocated() == () and remote.serving.remote() == catalogue.services()
    assert stack_children(remote) == [("predictors", list(catalogue.services()))]
    with pytest.raises(ValueError, match="serving.remote_predictors: must name 'writer'"):
        load_profile("local", overrides=['serving.remote_predictors=["risk"]'])
    with pytest.raises(ValueError, match=r"serving.remote_predictors: unknown name\(s\) 'uplift'"):
        load_profile("local", overrides=['serving.remote_predictors=["uplift", "writer"]'])


def test_colocated_and_remote_modes_give_the_same_answer(
    profile, predictors, predictor_server, tmp_path
):
    from retention.models.phase_health import PHASES

    quiet = profile.model_copy(deep=True)
    quiet.serving.use_writer = False  # the tiny writer's text is noise; the template is not
    journey = [{"phase": ph, "operational_metric": 0.4} for ph in PHASES]
    answers = {}
    for mode in ("remote", "colocated"):
        (tmp_path / mode).mkdir()
        t, app = _transformer(quiet, tmp_path / mode, _urls(predictor_server.url),
                              treatment_share=1.0, mode=mode,
                              local=_colocated(predictors, quiet) if mode == "colocated" else None)  # fmt: skip
        bodies = [
            {"request_id": "same-1", "customer_facts": FACTS, "send_at": DAYTIME,
             "journey": journey},
            {"request_id": "same-2", "customer_facts": {**FACTS, "customer_id": "c-2",
             "tenure": 40, "Contract": "Two year"}, "send_at": DAYTIME},
        ]  # fmt: skip
        answers[mode] = [r.json() for r in _post_all(app, bodies)]
        where = {n: t.hops.where(n) for n in t.hops.names()}
        if mode == "colocated":
            assert where == {**dict.fromkeys(quiet.serving.colocated(), "in-process"),
                             "writer": predictor_server.url}  # fmt: skip
        t.ledger.close()
    assert answers["colocated"] == answers["remote"]
    first = answers["colocated"][0]
    assert first["degraded"] == [] and first["decision"]["source"] == "policy"
    assert first["phase_health"] and first["risk"]["factors"]


def test_colocated_predictors_answer_on_the_transformers_own_server(
    profile, predictors, predictor_server, tmp_path
):
    from prometheus_client import REGISTRY

    local = _colocated(predictors, profile)
    t, app = _transformer(profile, tmp_path, _urls(predictor_server.url), mode="colocated",
                          local=local)  # fmt: skip
    hops_before = REGISTRY.get_sample_value("retention_hop_seconds_count", {"hop": "risk"}) or 0
    client = TestClient(app)
    for p in local:  # every co-located model keeps its own KServe routes
        assert client.get(f"/v1/models/{p.name}").status_code == 200, p.name
    r = client.post("/v1/models/risk:predict", json={"instances": [FACTS]})
    assert r.status_code == 200 and 0 <= r.json()["predictions"][0]["churn_probability"] <= 1
    ready = client.get("/readyz").json()
    assert ready["predictors"] == dict.fromkeys(sorted(catalogue.services()), True)
    (answer,) = _post_all(app, [{"customer_facts": FACTS, "send_at": DAYTIME}])
    assert answer.status_code == 200 and answer.json()["degraded"] == []
    # The in-process hop is measured like the HTTP one.
    assert REGISTRY.get_sample_value("retention_hop_seconds_count", {"hop": "risk"}) > hops_before
    t.ledger.close()


def test_a_colocated_predictor_that_fails_degrades_the_answer(profile, predictors, tmp_path):
    import xgboost as xgb

    (broken,) = build_predictors(profile, ["risk"])
    broken.fast.model.booster = xgb.Booster()  # an empty model: XGBoost raises on predict
    (unready,) = build_predictors(profile, ["accept"])
    unready.ready = False
    local = [{"risk": broken, "accept": unready}.get(p.name, p)
             for p in _colocated(predictors, profile)]  # fmt: skip
    t, app = _transformer(profile, tmp_path, {}, treatment_share=1.0, mode="colocated",
                          local=local)  # fmt: skip
    for inline in (True, False):
        broken.inline = inline
        (r,) = _post_all(app, [{"customer_facts": FACTS, "send_at": DAYTIME}])
        assert r.status_code == 200, r.text
        out = r.json()
        assert {"risk", "accept"} <= set(out["degraded"])
        assert out["risk"]["churn_probability"] is None and out["decision"]["source"] == "rules"
    hop = asyncio.run(t.hops.call("risk", [FACTS], 1000))
    assert not hop.ok and hop.error.startswith("XGBoostError: ")
    assert asyncio.run(t.hops.call("accept", [FACTS], 1000)).error == "not ready"
    t.ledger.close()


def test_in_process_hops_run_inline_or_in_a_thread_under_the_timeout(profile):
    from serving.hops import Hops

    (risk,) = build_predictors(profile, ["risk"])
    assert risk.warm_up(inline_below_ms=10_000) is not None and risk.inline
    assert risk.warm_up(inline_below_ms=0) is not None and not risk.inline
    hops = Hops({}, {"risk": risk})
    # In a worker thread, a call past its timeout is a failed hop; the answer is not awaited.
    slow = asyncio.run(hops.call("risk", [FACTS] * 20_000, timeout_ms=1))
    assert (slow.ok, slow.error) == (False, "timed out after 1 ms")
    ok = asyncio.run(hops.call("risk", [FACTS], timeout_ms=5000))
    assert ok.ok and ok.rows[0]["churn_probability"] == pytest.approx(
        asyncio.run(risk.predict({"instances": [FACTS]}))["predictions"][0]["churn_probability"]
    )
    # The checks the HTTP route would make apply in-process too.
    bad = asyncio.run(hops.call("risk", [{**FACTS, "tenure": [1, 2]}], timeout_ms=5000))
    assert not bad.ok and "instances[0].tenure" in bad.error
    assert asyncio.run(hops.call("nowhere", [FACTS], 10)).error == "not deployed"


# ------------------------------------------------------------------------- V2 model metadata


def _v2_inputs(name: str) -> dict:
    """A V2 request per predictor, in the column form its metadata describes."""
    from retention.decision.env import OBS_NAMES

    def col(n, datatype, data, shape=None):
        return {"name": n, "datatype": datatype, "shape": shape or [len(data)], "data": data}

    return {
        "risk": [col("tenure", "FP64", [3.0]), col("Contract", "BYTES", ["Month-to-month"])],
        "accept": [col("age", "FP64", [40.0])],
        "phase-health": [
            col("phase", "BYTES", ["Learn"]),
            col("operational_metric", "FP64", [0.5]),
        ],  # fmt: skip
        "ltv": [col("MonthlyCharges", "FP64", [89.5])],
        "policy": [col("observation", "FP32", [0.2] * len(OBS_NAMES), [1, len(OBS_NAMES)])],
        "writer": [
            col("facts", "BYTES", [json.dumps({"name": "Sam"})]),
            col("offer_level", "INT64", [2]),
        ],  # fmt: skip
    }[name]


def test_v2_metadata_lists_each_predictors_inputs_and_outputs(predictors):
    client = TestClient(create_app(predictors))
    for p in predictors:
        meta = client.get(f"/v2/models/{p.name}")
        assert meta.status_code == 200, (p.name, meta.text)
        inputs, outputs = meta.json()["inputs"], meta.json()["outputs"]
        assert inputs and outputs, p.name
        assert all(t["datatype"] in {"FP64", "FP32", "INT64", "BYTES"} for t in inputs + outputs)
        # A V2 call in the column form the metadata describes answers the outputs it lists.
        given = _v2_inputs(p.name)
        assert {i["name"] for i in given} <= {t["name"] for t in inputs}, p.name
        r = client.post(f"/v2/models/{p.name}/infer", json={"inputs": given})
        assert r.status_code == 200, (p.name, r.text)
        got = r.json()["outputs"]
        assert [(o["name"], o["datatype"]) for o in got] == [
            (t["name"], t["datatype"]) for t in outputs
        ], p.name
        for o, t in zip(got, outputs, strict=True):
            assert len(o["shape"]) == len(t["shape"]), (p.name, o["name"])
            assert all(d in (-1, n) for d, n in zip(t["shape"], o["shape"], strict=True))
    risk = {t["name"]: t for t in client.get("/v2/models/risk").json()["inputs"]}
    assert risk["tenure"]["datatype"] == "FP64" and risk["Contract"]["datatype"] == "BYTES"
    accept = client.get("/v2/models/accept").json()
    assert "offer_level" not in {t["name"] for t in accept["inputs"]}  # set by the model itself
    assert accept["outputs"][0] == {"name": "accept_probability", "datatype": "FP64",
                                    "shape": [-1, 4]}  # fmt: skip


def test_a_colocated_orchestrator_loads_its_models_from_the_mounts(profile, tmp_path, monkeypatch):
    # The layout the manifests' storageUris give the container: /mnt/models/SERVICE per model.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for service in profile.serving.colocated():
        (mnt / service).symlink_to(model_dir_for(profile, service), target_is_directory=True)
    monkeypatch.setenv("RETENTION_MODEL_VERSIONS", json.dumps({"risk": "mounted-7"}))
    p = profile.model_copy(deep=True)
    p.serving.ledger.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    t, _ = build_transformer(p, {}, model_root=mnt)
    local = t.hops.local
    assert list(local) == list(profile.serving.colocated())
    assert all(m.ready and m.model_dir == mnt / m.name for m in local.values())
    assert t.policy.available  # its metadata read from the policy's mount
    assert t.versions["risk"] == "mounted-7"
    t.ledger.close()


def test_an_answer_names_the_customers_segment_from_its_order_facts(
    profile, predictor_server, tmp_path
):
    from retention.insights.segments import SegmentModel
    from serving.server import _store

    _, app = _transformer(profile, tmp_path, _urls(predictor_server.url), treatment_share=1.0)
    segments = SegmentModel(_store(profile).resolve("segments"))
    rfm = {"days_since_last": 12, "frequency": 6, "total_spend": 480.0}
    facts = {**FACTS, "customer_id": "c-seg", **rfm}
    plain, with_rfm, partial = _post_all(app, [
        {"request_id": "s-1", "customer_facts": FACTS, "send_at": DAYTIME},
        {"request_id": "s-2", "customer_facts": facts, "send_at": DAYTIME},
        {"request_id": "s-3", "customer_facts": {**FACTS, "customer_id": "c-s3", "frequency": 2},
         "send_at": DAYTIME},
    ])  # fmt: skip
    assert plain.status_code == 200 and plain.json()["segment"] is None
    assert with_rfm.status_code == 200, with_rfm.text
    assert with_rfm.json()["segment"] == segments.assign([rfm])[0]
    assert partial.status_code == 400 and "days_since_last" in partial.text
