"""Start servers: one predictor (an InferenceService container), or the whole stack on loopback.

* ``serve_model(name)``: what each InferenceService runs. ``name`` is a served model of the
  catalogue (its service name), the orchestrator ``retention``, or ``predictors`` (all of them in
  one server). Predictors load from ``--model-dir`` (KServe mounts ``storageUri`` at
  ``/mnt/models``) or from the model store's ``production`` version of their catalogue model.
* ``serve_stack``: ``retention serve``. Every predictor in one child process on ``port + 1``
  (one model server, as a single-node KServe would colocate them) and the transformer on
  ``port``, both on loopback; Ctrl-C stops both.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable
from pathlib import Path

import uvicorn

from retention import catalogue
from retention.config import Profile
from retention.decision.policy import META_FILE, check_contract
from retention.fileio import read_json
from retention.store.model_store import ModelStore
from serving.app import create_app
from serving.predictors import Predictor, predictor_class

log = logging.getLogger(__name__)

ALL_PREDICTORS = "predictors"
# Where an unloadable predictor points: it stays registered, unready, and answers 503.
_NOWHERE = Path("/nonexistent")


def server_names() -> tuple[str, ...]:
    """What ``serve-model`` accepts."""
    return (catalogue.ORCHESTRATOR, ALL_PREDICTORS, *catalogue.services())


def _store(profile: Profile) -> ModelStore:
    return ModelStore(profile.model_store)


def model_dir_for(profile: Profile, service: str, cache: Path | None = None) -> Path:
    """The production files of the model a predictor serves."""
    return _store(profile).resolve(catalogue.by_service(service).name, cache)


def production_versions(profile: Profile) -> dict[str, str]:
    """Predictor name -> the production version of the model it serves."""
    by_store = (_store(profile).production() or {}).get("models", {})
    return {s.service: by_store[s.name] for s in catalogue.served() if s.name in by_store}


def build_predictors(
    profile: Profile, services: Iterable[str], model_dir: str | None = None
) -> list[Predictor]:
    """Loaded predictors; one that cannot load is left unready (503), not fatal, and logged."""
    models = []
    for service in services:
        cls = predictor_class(service)
        try:
            d = Path(model_dir) if model_dir else model_dir_for(profile, service)
        except LookupError as err:
            log.error("predictor %s did not load: %s", service, err)
            models.append(cls.from_profile(profile, _NOWHERE))
            continue
        m = cls.from_profile(profile, d)
        try:
            m.load()
        except Exception as err:  # noqa: BLE001 - any load failure leaves the model unready
            log.error("predictor %s did not load from %s: %s", service, d, err)
            m.ready = False
        models.append(m)
    return models


def build_transformer(profile: Profile, predictor_urls: dict[str, str]):
    from serving.ledger import ContactLedger
    from serving.routes import add_routes
    from serving.transformer import POLICY, PolicyContext, RetentionTransformer

    policy = PolicyContext(env=profile.decision.env)
    try:
        meta = read_json(model_dir_for(profile, POLICY) / META_FILE)
        check_contract(meta, profile.contract)
        policy = PolicyContext(
            env=type(profile.decision.env).model_validate(meta["env"]),
            mean_value=float(meta.get("mean_value", policy.mean_value)),
            available=True,
        )
    except (LookupError, OSError, KeyError, ValueError) as err:
        log.warning("no production policy (%s): every treatment decision uses the rules", err)
    ledger = ContactLedger.for_store(
        profile.model_store, profile.serving.ledger, profile.contract.limits
    )
    t = RetentionTransformer(
        profile.serving,
        predictor_urls,
        ledger,
        policy,
        profile.contract,
        production_versions(profile),
    )
    t.load()
    return t, (lambda app: add_routes(app, t))


def run_app(app, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def serve_model(profile: Profile, name: str, host: str, port: int, model_dir: str | None) -> None:
    if name not in server_names():
        raise ValueError(f"unknown model server {name!r} (known: {', '.join(server_names())})")
    if name == catalogue.ORCHESTRATOR:
        t, extra = build_transformer(profile, dict(profile.serving.predictor_urls))
        app = create_app([t], extra)
    elif name == ALL_PREDICTORS:
        app = create_app(build_predictors(profile, catalogue.services()))
    else:
        app = create_app(build_predictors(profile, [name], model_dir))
    run_app(app, host, port)


def wait_ready(
    url: str, proc: subprocess.Popen, seconds: float = 180, log_path: str | Path | None = None
) -> None:
    """Poll ``url`` until it answers 200; fail early, with the end of its log, if ``proc`` exits."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = Path(log_path).read_text(errors="replace")[-2000:] if log_path else ""
            raise RuntimeError(f"the server for {url} exited with code {proc.returncode}\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:  # noqa: S310 - our http URL
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} not ready after {seconds:.0f} s")


def serve_stack(profile: Profile, argv_profile: list[str], host: str, port: int) -> int:
    """The predictors in a child process, the transformer here; prints a ready curl line."""
    pport = port + 1
    child = subprocess.Popen(
        [sys.executable, "-m", "retention_cli.main", "serve-model", ALL_PREDICTORS,
         *argv_profile, "--host", host, "--port", str(pport)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        base = f"http://{host}:{pport}"
        wait_ready(f"{base}/v2/health/live", child)
        urls = {name: base for name in catalogue.services()}
        transformer, extra = build_transformer(profile, urls)
        app = create_app([transformer], extra)
        print(
            f"retention stack on http://{host}:{port} (predictors on {base}); try:\n"
            f"  curl -s http://{host}:{port}/retain -H 'content-type: application/json' "
            f"""-d '{{"request_id": "demo-1", "customer_facts": {{"customer_id": "c-17", """
            f""""name": "Sam", "tenure": 4, "plan": "Pro", "MonthlyCharges": 89.5, """
            f""""Contract": "Month-to-month", "timezone": "Europe/London"}}}}'""",
            flush=True,
        )
        run_app(app, host, port)
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
    return 0
