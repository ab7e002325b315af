"""One ASGI app per server: KServe's V1 and V2 endpoints over our models, plus ``/metrics``.

KServe's ``ModelServer`` always binds 0.0.0.0 and shares one module-level app; building the app
here from the same parts (``DataPlane``, the V1/V2 routers, KServe's error handlers) lets
``retention serve`` bind loopback, lets tests run it in-process with FastAPI's TestClient, and
lets the transformer add ``/retain``, ``/healthz`` and ``/readyz`` next to the protocol routes.

Where KServe's own endpoints answer wrongly, they are replaced here, not patched: the V2 routes
serve each model's production version (a ``model_version`` equal to it is accepted, any other is
a 404; KServe answers 501 to any), and loading an unknown model is a 404 (KServe: 503). Every
route sits behind one request body limit (413).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from kserve import Model
from kserve import errors as ke
from kserve.constants.constants import V2_ROUTE_PREFIX
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.model_repository_extension import ModelRepositoryExtension
from kserve.protocol.rest import v2_datamodels as v2
from kserve.protocol.rest.v1_endpoints import register_v1_endpoints
from kserve.protocol.rest.v2_endpoints import V2Endpoints
from prometheus_client import REGISTRY, exposition
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from retention.config import RequestLimits
from serving.schema import clip

log = logging.getLogger(__name__)


async def metrics_handler(request: Request) -> Response:
    encoder, content_type = exposition.choose_encoder(request.headers.get("accept"))
    return Response(content=encoder(REGISTRY), headers={"content-type": content_type})


class BodyLimit:
    """ASGI middleware: a request body over ``max_bytes`` is a 413 naming the limit.

    A declared ``Content-Length`` over the limit is refused before anything is read; a chunked
    body is counted as it streams and refused as soon as it passes the limit, never buffered
    beyond it. A body within the limit is handed on whole, so no route reads an unbounded one.
    """

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                await _error(send, 400, "content-length: not a number")
                return
            if size > self.max_bytes:
                await self._too_large(send)
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away before the body was complete
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await self._too_large(send)
                return
            if not message.get("more_body", False):
                break
        whole: Message | None = {"type": "http.request", "body": bytes(body), "more_body": False}

        async def replay() -> Message:
            nonlocal whole
            if whole is not None:
                message, whole = whole, None
                return message
            return await receive()  # after the body: only the disconnect remains

        await self.app(scope, replay, send)

    async def _too_large(self, send: Send) -> None:
        await _error(
            send,
            413,
            f"body: larger than the limit of {self.max_bytes} bytes "
            "(serving.limits.max_body_bytes)",
        )


async def _error(send: Send, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class Registry(ModelRepository):
    """The models given at start, never scanned from a directory.

    The V2 repository extension's ``load`` (re)loads one of them: an unloaded model is registered
    again, an unready one tries its ``load`` again (in a worker thread: it reads files).
    """

    def __init__(self, models: list[Model]):
        super().__init__(models_dir="/nonexistent")
        self.known = {m.name: m for m in models}
        for m in models:
            self.update(m)

    async def load(self, name: str) -> bool:
        model = self.known[name]
        if not model.ready:
            await asyncio.to_thread(model.load)
        self.update(model)
        return model.ready


class Repository(ModelRepositoryExtension):
    async def load(self, model_name: str) -> None:
        # KServe turns every load failure into ModelNotReady (503), an unknown name included.
        if model_name not in self._model_registry.known:
            raise ke.ModelNotFound(model_name)
        await super().load(model_name)


class VersionNotFound(Exception):
    def __init__(self, name: str, version: str, served: str | None):
        self.name, self.version, self.served = name, version, served

    def __str__(self) -> str:
        serves = f"it serves {self.served!r}" if self.served else "it is not versioned"
        return f"model {self.name!r} has no version {clip(self.version)!r} here: {serves}"


def client_error(status: int) -> Callable[[Request, Exception], Awaitable[JSONResponse]]:
    """A handler answering ``status`` with the error, clipped: a caller's mistake (an unknown
    model, a bad field) is not the server's, so it is logged briefly, without a traceback, and
    what the caller sent is never echoed unbounded."""

    async def handler(_: Request, exc: Exception) -> JSONResponse:
        message = clip(exc, 1000)
        log.info("HTTP %d: %s", status, message)
        return JSONResponse({"error": message}, status_code=status)

    return handler


class ServedV2Endpoints(V2Endpoints):
    """KServe's V2 endpoints, serving one version of each model: its production version."""

    def __init__(self, dataplane: DataPlane, repository: Repository, versions: Mapping[str, str]):
        super().__init__(dataplane, repository)
        self.versions = {name: v for name, v in versions.items() if v}

    def served(self, model_name: str, model_version: str | None) -> None:
        """Nothing when ``model_version`` is absent or the one served; else a 404."""
        self.dataplane.get_model_from_registry(model_name)  # an unknown model: ModelNotFound
        if model_version and model_version != self.versions.get(model_name):
            raise VersionNotFound(model_name, model_version, self.versions.get(model_name))

    async def model_metadata(
        self, model_name: str, model_version: str | None = None
    ) -> v2.ModelMetadataResponse:
        self.served(model_name, model_version)
        metadata = await super().model_metadata(model_name)
        served = self.versions.get(model_name)
        return metadata.model_copy(update={"versions": [served] if served else None})

    async def model_ready(
        self, model_name: str, model_version: str | None = None
    ) -> v2.ModelReadyResponse:
        self.served(model_name, model_version)
        return await super().model_ready(model_name)

    async def infer(
        self,
        raw_request: Request,
        raw_response: Response,
        model_name: str,
        request_body: v2.InferenceRequest | bytes,
        model_version: str | None = None,
    ) -> v2.InferenceResponse | Response:
        self.served(model_name, model_version)
        return await super().infer(raw_request, raw_response, model_name, request_body)


