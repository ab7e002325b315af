"""Start servers: one predictor (an InferenceService container), or the whole stack on loopback.

* ``serve_model(name)``: what each InferenceService runs. Predictors load from ``--model-dir``
  (KServe mounts ``storageUri`` at ``/mnt/models``) or from the model store's ``production``.
* ``serve_stack``: ``retention serve``. The five predictors in one child process on
  ``port + 1`` (one model server, as a single-node KServe would colocate them) and the
  transformer on ``port``, both on loopback; Ctrl-C stops both.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import uvicorn

from retention.config import PREDICTORS, Profile
from retention.deploy.manifests import STORE_NAMES
from retention.fileio import read_json
from retention.store.model_store import ModelStore
from serving.app import create_app
from serving.predictors import PREDICTOR_CLASSES

log = logging.getLogger(__name__)


def _store(profile: Profile) -> ModelStore:
    return ModelStore(profile.model_store)


def model_dir_for(profile: Profile, predictor: str, cache: Path | None = None) -> Path:
    return _store(profile).resolve(STORE_NAMES[predictor], cache)


def production_versions(profile: Profile) -> dict[str, str]:
    prod = _store(profile).production() or {}
    by_store = prod.get("models", {})
    return {p: by_store[s] for p, s in STORE_NAMES.items() if s in by_store}


def build_predictors(profile: Profile, names, model_dir: str | None = None) -> list:
    """Loaded predictors; one that cannot load is left unready (503), not fatal, and logged."""
    models = []
    for name in names:
        try:
            d = Path(model_dir) if model_dir else model_dir_for(profile, name)
            kwargs = {"cache_dir": profile.writer.model.cache_dir} if name == "writer" else {}
            m = PREDICTOR_CLASSES[name](name, d, **kwargs)
            m.load()
        except Exception as err:  # noqa: BLE001 - any load failure leaves the model unready
            log.error("predictor %s did not load: %s", name, err)
            m = PREDICTOR_CLASSES[name](name, Path("/nonexistent"))
        models.append(m)
    return models


def build_transformer(profile: Profile, predictor_urls: dict[str, str]):
    from serving.ledger import ContactLedger
    from serving.routes import add_routes
    from serving.transformer import PolicyContext, RetentionTransformer

    policy = PolicyContext(env=profile.decision.env)
    try:
        meta = read_json(model_dir_for(profile, "policy") / "policy.json")
        policy = PolicyContext(
            env=type(profile.decision.env).model_validate(meta["env"]),
            mean_value=float(meta.get("mean_value", policy.mean_value)),
            available=True,
        )
    except (LookupError, OSError, KeyError, ValueError) as err:
        log.warning("no production policy (%s): every treatment decision uses the rules", err)
    ledger = ContactLedger.for_store(profile.model_store, profile.serving.ledger)
    t = RetentionTransformer(
        profile.serving, predictor_urls, ledger, policy, production_versions(profile)
    )
    t.load()
    return t, (lambda app: add_routes(app, t))


def run_app(app, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def serve_model(profile: Profile, name: str, host: str, port: int, model_dir: str | None) -> None:
    if name == "retention":
        urls = dict(profile.serving.predictor_urls)
        t, extra = build_transformer(profile, urls)
        run_app(create_app([t], extra), host, port)
    elif name == "predictors":
        run_app(create_app(build_predictors(profile, PREDICTORS)), host, port)
    elif name in PREDICTORS:
        run_app(create_app(build_predictors(profile, [name], model_dir)), host, port)
    else:
        raise ValueError(f"unknown model {name!r}: one of retention, predictors, {PREDICTORS}")


def _wait_ready(url: str, seconds: float, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the predictor server exited with code {proc.returncode}")
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
        [sys.executable, "-m", "retention_cli.main", "serve-model", "predictors",
         *argv_profile, "--host", host, "--port", str(pport)],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        base = f"http://{host}:{pport}"
        _wait_ready(f"{base}/v2/health/live", 180, child)
        urls = {name: base for name in PREDICTORS}
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
