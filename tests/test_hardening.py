"""Serving against bad input: every item of issue 13's hardening list, on a tiny real release.

The transformer runs as ``serve-model retention`` runs it (its co-located predictors in-process,
the writer behind a real loopback server); the predictor server as ``serve-model predictors``.
Each test sends what a careless or hostile caller would and checks the answer names what was
wrong, never a 500, never an unbounded echo.
"""

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from kserve.errors import InvalidInput

from retention import catalogue
from retention.config import RequestLimits
from retention.contract import ContactContract
from retention.messaging.shield import check_message, template_message
from serving.app import create_app
from serving.protocol import v2_request
from serving.schema import RetainAnswer, parse_request, request_models
from serving.server import build_predictors, build_transformer, served_versions
from tests.serving_fixtures import (
    FACTS,
    NOON_TOMORROW,
    LoopbackServer,
    build_release,
    tiny_serving_profile,
)

LIMIT = 4096  # a small body limit, so that going over it is cheap


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    profile = tiny_serving_profile(
        root,
        "serving.predictor_timeout_ms=5000",
        "serving.writer_timeout_ms=20000",
        f"serving.limits.max_body_bytes={LIMIT}",
    )
    build_release(profile, root)
    return profile


@pytest.fixture(scope="module")
def predictors(release):
    return build_predictors(release, catalogue.services())


@pytest.fixture(scope="module")
def predictor_app(release, predictors):
    return create_app(
        predictors,
        versions=served_versions(release),
        max_body_bytes=release.serving.limits.max_body_bytes,
    )


@pytest.fixture(scope="module")
def writer_server(predictors):
    srv = LoopbackServer(create_app([p for p in predictors if p.name == "writer"]))
    yield srv
    srv.stop()


def transformer(
    profile, ledger_dir, predictors, urls, *, mode="colocated", treatment=1.0, **limits
):
    """(transformer, its app) as `serve-model retention` builds them; ``remote`` with no URLs is
    the rules engine and the template alone."""
    p = profile.model_copy(deep=True)
    ledger_dir.mkdir(parents=True, exist_ok=True)
    p.serving.ledger.url = f"sqlite:///{ledger_dir / 'ledger.db'}"
    p.serving.mode = mode
    p.serving.experiment.treatment_share = treatment
    p.serving.limits = p.serving.limits.model_copy(update=limits)
    local = [m for m in predictors if m.name in p.serving.colocated()]
    t, extra = build_transformer(p, urls, local=local)
    app = create_app(
        t.served_models(),
        extra,
        versions=served_versions(p),
        max_body_bytes=p.serving.limits.max_body_bytes,
    )
    return t, app


@pytest.fixture
def app(release, predictors, writer_server, tmp_path):
    return transformer(release, tmp_path, predictors, {"writer": writer_server.url})[1]


def post(app, path: str, body, **kw) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            if isinstance(body, (bytes, str)) or "content" in kw:
                headers = {"content-type": "application/json", **kw.pop("headers", {})}
                return await client.post(path, content=kw.pop("content", body), headers=headers)
            return await client.post(path, json=body)

    return asyncio.run(go())


def retain(app, facts=None, **body) -> httpx.Response:
    body = {"customer_facts": facts or FACTS, "send_at": NOON_TOMORROW.isoformat(), **body}
    return post(app, "/retain", body)


# ------------------------------------------------------------------------------ body limit


@pytest.mark.parametrize(
    "path",
    ["/retain", "/v1/models/retention:predict", "/v1/models/risk:predict",
     "/v2/models/risk/infer", "/metrics"],
)  # fmt: skip
def test_a_declared_body_over_the_limit_is_413_on_every_route(app, path):
    r = post(app, path, b" " * (LIMIT + 1))
    assert r.status_code == 413
    assert r.json() == {
        "error": f"body: larger than the limit of {LIMIT} bytes (serving.limits.max_body_bytes)"
    }


def test_the_predictor_server_has_the_same_limit(predictor_app):
    for path in ("/v1/models/risk:predict", "/v2/models/accept/infer"):
        r = post(predictor_app, path, b"[" * (LIMIT + 1))
        assert r.status_code == 413 and str(LIMIT) in r.json()["error"]


