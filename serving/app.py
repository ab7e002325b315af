"""One ASGI app per server: KServe's V1 and V2 endpoints over our models, plus ``/metrics``.

KServe's ``ModelServer`` always binds 0.0.0.0 and shares one module-level app; building the app
here from the same parts (``DataPlane``, the V1/V2 routers, KServe's error handlers) lets
``retention serve`` bind loopback, lets tests run it in-process with FastAPI's TestClient, and
lets the transformer add ``/retain``, ``/healthz`` and ``/readyz`` next to the protocol routes.
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import FastAPI, Request, Response
from kserve import Model
from kserve import errors as ke
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import register_v2_endpoints
from prometheus_client import REGISTRY, exposition


async def metrics_handler(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


def create_app(models: list[Model], extra: Callable[[FastAPI], None] | None = None) -> FastAPI:
    """The app serving ``models`` (loaded or not: an unready model answers 503)."""
    repo = ModelRepository(models_dir="/nonexistent")  # models are registered, never scanned
    for m in models:
        repo.update(m)
    dataplane = DataPlane(model_registry=repo)
    app = FastAPI(title="retention", docs_url=None)
    app.add_api_route("/", dataplane.live)
    app.add_api_route("/metrics", metrics_handler, methods=["GET"])
    if extra is not None:
        extra(app)
    register_v1_endpoints(app, dataplane, ModelRepositoryExtension(model_registry=repo))
    register_v2_endpoints(app, dataplane, ModelRepositoryExtension(model_registry=repo))
    app.add_exception_handler(ke.InvalidInput, ke.invalid_input_handler)
    app.add_exception_handler(ke.InferenceError, ke.inference_error_handler)
    app.add_exception_handler(ke.ModelNotFound, ke.model_not_found_handler)
    app.add_exception_handler(ke.ModelNotReady, ke.model_not_ready_handler)
    app.add_exception_handler(NotImplementedError, ke.not_implemented_error_handler)
    app.add_exception_handler(ke.UnsupportedProtocol, ke.unsupported_protocol_error_handler)
    app.add_exception_handler(ke.ServerNotLive, ke.server_not_live_handler)
    app.add_exception_handler(ke.ServerNotReady, ke.server_not_ready_handler)
    app.add_exception_handler(Exception, ke.generic_exception_handler)
    return app