def register_v2(app: FastAPI, endpoints: ServedV2Endpoints) -> None:
    """KServe's V2 route table over ``endpoints``; the versioned paths are documented too."""
    router = APIRouter(prefix=V2_ROUTE_PREFIX, tags=["V2"])
    e, get, post = endpoints, ["GET"], ["POST"]
    table = [
        ("", e.metadata, get, v2.ServerMetadataResponse),
        ("/health/live", e.live, get, v2.ServerLiveResponse),
        ("/health/ready", e.ready, get, v2.ServerReadyResponse),
        ("/models", e.models, get, v2.ListModelsResponse),
    ]
    for base in ("/models/{model_name}", "/models/{model_name}/versions/{model_version}"):
        table += [
            (base, e.model_metadata, get, v2.ModelMetadataResponse),
            (f"{base}/ready", e.model_ready, get, v2.ModelReadyResponse),
            (f"{base}/infer", e.infer, post, None),
        ]
    table += [
        ("/repository/models/{model_name}/load", e.load, post, None),
        ("/repository/models/{model_name}/unload", e.unload, post, None),
    ]
    for path, endpoint, methods, response_model in table:
        router.add_api_route(path, endpoint, methods=methods, response_model=response_model)
    app.include_router(router)


def create_app(
    models: list[Model],
    extra: Callable[[FastAPI], None] | None = None,
    *,
    versions: Mapping[str, str] | None = None,
    max_body_bytes: int | None = None,
) -> FastAPI:
    """The app serving ``models`` (loaded or not: an unready model answers 503).

    ``versions``: model name -> the version it serves (the V2 routes' ``model_version``);
    ``max_body_bytes``: the request body limit, by default ``serving.limits``' default.
    """
    registry = Registry(models)
    repository = Repository(model_registry=registry)
    dataplane = DataPlane(model_registry=registry)
    app = FastAPI(title="retention", docs_url=None, redoc_url=None)
    app.add_middleware(
        BodyLimit,
        max_bytes=max_body_bytes or RequestLimits.model_fields["max_body_bytes"].default,
    )
    app.add_api_route("/", dataplane.live)
    app.add_api_route("/metrics", metrics_handler, methods=["GET"])
    if extra is not None:
        extra(app)
    register_v1_endpoints(app, dataplane, repository)
    endpoints = ServedV2Endpoints(dataplane, repository, versions or {})
    register_v2(app, endpoints)
    # What serving.reload swaps when a new release is loaded without a restart.
    app.state.model_registry, app.state.v2_endpoints = registry, endpoints
    app.add_exception_handler(ke.InvalidInput, client_error(400))
    app.add_exception_handler(ke.ModelNotFound, client_error(404))
    app.add_exception_handler(VersionNotFound, client_error(404))
    app.add_exception_handler(ke.InferenceError, ke.inference_error_handler)
    app.add_exception_handler(ke.ModelNotReady, ke.model_not_ready_handler)
    app.add_exception_handler(NotImplementedError, ke.not_implemented_error_handler)
    app.add_exception_handler(ke.UnsupportedProtocol, ke.unsupported_protocol_error_handler)
    app.add_exception_handler(ke.ServerNotLive, ke.server_not_live_handler)
    app.add_exception_handler(ke.ServerNotReady, ke.server_not_ready_handler)
    app.add_exception_handler(Exception, ke.generic_exception_handler)
    return app