def test_a_chunked_body_is_counted_as_it_streams(app):
    chunks_sent = []

    async def stream():
        for _ in range(100):
            chunks_sent.append(1)
            yield b" " * 512

    r = post(app, "/retain", None, content=stream())
    assert r.status_code == 413 and "serving.limits.max_body_bytes" in r.json()["error"]
    # Refused once past the limit, not after reading all 50 KiB.
    assert len(chunks_sent) <= LIMIT // 512 + 2


def test_a_body_at_the_limit_is_read(app):
    body = json.dumps({"customer_facts": FACTS, "send_at": NOON_TOMORROW.isoformat()})
    padded = body + " " * (LIMIT - len(body))
    assert len(padded) == LIMIT
    assert post(app, "/retain", padded).status_code == 200


def test_a_real_server_refuses_a_chunked_body_over_the_limit(app):
    import socket

    srv = LoopbackServer(app)
    chunk = b" " * 1024
    request = (
        b"POST /retain HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
        + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(8))
        + b"0\r\n\r\n"
    )
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as sock:
            sock.sendall(request)  # one write: the whole request is in before the answer
            answer = b""
            while data := sock.recv(65536):
                answer += data
    finally:
        srv.stop()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "serving.limits.max_body_bytes" in json.loads(body)["error"]


# --------------------------------------------------------------------------- finite numbers


@pytest.mark.parametrize(
    ("fragment", "field"),
    [
        ('"value": Infinity', "customer_facts.value"),
        ('"MonthlyCharges": NaN', "customer_facts.MonthlyCharges"),
        ('"tenure": -Infinity', "customer_facts.tenure"),
        ('"TotalCharges": 1e999', "customer_facts.TotalCharges"),
    ],
)
@pytest.mark.parametrize("route", ["/retain", "/v1/models/retention:predict"])
def test_nan_and_infinity_are_400s_naming_the_field(app, fragment, field, route):
    body = f'{{"customer_id": "c-1", {fragment}}}'
    body = f'{{"customer_facts": {body}}}'
    if route.startswith("/v1"):
        body, field = f'{{"instances": [{body}]}}', f"instances.0.{field}"
    r = post(app, route, body)
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(f"invalid request: {field}: "), r.text
    assert "not a finite number" in r.json()["error"]


def test_a_number_too_large_for_a_model_is_a_400(app, predictor_app):
    r = retain(app, {**FACTS, "MonthlyCharges": 1e300})
    assert r.status_code == 400 and "customer_facts.MonthlyCharges: expected a finite" in r.text
    r = retain(app, {**FACTS, "value": 1e300})
    assert r.status_code == 400 and "customer_facts.value" in r.text
    journey = [{"phase": "Buy", "operational_metric": float("1e300")}]
    r = retain(app, journey=journey)
    assert r.status_code == 400 and "journey.0.operational_metric" in r.text
    # The predictors too: XGBoost refuses such a row, which used to be a 500.
    r = post(predictor_app, "/v1/models/risk:predict", {"instances": [{"tenure": 1e300}]})
    assert r.status_code == 400 and "instances[0].tenure" in r.text


def test_predictors_refuse_non_finite_numbers_in_v2_rows(predictor_app):
    row = '{"tenure": NaN}'
    body = {"inputs": [{"name": "instances", "shape": [1], "datatype": "BYTES", "data": [row]}]}
    r = post(predictor_app, "/v2/models/risk/infer", body)
    assert r.status_code == 400 and "inputs[instances][0].tenure: NaN" in r.text
    column = '{"inputs": [{"name": "tenure", "shape": [1], "datatype": "FP64", "data": [NaN]}]}'
    r = post(predictor_app, "/v2/models/risk/infer", column)
    assert r.status_code == 400 and "inputs[0].tenure" in r.text


def test_in_process_callers_get_the_same_checks():
    with pytest.raises(InvalidInput, match=r"customer_facts\.MonthlyCharges: expected a finite"):
        parse_request({"customer_facts": {"customer_id": "c", "MonthlyCharges": float("nan")}})
    with pytest.raises(InvalidInput, match=r"customer_facts\.value: Input should be a finite"):
        parse_request({"customer_facts": {"customer_id": "c", "value": float("inf")}})


