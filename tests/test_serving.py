"""serving: the predictors (V1 and V2) and the orchestrating transformer on the tiny pipeline's models.

The predictors are real KServe models loaded from the model store the tiny end-to-end run
pushed; they run in a real HTTP server on loopback because the transformer reaches them over
HTTP. Killing that server is how a predictor outage is tested.
"""

import asyncio
import json
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from retention.config import PREDICTORS, load_profile
from retention.deploy.manifests import render
from serving.app import create_app
from serving.manifest_check import validate_inference_service
from serving.server import build_predictors, build_transformer

FACTS = {
    "customer_id": "c-17",
    "name": "Sam",
    "tenure": 3,
    "plan": "Pro",
    "MonthlyCharges": 89.5,
    "Contract": "Month-to-month",
    "timezone": "Europe/London",
}
DAYTIME = "2026-11-23T12:00:00+00:00"


@pytest.fixture(scope="module")
def profile(tiny_run):
    tmp, proc = tiny_run
    assert proc.returncode == 0, proc.stdout[-2000:]
    return load_profile("tiny", overrides=[f"model_store={tmp / 'model-store'}"])


@pytest.fixture(scope="module")
def predictors(profile):
    return build_predictors(profile, PREDICTORS)


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


def _transformer(profile, tmp_path, urls, treatment_share=None):
    p = profile.model_copy(deep=True)
    p.serving.ledger.url = f"sqlite:///{tmp_path / 'ledger.db'}"
    if treatment_share is not None:
        p.serving.experiment.treatment_share = treatment_share
    t, extra = build_transformer(p, urls)
    return t, create_app([t], extra)


def _post_all(app, bodies):
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await asyncio.gather(*(client.post("/retain", json=b) for b in bodies))

    return asyncio.run(go())


# ------------------------------------------------------------------------------------ predictors


def test_every_predictor_loads_and_is_ready(predictors):
    assert [p.name for p in predictors] == list(PREDICTORS)
    assert all(p.ready for p in predictors)


def test_risk_speaks_v1_and_v2(predictors):
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


def test_accept_returns_all_four_levels_in_one_call(predictors):
    client = TestClient(create_app(predictors))
    r = client.post("/v1/models/accept:predict", json={"instances": [FACTS, FACTS]})
    assert r.status_code == 200, r.text
    curves = [p["accept_probability"] for p in r.json()["predictions"]]
    assert len(curves) == 2 and all(len(c) == 4 for c in curves)
    assert all(0 <= x <= 1 for c in curves for x in c)


def test_policy_rejects_a_malformed_observation_naming_the_field(predictors):
    client = TestClient(create_app(predictors))
    r = client.post("/v1/models/policy:predict", json={"instances": [{"observation": [0.1] * 3}]})
    assert r.status_code == 400
    assert "instances[0].observation" in r.text
    ok = client.post("/v1/models/policy:predict", json={"instances": [{"observation": [0.2] * 18}]})
    assert ok.status_code == 200, ok.text
    pred = ok.json()["predictions"][0]
    assert 0 < pred["action_probability"] <= 1 and pred["offer_level"] in range(4)


def test_an_unloaded_predictor_is_not_ready(profile, tmp_path):
    bad = profile.model_copy(deep=True)
    bad.model_store = str(tmp_path / "empty-store")
    (m,) = build_predictors(bad, ["risk"])
    client = TestClient(create_app([m]))
    assert client.get("/v1/models/risk").status_code == 503
    assert client.post("/v1/models/risk:predict", json={"instances": [FACTS]}).status_code == 503


# ----------------------------------------------------------------------------------- transformer


def test_retain_answers_the_contract(profile, predictor_server, tmp_path):
    urls = {n: predictor_server.url for n in PREDICTORS}
    t, app = _transformer(profile, tmp_path, urls)
    body = {"request_id": "r-1", "customer_facts": FACTS, "send_at": DAYTIME}
    (r,) = _post_all(app, [body])
    assert r.status_code == 200, r.text
    out = r.json()
    assert set(out) >= {"decision", "message", "safety", "risk", "experiment", "models", "degraded"}
    assert out["degraded"] == []
    assert out["experiment"]["arm"] in ("treatment", "control")
    assert out["models"]["risk"] and out["models"]["policy"]
    assert 0 <= out["risk"]["churn_probability"] <= 1
    if out["decision"]["contact"]:
        assert out["safety"]["passed"] is not None and out["message"]
        assert "Sam" in out["message"]


