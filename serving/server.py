"""Start servers: one predictor (an InferenceService container), or the whole stack on loopback.

* ``serve_model(name)``: what each InferenceService runs. ``name`` is a served model of the
  catalogue (its service name), the orchestrator ``retention``, or ``predictors`` (all of them in
  one server). Predictors load from ``--model-dir`` (KServe mounts ``storageUri`` at
  ``/mnt/models``) or from the model store's ``production`` version of their catalogue model.
  In co-located mode (``serving.mode``) the orchestrator loads the co-located predictors itself,
  each from ``--model-dir``/SERVICE (the manifests mount one ``storageUris`` entry per model
  there) or from the store, and serves them next to ``/retain`` on the same server.
* ``serve_stack``: ``retention serve``, on loopback, Ctrl-C stops it all. Co-located: the
  transformer and its predictors in this process on ``port``, each remote predictor (the writer,
  unless ``serving.use_writer`` is off) in a child process on ``port + 1``, ``port + 2``, ...
  Remote: every predictor in one child process on ``port + 1`` (as a single-node KServe would
  colocate them) and the transformer here on ``port``.

A server's process sets torch's intra-op threads to ``serving.model_threads`` when it hosts the
policy and not the writer (whose generation wants every core): the process-wide setting belongs
to the process's entry point, never to library code or one predictor.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from pathlib import Path

import uvicorn

from retention import catalogue
from retention.config import GPU_SERVICE, Profile
from retention.decision.policy import META_FILE, check_contract
from retention.deploy.manifests import MODEL_VERSIONS_ENV
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


def served_versions(profile: Profile) -> dict[str, str]:
    """Served name -> the one version its V2 routes answer to (``model_version``): each
    predictor's production version and, for the orchestrator, the production release."""
    pointer = _store(profile).production() or {}
    versions = production_versions(profile)
    if "release" in pointer:
        versions[catalogue.ORCHESTRATOR] = str(pointer["release"])
    return versions


def mounted_version() -> str | None:
    """The version KServe mounted at ``--model-dir``: the last part of ``STORAGE_URI``
    (``.../NAME/VERSION``, as the manifests set it)."""
    uri = os.environ.get("STORAGE_URI", "").rstrip("/")
    return uri.rsplit("/", 1)[-1] or None


def mounted_versions() -> dict[str, str]:
    """Served name -> version of the release a co-located orchestrator's manifest mounted."""
    raw = os.environ.get(MODEL_VERSIONS_ENV)
    if not raw:
        return {}
    versions = json.loads(raw)
    if not isinstance(versions, dict):
        raise ValueError(f"{MODEL_VERSIONS_ENV}: expected a JSON object, got {raw[:80]!r}")
    return {str(k): str(v) for k, v in versions.items()}


def build_predictors(
    profile: Profile,
    services: Iterable[str],
    model_dir: str | None = None,
    model_root: str | Path | None = None,
) -> list[Predictor]:
    """Loaded and warmed-up predictors; one that cannot load is left unready (503), not fatal,
    and logged. Each loads from ``model_dir`` (one predictor), ``model_root``/SERVICE (a
    co-located orchestrator's mounts) or the model store."""
    models = []
    for service in services:
        cls = predictor_class(service)
        try:
            if model_dir:
                d = Path(model_dir)
            elif model_root:
                d = Path(model_root) / service
            else:
                d = model_dir_for(profile, service)
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
        m.warm_up(profile.serving.inline_below_ms)
        models.append(m)
    return models


def torch_threads(profile: Profile, services: Iterable[str]) -> None:
    """Torch's intra-op threads for a server process hosting ``services`` (module docstring)."""
    from serving.transformer import POLICY

    services = set(services)
    if POLICY in services and GPU_SERVICE not in services:
        import torch

        torch.set_num_threads(profile.serving.model_threads)


def policy_context(profile: Profile, model_dir: str | Path | None = None):
    """What decisions need from the production policy's metadata (the transformer and the batch
    path alike); unavailable, logged, when there is none or it was trained under another contract.
    ``model_dir``: the policy's files (a co-located orchestrator's mount), else the store's."""
    from serving.transformer import POLICY, PolicyContext

    try:
        meta = read_json(Path(model_dir or model_dir_for(profile, POLICY)) / META_FILE)
        check_contract(meta, profile.contract)
        return PolicyContext(
            env=type(profile.decision.env).model_validate(meta["env"]),
            mean_value=float(meta.get("mean_value", PolicyContext.mean_value)),
            available=True,
        )
    except (LookupError, OSError, KeyError, ValueError) as err:
        log.warning("no production policy (%s): every treatment decision uses the rules", err)
        return PolicyContext(env=profile.decision.env)


def segment_model(profile: Profile, model_dir: str | Path | None = None):
    """The released segmentation (``model_dir``: a mount, else the store's production one), or
    None, logged, when the release has none: answers then carry no segment."""
    from retention.insights.segments import SegmentModel

    try:
        return SegmentModel(model_dir or _store(profile).resolve("segments"))
    except (LookupError, OSError, KeyError, ValueError) as err:
        log.warning("no released segments (%s): answers carry no segment", err)
        return None