# ------------------------------------------------------------------------------------ send_at


@pytest.mark.parametrize(
    "at",
    [
        "9999-12-31T23:59:59+00:00",
        "0001-01-01T00:00:00+23:59",
        (datetime.now(UTC) + timedelta(days=91)).isoformat(),
        (datetime.now(UTC) - timedelta(days=2)).isoformat(),
    ],
)
def test_send_at_outside_the_window_is_a_400(app, at):
    r = retain(app, send_at=at)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error.startswith("invalid request: send_at: must be at most 1 day(s) before and 90")
    assert "serving.limits.send_at_max_behind_days" in error


def test_send_at_inside_the_window_is_decided(app):
    for at in (datetime.now(UTC) + timedelta(days=89), datetime.now(UTC) - timedelta(hours=20)):
        r = retain(app, facts={**FACTS, "customer_id": f"w-{at:%j}"}, send_at=at.isoformat())
        assert r.status_code == 200, r.text


def test_the_window_is_the_profiles(release, predictors, tmp_path):
    _, app = transformer(release, tmp_path, predictors, {}, send_at_max_ahead_days=7)
    r = retain(app, send_at=(datetime.now(UTC) + timedelta(days=8)).isoformat())
    assert r.status_code == 400 and "7 days after now" in r.text


# -------------------------------------------------------------------------------- extra facts


def test_extra_facts_are_bounded_in_count(app):
    most = RequestLimits().max_extra_facts
    named = {k: v for k, v in FACTS.items() if k in ("customer_id", "name", "tenure", "plan")}
    full = {**named, **{f"f{i}": i for i in range(most)}}
    r = retain(app, full)
    assert r.status_code == 200, r.text
    r = retain(app, {**full, "one_more": 1})
    assert r.status_code == 400
    assert r.json()["error"] == (
        f"invalid request: customer_facts: {most + 1} extra facts, at most {most} "
        "(serving.limits.max_extra_facts)"
    )


def test_long_keys_and_values_are_refused_without_being_echoed(app):
    limits = RequestLimits()
    key = "k" * 1000
    r = retain(app, {**FACTS, key: 1})
    assert r.status_code == 400 and "serving.limits.max_fact_key_chars" in r.text
    assert len(r.text) < 400 and key not in r.text
    value = "v" * 1000
    r = retain(app, {**FACTS, "notes": value})
    assert r.status_code == 400
    assert f"customer_facts.notes: 1000 characters, at most {limits.max_fact_value_chars}" in r.text
    assert len(r.text) < 400
    r = retain(app, {**FACTS, "bad\x1b[31mkey": 1})
    assert r.status_code == 400 and "control characters" in r.text
    assert "\x1b" not in r.json()["error"] and "bad\\x1b[31mkey" in r.json()["error"]
    r = retain(app, {**FACTS, "nested": {"a": 1}})
    assert r.status_code == 400 and "customer_facts.nested: expected a string, number" in r.text
    r = retain(app, journey=[{f"k{i}": 1 for i in range(limits.max_extra_facts + 1)}])
    assert r.status_code == 400
    assert f"journey.0: {limits.max_extra_facts + 1} fields in a journey row" in r.text


def test_an_unknown_model_name_is_never_echoed_unbounded(app):
    name = "m" * 5000
    r = TestClient(app).get(f"/v2/models/{name}")
    assert r.status_code == 404 and len(r.text) < 1200


def test_the_answer_stays_small_for_the_largest_request(app):
    limits = RequestLimits(max_body_bytes=LIMIT)
    facts = {**FACTS, **{f"feature_{i}": "x" * 40 for i in range(limits.max_extra_facts - 2)}}
    body = {"customer_facts": facts, "send_at": NOON_TOMORROW.isoformat()}
    assert len(json.dumps(body)) < LIMIT
    r = retain(app, facts)
    assert r.status_code == 200, r.text
    assert len(r.content) < 4096


# ------------------------------------------------------------------- what reaches a message


