"""A property-based fuzzer against the served OpenAPI: 0 server errors on every operation.

Schemathesis (its own CLI, as a new user would run it) reads ``/openapi.json`` from the
transformer and from the predictor server, both real uvicorn servers on loopback serving the
tiny release of ``tests.serving_fixtures``, and sends what the documents allow and what they do
not (examples, coverage, fuzzing and stateful phases). Model names and versions are drawn half
the time from what is served, so the cases reach real models, not only 404s: ``model_version``
equal to the served version and another one, loading known and unknown models, V2 inference on
each predictor, valid and invalid decisions on ``/retain``.

Unloading a served model makes it answer 503 until it is loaded again, by design, so the main
runs leave the unload operation out and a last run fuzzes loading and unloading alone.

Bounded: a fixed seed, ``MAX_EXAMPLES`` per operation, one worker, a per-request timeout. A control
run against KServe's stock V2 endpoints shows the same fuzzer finding the 501s and 503s that
issue 13 reported, so a green run here means they are fixed, not that nothing looked.
"""

import json
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest

from retention import catalogue
from serving.app import create_app
from serving.server import build_predictors, build_transformer, served_versions
from tests.serving_fixtures import LoopbackServer, build_release, tiny_serving_profile

MAX_EXAMPLES = 15
SEED = 13
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
UNKNOWN = "no-such-model-or-version"


@dataclass
class Stack:
    versions: dict[str, str]  # served name -> the version its V2 routes answer to
    models: list  # the loaded predictors
    transformer: LoopbackServer
    predictors: LoopbackServer
    on_transformer: list[str]  # what the transformer's server serves: itself, co-located ones


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The transformer and the predictors of a tiny release, each in a loopback server."""
    root = tmp_path_factory.mktemp("fuzz")
    profile = tiny_serving_profile(
        root,
        "serving.predictor_timeout_ms=5000",
        "serving.writer_timeout_ms=20000",
        f"serving.ledger.url=sqlite:///{root / 'ledger.db'}",
    )
    build_release(profile, root)
    versions = served_versions(profile)
    models = build_predictors(profile, catalogue.services())
    predictors = LoopbackServer(create_app(models, versions=versions))
    t, extra = build_transformer(profile, {n: predictors.url for n in catalogue.services()})
    # As `serve-model retention` serves it: with the predictors co-located in its process.
    transformer = LoopbackServer(create_app(t.served_models(), extra, versions=versions))
    yield Stack(versions, models, transformer, predictors, [m.name for m in t.served_models()])
    transformer.stop()
    predictors.stop()


def config(path: Path, names: list[str], versions: list[str]) -> Path:
    """A schemathesis config drawing model names and versions, half the time, from what is
    served (and one that is not)."""
    path.write_text(
        f"""
[dictionaries.models]
values = {json.dumps([*names, UNKNOWN])}

[dictionaries.versions]
values = {json.dumps([*sorted(set(versions)), UNKNOWN])}