def build_transformer(
    profile: Profile,
    predictor_urls: dict[str, str],
    model_root: str | Path | None = None,
    local: Sequence[Predictor] | None = None,
):
    """The transformer and its extra routes. Co-located (``serving.mode``), it calls the
    co-located predictors in this process: ``local`` when given (loaded already), else loaded
    here from ``model_root``/SERVICE or the store; ``predictor_urls`` serve the others.
    Serve ``t.served_models()``: the transformer and its co-located predictors."""
    from serving.ledger import ContactLedger
    from serving.routes import add_routes
    from serving.transformer import POLICY, RetentionTransformer

    colocated = profile.serving.colocated()
    if local is None:
        local = build_predictors(profile, colocated, model_root=model_root)
    by_name = {p.name: p for p in local}
    catalogue.require_exactly("co-located predictors", by_name, colocated)
    unused = sorted(set(predictor_urls) & set(colocated))
    if unused:
        log.info("co-located in this process, their URLs unused: %s", ", ".join(unused))
    policy = policy_context(profile, Path(model_root) / POLICY if model_root else None)
    ledger = ContactLedger.for_store(
        profile.model_store, profile.serving.ledger, profile.contract.limits
    )
    versions = production_versions(profile)
    if model_root:
        versions |= {s: v for s, v in mounted_versions().items() if s in by_name}
    t = RetentionTransformer(
        profile.serving,
        predictor_urls,
        ledger,
        policy,
        profile.contract,
        versions,
        local=by_name,
        segments=segment_model(profile, Path(model_root) / "segments" if model_root else None),
    )
    t.load()
    from serving.assistant import build_assistant

    assistant = build_assistant(profile, Path(model_root) / "segments" if model_root else None)
    return t, (lambda app: add_routes(app, t, assistant))


def run_app(app, host: str, port: int) -> None:
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
    uvicorn.Server(config).run()


def serve_model(profile: Profile, name: str, host: str, port: int, model_dir: str | None) -> None:
    if name not in server_names():
        raise ValueError(f"unknown model server {name!r} (known: {', '.join(server_names())})")
    if name == catalogue.ORCHESTRATOR:
        t, extra = build_transformer(
            profile, dict(profile.serving.predictor_urls), model_root=model_dir
        )
        models = t.served_models()
        versions = served_versions(profile) if model_dir is None else mounted_versions()
    elif name == ALL_PREDICTORS:
        models, extra = build_predictors(profile, catalogue.services()), None
        versions = served_versions(profile)
    else:
        models, extra = build_predictors(profile, [name], model_dir), None
        versions = served_versions(profile) if model_dir is None else {name: mounted_version()}
    torch_threads(profile, [m.name for m in models])
    app = create_app(
        models,
        extra,
        versions=versions,
        max_body_bytes=profile.serving.limits.max_body_bytes,
    )
    if model_dir is None:  # from the store: follow its production pointer on /admin/reload
        from serving.reload import install

        hosted = [m.name for m in models if m.name != catalogue.ORCHESTRATOR]
        install(app, profile, hosted, t if name == catalogue.ORCHESTRATOR else None)
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


def stack_children(profile: Profile) -> list[tuple[str, list[str]]]:
    """What ``retention serve`` starts besides the transformer: (server name, the predictors it
    serves), in port order from ``port + 1``."""
    cfg = profile.serving
    if cfg.mode == "remote":
        return [(ALL_PREDICTORS, list(catalogue.services()))]
    needed = [s for s in cfg.remote() if cfg.use_writer or s != GPU_SERVICE]
    return [(s, [s]) for s in needed]


def serve_stack(profile: Profile, argv_profile: list[str], host: str, port: int) -> int:
    """The transformer here (with its co-located predictors), the remote predictors in child
    processes (``stack_children``); prints a ready curl line."""
    children: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    try:
        for k, (server, services) in enumerate(stack_children(profile), start=1):
            base = f"http://{host}:{port + k}"
            children.append(subprocess.Popen(
                [sys.executable, "-m", "retention_cli.main", "serve-model", server,
                 *argv_profile, "--host", host, "--port", str(port + k)],
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            ))  # fmt: skip
            wait_ready(f"{base}/v2/health/live", children[-1])
            urls |= dict.fromkeys(services, base)
        transformer, extra = build_transformer(profile, urls)
        torch_threads(profile, [m.name for m in transformer.served_models()])
        app = create_app(
            transformer.served_models(),
            extra,
            versions=served_versions(profile),
            max_body_bytes=profile.serving.limits.max_body_bytes,
        )
        from serving.reload import install

        install(app, profile, list(transformer.hops.local), transformer)
        where = ", ".join(f"{n} {transformer.hops.where(n)}" for n in transformer.hops.names())
        print(
            f"retention stack on http://{host}:{port} ({where}); try:\n"
            f"  curl -s http://{host}:{port}/retain -H 'content-type: application/json' "
            f"""-d '{{"request_id": "demo-1", "customer_facts": {{"customer_id": "c-17", """
            f""""name": "Sam", "tenure": 4, "plan": "Pro", "MonthlyCharges": 89.5, """
            f""""Contract": "Month-to-month", "timezone": "Europe/London"}}}}'""",
            flush=True,
        )
        run_app(app, host, port)
    finally:
        for child in children:
            child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0