@pytest.mark.parametrize("name", ["Сергей", "Ζωή", "王芳", "Nguyễn Văn An", "Zoë"])
def test_a_name_in_any_script_is_sent_as_written(release, predictors, tmp_path, name):
    # The rules and the template alone: a first-year customer gets a check-in, by name.
    _, app = transformer(release, tmp_path, predictors, {}, mode="remote")
    r = retain(app, {**FACTS, "name": name})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["decision"]["contact"], out
    assert out["message"].startswith(f"Hi {name},"), out["message"]
    assert out["safety"]["passed"], out["safety"]


def test_look_alike_letters_still_trip_the_shield():
    c = ContactContract()
    facts = {"name": "Сергей", "plan": "Pro"}
    message = template_message(facts, 2, c)
    assert check_message(message, facts, 2, c).passed
    spoof = message.replace("reply YES", "it is guаranteed, reply YES")  # a Cyrillic "а"
    assert "false_promise" in {v.rule for v in check_message(spoof, facts, 2, c).violations}


@pytest.mark.parametrize(
    "plan",
    ["Pro. Call evil.example/win now", "Pro bit.ly/x", "www.x.com", "Pro, mail a@b.co",
     "Pro +44 20 7946 0958"],
)  # fmt: skip
def test_contact_data_in_a_fact_never_reaches_the_message(release, predictors, tmp_path, plan):
    _, app = transformer(release, tmp_path, predictors, {}, mode="remote")
    r = retain(app, {**FACTS, "plan": plan})
    assert r.status_code == 200, r.text
    message = r.json()["message"]
    assert message and plan not in message and "Pro" not in message, message
    for piece in ("evil", "bit.ly", "www", "@", "7946"):
        assert piece not in message


# ------------------------------------------------------------------------------------ writer


def test_the_writer_is_used_by_one_thread_at_a_time(predictors):
    writer = next(p for p in predictors if p.name == "writer").writer
    inside, most, lock = 0, 0, threading.Lock()
    generate = writer.model.generate

    def counted(*args, **kwargs):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        try:
            time.sleep(0.01)  # long enough for another thread to arrive if it could
            return generate(*args, **kwargs)
        finally:
            with lock:
                inside -= 1

    facts = [{"name": n, "plan": "Pro", "tenure": 3} for n in ("Sam", "Ana", "Lee", "Kim")]
    expected = [writer.write([f], [2])[0] for f in facts]
    writer.model.generate = counted
    try:
        results: dict[int, str] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                results[i] = writer.write([facts[i % 4]], [2])[0]
                writer.timed_write(facts[i % 4], 2)
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=120)
    finally:
        writer.model.generate = generate
    assert not errors, errors
    assert most == 1
    assert [results[i] for i in range(8)] == [expected[i % 4] for i in range(8)]


def test_concurrent_writer_requests_all_answer(writer_server):
    async def go():
        async with httpx.AsyncClient(base_url=writer_server.url, timeout=60) as c:
            body = {"instances": [{"facts": {"name": "Sam"}, "offer_level": 2}]}
            return await asyncio.gather(
                *(c.post("/v1/models/writer:predict", json=body) for _ in range(8))
            )

    responses = asyncio.run(go())
    assert [r.status_code for r in responses] == [200] * 8
    assert len({r.json()["predictions"][0]["message"] for r in responses}) == 1


# --------------------------------------------------------------------------------- V2 routes


def test_v2_routes_serve_the_production_version(release, predictor_app):
    version = served_versions(release)["risk"]
    client = TestClient(predictor_app)
    meta = client.get(f"/v2/models/risk?model_version={version}")
    assert meta.status_code == 200 and meta.json()["versions"] == [version]
    assert client.get(f"/v2/models/risk/versions/{version}").status_code == 200
    assert client.get(f"/v2/models/risk/versions/{version}/ready").json()["ready"] is True
    body = v2_request([FACTS]).to_rest()[0]
    ok = client.post(f"/v2/models/risk/versions/{version}/infer", json=body)
    assert ok.status_code == 200, ok.text
    for path in ("/v2/models/risk?model_version=0", "/v2/models/risk/versions/0/ready"):
        r = client.get(path)
        assert r.status_code == 404
        assert r.json()["error"] == f"model 'risk' has no version '0' here: it serves '{version}'"
    assert client.post("/v2/models/risk/versions/0/infer", json=body).status_code == 404
    assert client.get("/v2/models/nope?model_version=1").status_code == 404