[parameters]
"path.model_name" = {{ dictionary = "models", probability = 0.5 }}
"path.model_version" = {{ dictionary = "versions", probability = 0.5 }}
"query.model_version" = {{ dictionary = "versions", probability = 0.5 }}
"""
    )
    return path


@dataclass
class Run:
    """One schemathesis run: its JSON report and every request it sent, with the status."""

    report: dict
    requests: list[tuple[str, str, int]]  # (method, path?query, status)
    stdout: str

    def statuses(self, method: str, pattern: str) -> Counter:
        """Statuses of the requests whose path (with its query) matches ``pattern`` in full."""
        rx = re.compile(pattern)
        return Counter(s for m, url, s in self.requests if m == method and rx.fullmatch(url))

    def assert_no_server_errors(self) -> None:
        r, tail = self.report, self.stdout[-6000:]
        assert r["test_cases"]["with_failures"] == 0 and r["failures"] == [], tail
        assert r["errors"] == [] and r["exit_code"] == 0 and r["complete"], tail
        assert r["operations"]["tested"] == r["operations"]["selected"] > 0, tail
        assert not [s for _, _, s in self.requests if s >= 500], tail


def fuzz(url: str, tmp: Path, cfg: Path, *extra: str) -> Run:
    """Schemathesis' CLI against ``url``'s OpenAPI document, bounded."""
    report, har = tmp / "report.json", tmp / "requests.har"
    cmd = [SCHEMATHESIS, "--config-file", str(cfg), "run", f"{url}/openapi.json",
           "--checks", "not_a_server_error", "--max-examples", str(MAX_EXAMPLES),
           "--seed", str(SEED), "--workers", "1", "--request-timeout", "30",
           "--report", "json,har", "--report-json-path", str(report),
           "--report-har-path", str(har), *extra]  # fmt: skip
    # Its example database goes under the test's folder, not the checkout.
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False, cwd=tmp)
    if not report.is_file() or not har.is_file():
        raise AssertionError(f"schemathesis wrote no report:\n{run.stdout[-3000:]}{run.stderr}")
    entries = json.loads(har.read_text())["log"]["entries"]
    requests = [
        (e["request"]["method"], unquote(e["request"]["url"].removeprefix(url)),
         e["response"]["status"])
        for e in entries
    ]  # fmt: skip
    return Run(json.loads(report.read_text()), requests, run.stdout)


def test_the_transformer_has_no_server_errors(stack, tmp_path):
    release = re.escape(stack.versions[catalogue.ORCHESTRATOR])
    names = stack.on_transformer
    cfg = config(tmp_path / "st.toml", names, [stack.versions[n] for n in names])
    run = fuzz(stack.transformer.url, tmp_path, cfg, "--exclude-path-regex", "/unload$")
    run.assert_no_server_errors()
    assert run.report["test_cases"]["generated"] >= 500
    # Valid bodies reached a decision on both routes; invalid ones were 400s, never 500s.
    for route in ("/retain", "/v1/models/retention:predict"):
        seen = run.statuses("POST", re.escape(route))
        assert seen[200] > 0 and seen[400] > 0, (route, seen)
    # The served version is served, any other is a 404 (KServe answers 501 to both).
    assert run.statuses("GET", rf"/v2/models/retention/versions/{release}(/ready)?")[200] > 0
    assert run.statuses("GET", rf"/v2/models/retention(/ready)?\?model_version={release}")[200]
    assert run.statuses("GET", rf"/v2/models/retention/versions/{UNKNOWN}(/ready)?")[404] > 0
    # Loading the served model works; an unknown one is a 404 (KServe: 503).
    assert run.statuses("POST", "/v2/repository/models/retention/load")[200] > 0
    assert run.statuses("POST", f"/v2/repository/models/{UNKNOWN}/load").keys() == {404}


def test_the_predictor_server_has_no_server_errors(stack, tmp_path):
    versions, services = stack.versions, list(catalogue.services())
    cfg = config(tmp_path / "st.toml", services, [versions[s] for s in services])
    run = fuzz(stack.predictors.url, tmp_path, cfg, "--exclude-path-regex", "/unload$")
    run.assert_no_server_errors()
    assert run.report["test_cases"]["generated"] >= 400
    names = "|".join(re.escape(s) for s in services)
    version = "|".join(re.escape(v) for v in {versions[s] for s in services})
    assert run.statuses("GET", rf"/v2/models/({names})(/versions/({version}))?(/ready)?")[200] > 0
    assert run.statuses("GET", rf"/v2/models/({names})/versions/{UNKNOWN}(/ready)?")[404] > 0
    assert run.statuses("POST", rf"/v2/repository/models/({names})/load")[200] > 0
    assert run.statuses("POST", f"/v2/repository/models/{UNKNOWN}/load").keys() == {404}
    # Inference on the served models was attempted, by both protocols.
    assert sum(run.statuses("POST", rf"/v2/models/({names})/infer").values()) > 0
    assert sum(run.statuses("POST", rf"/v1/models/({names}):predict").values()) > 0


def test_loading_and_unloading_have_no_server_errors(stack, tmp_path):
    for server, names in (
        (stack.transformer, stack.on_transformer),
        (stack.predictors, list(catalogue.services())),
    ):
        cfg = config(tmp_path / "st.toml", names, [stack.versions[n] for n in names])
        run = fuzz(server.url, tmp_path, cfg, "--include-path-regex", "/repository/")
        run.assert_no_server_errors()
        unloads = run.statuses("POST", rf"/v2/repository/models/({'|'.join(names)})/unload")
        assert unloads[200] > 0 and set(unloads) <= {200, 404}, unloads


def test_the_fuzzer_finds_kserves_stock_v2_errors(stack, tmp_path):
    """The control: KServe's own app (its REST server's routes and error handlers) over a served
    model answers 501 to any ``model_version`` and 503 to loading an unknown model, and this
    fuzzer reports both."""
    from fastapi import FastAPI
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import RESTServer

    repo = ModelRepository(models_dir="/nonexistent")
    repo.update(next(m for m in stack.models if m.name == "risk"))
    app = FastAPI()
    kserve = RESTServer(app, DataPlane(model_registry=repo), ModelRepositoryExtension(repo), 0)
    kserve._register_endpoints(app)
    kserve._add_exception_handlers(app)
    stock = LoopbackServer(app)
    try:
        cfg = config(tmp_path / "st.toml", ["risk"], [stack.versions["risk"]])
        run = fuzz(stock.url, tmp_path, cfg, "--phases", "examples,coverage,fuzzing",
                   "--include-path-regex", "^/v2/")  # fmt: skip
    finally:
        stock.stop()
    assert run.report["test_cases"]["with_failures"] > 0
    errors = Counter(s for _, _, s in run.requests if s >= 500)
    assert errors[501] > 0 and errors[503] > 0, errors