def test_validation_errors_name_the_field(profile, predictor_server, tmp_path):
    urls = {n: predictor_server.url for n in PREDICTORS}
    _, app = _transformer(profile, tmp_path, urls)
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
    assert blocked == {"cooldown"} or blocked >= {"cooldown"}
    assert len(t.ledger.contacts("c-17")) == 1


def test_a_killed_predictor_falls_back_and_says_so(profile, predictors, tmp_path):
    srv = Server(create_app(predictors))
    urls = {n: srv.url for n in PREDICTORS}
    _, app = _transformer(profile, tmp_path, urls)
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
    assert out["decision"]["source"] in ("rules", "bau")
    if out["decision"]["contact"]:
        # The writer is down too: the template, still shielded.
        assert "writer" in out["degraded"] and out["safety"]["passed"] is True


def test_quiet_hours_block_the_contact(profile, tmp_path):
    _, app = _transformer(profile, tmp_path, {}, treatment_share=1.0)
    night = {"request_id": "n-1", "customer_facts": {**FACTS, "timezone": "Asia/Tokyo"},
             "send_at": "2026-11-23T14:30:00+00:00"}  # 23:30 in Tokyo  # fmt: skip
    (r,) = _post_all(app, [night])
    assert r.json()["decision"]["contact"] is False
    assert "quiet_hours" in r.json()["decision"]["blocked_by"]


def test_health_ready_and_metrics(profile, predictor_server, tmp_path):
    urls = {n: predictor_server.url for n in PREDICTORS}
    _, app = _transformer(profile, tmp_path, urls)

    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            await c.post("/retain", json={"customer_facts": FACTS, "send_at": DAYTIME})
            return [await c.get(p) for p in ("/healthz", "/readyz", "/metrics")]

    health, ready, metrics = asyncio.run(go())
    assert health.status_code == 200
    assert ready.status_code == 200 and all(ready.json()["predictors"].values())
    text = metrics.text
    assert 'retention_hop_seconds_count{hop="risk"}' in text
    assert "retention_decisions_total" in text


# ------------------------------------------------------------------------------------- manifests


def test_manifests_follow_the_inference_service_schema(profile):
    gcp = load_profile("gcp")
    pointer = {
        "release": "20261123-1",
        "uris": {s: f"gs://b/{s}/20261123-1" for s in
                 ("risk", "accept", "decision", "writer", "phase_health")},
    }  # fmt: skip
    docs = render(gcp, pointer)
    assert [d["metadata"]["name"] for d in docs] == [*PREDICTORS, "retention"]
    for d in docs:
        assert validate_inference_service(d) == [], d["metadata"]["name"]
        pred = d["spec"]["predictor"]
        assert pred["minReplicas"] >= 0 and pred["maxReplicas"] >= 1 and pred["scaleMetric"]
        assert pred["containers"][0]["readinessProbe"]["httpGet"]["path"].startswith("/v1/models")
    by_name = {d["metadata"]["name"]: d["spec"]["predictor"] for d in docs}
    writer = by_name["writer"]
    assert writer["nodeSelector"] == gcp.pipeline.gpu_pool.node_selector
    assert writer["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert writer["containers"][0]["image"] == gcp.serving.writer_image
    assert {p["serviceAccountName"] for p in by_name.values()} == {"retention-serving"}
    assert "nvidia.com/gpu" not in by_name["risk"]["containers"][0]["resources"]["limits"]
    urls = json.loads(
        next(e["value"] for e in by_name["retention"]["containers"][0]["env"]
             if e["name"] == "RETENTION_PREDICTOR_URLS")
    )  # fmt: skip
    assert urls["risk"] == "http://risk-predictor.retention.svc.cluster.local"
    env = {e["name"]: e for e in docs[0]["spec"]["predictor"]["containers"][0]["env"]}
    assert env["STORAGE_URI"]["value"] == "gs://b/risk/20261123-1"
    broken = json.loads(json.dumps(docs[0]))
    broken["spec"]["predictor"]["minReplica"] = 1
    broken["spec"]["predictor"]["containers"][0]["resources"]["limits"] = "lots"
    errors = validate_inference_service(broken)
    assert "spec.predictor.minReplica: not a field of V1beta1PredictorSpec" in errors
    assert any("resources.limits" in e for e in errors)