def test_loading_an_unknown_model_is_404_and_a_known_one_reloads(predictor_app):
    client = TestClient(predictor_app)
    r = client.post("/v2/repository/models/nope/load")
    assert r.status_code == 404 and "nope" in r.text
    assert client.post("/v2/repository/models/accept/load").json() == {
        "name": "accept",
        "load": True,
    }
    assert client.post("/v2/repository/models/accept/unload").status_code == 200
    assert client.get("/v1/models/accept").status_code == 404
    assert client.post("/v2/repository/models/accept/load").status_code == 200
    assert client.get("/v2/models/accept/ready").json()["ready"] is True


# ---------------------------------------------------------------------------------- OpenAPI


def test_the_openapi_document_publishes_the_request_and_the_answer(app, release):
    doc = TestClient(app).get("/openapi.json").json()
    schemas = doc["components"]["schemas"]
    retain_op = doc["paths"]["/retain"]["post"]
    body = retain_op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/RetainRequest"}
    ok = retain_op["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/RetainAnswer"}
    assert set(retain_op["responses"]) >= {"200", "400", "413", "503"}
    v1 = doc["paths"]["/v1/models/retention:predict"]["post"]
    forms = json.dumps(v1["requestBody"]["content"]["application/json"]["schema"])
    assert "RetainInstances" in forms and "RetainRequest" in forms
    assert "RetainAnswer" in json.dumps(v1["responses"]["200"])
    # The document states the profile's limits, which the validation enforces.
    limits = release.serving.limits
    facts = schemas["CustomerFacts"]
    assert facts["propertyNames"]["maxLength"] == limits.max_fact_key_chars
    assert {"type": "string", "maxLength": limits.max_fact_value_chars} in facts[
        "additionalProperties"
    ]["anyOf"]
    assert set(schemas["RetainAnswer"]["properties"]) == set(RetainAnswer.model_fields)


def test_the_published_limits_follow_the_profile():
    small = RequestLimits(max_extra_facts=3, max_fact_value_chars=10)
    schema = request_models(small).request.model_json_schema()
    facts = schema["$defs"]["CustomerFacts"]
    assert facts["maxProperties"] == 6 + 3
    assert {"type": "string", "maxLength": 10} in facts["additionalProperties"]["anyOf"]
    with pytest.raises(InvalidInput, match=r"4 extra facts, at most 3"):
        parse_request(
            {"customer_facts": {"customer_id": "c", "a": 1, "b": 2, "c": 3, "d": 4}}, small
        )


def test_real_answers_validate_against_the_published_answer(
    release, predictors, writer_server, tmp_path
):
    from retention.models.phase_health import PHASES

    journey = [{"phase": ph, "operational_metric": 0.4} for ph in PHASES]
    answers = []
    urls = {"writer": writer_server.url}
    _, app = transformer(release, tmp_path, predictors, urls)
    answers.append(retain(app, journey=journey, request_id="a-1"))
    answers.append(retain(app, request_id="a-1"))  # the stored answer of a retry
    answers.append(retain(app, {**FACTS, "customer_id": "c-18", "timezone": "Asia/Tokyo"},
                          send_at=NOON_TOMORROW.replace(hour=15).isoformat()))  # fmt: skip
    _, bare = transformer(release, tmp_path / "bare", predictors, {}, mode="remote", treatment=0)
    answers.append(retain(bare, {**FACTS, "customer_id": "c-19"}))
    for r in answers:
        assert r.status_code == 200, r.text
        RetainAnswer.model_validate_json(r.content)
    assert answers[0].json() == answers[1].json()
    assert answers[0].json()["phase_health"] is not None
    assert "quiet_hours" in answers[2].json()["decision"]["blocked_by"]
    assert answers[3].json()["experiment"]["arm"] == "control"
