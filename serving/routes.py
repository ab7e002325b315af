"""The transformer's plain routes: ``POST /retain`` and its V1 twin, ``/healthz``, ``/readyz``.

``/retain`` takes a :class:`~serving.schema.RetainRequest`; ``/v1/models/retention:predict`` takes
the same or its V1 form ``{"instances": [request]}``. Both publish the request and the
:class:`~serving.schema.RetainAnswer` in the OpenAPI document and validate with exactly those
models (under the profile's ``serving.limits``). Their bodies are parsed with ``NaN`` and
``Infinity`` refused, and every bad request is a 400 ``{"error": ...}`` naming the field.
"""

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from kserve import Model
from kserve.errors import InvalidInput, ModelNotReady

from serving.protocol import loads_finite
from serving.schema import (
    ErrorBody,
    RetainAnswer,
    RetainInstances,
    RetainRequest,
    clip,
    describe_errors,
    request_models,
)
from serving.transformer import RetentionTransformer

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The request is invalid; the error names the field."},
    413: {"model": ErrorBody, "description": "The body is over serving.limits.max_body_bytes."},
    503: {"model": ErrorBody, "description": "The transformer is not ready."},
}


class _BadBody(HTTPException):
    """Raised while FastAPI reads the body; an HTTPException is the one kind it lets through."""

    def __init__(self, message: str):
        super().__init__(status_code=400, detail=message)


class _FiniteJSONRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = loads_finite(await self.body())
            except InvalidInput as err:
                raise _BadBody(f"invalid request: {err}") from None
            except ValueError as err:  # malformed JSON or not UTF-8
                raise _BadBody(f"body: not valid JSON ({clip(err, 120)})") from None
        return self._json


def decision_route(loc_prefix: int) -> type[APIRoute]:
    """A route whose body is parsed finite-only and whose errors are 400s naming the field;
    ``loc_prefix`` is how many leading parts of an error location are FastAPI's (``body``, a
    union's tag), not the caller's field path."""

    class DecisionRoute(APIRoute):
        def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
            handler = super().get_route_handler()

            async def run(request: Request) -> Response:
                try:
                    return await handler(_FiniteJSONRequest(request.scope, request.receive))
                except _BadBody as err:
                    return JSONResponse({"error": err.detail}, status_code=400)
                except RequestValidationError as err:
                    errors = [{**e, "loc": e["loc"][loc_prefix:]} for e in err.errors()]
                    return JSONResponse({"error": describe_errors(errors)}, status_code=400)
                except InvalidInput as err:
                    return JSONResponse({"error": str(err)}, status_code=400)

            return run

    return DecisionRoute


def add_assistant_route(app: FastAPI, assistant: Model) -> None:
    """``POST /v1/models/assistant:predict``: the body parsed finite-only, a bad field a 400
    naming it, an unloaded assistant a 503."""

    async def ask(request: Request) -> Any:
        """A business question answered from the release (``serving.assistant``)."""
        try:
            body = loads_finite(await request.body())
        except InvalidInput as err:
            return JSONResponse({"error": f"invalid request: {err}"}, status_code=400)
        except ValueError as err:
            return JSONResponse({"error": f"body: not valid JSON ({clip(err, 120)})"}, 400)
        if not assistant.ready:
            raise ModelNotReady(assistant.name)
        try:
            return await assistant.predict(body)
        except InvalidInput as err:
            return JSONResponse({"error": clip(err, 300)}, status_code=400)

    app.router.add_api_route(
        f"/v1/models/{assistant.name}:predict", ask, methods=["POST"], responses=ERRORS
    )


def add_routes(app: FastAPI, t: RetentionTransformer, assistant: Model | None = None) -> None:
    if assistant is not None:
        add_assistant_route(app, assistant)
    models = request_models(t.cfg.limits)

    async def decide(req: RetainRequest) -> dict[str, Any]:
        if not t.ready:
            raise ModelNotReady(t.name)
        return await t.retain(req)

    async def retain(request: models.request) -> Any:
        """One decision: the contact (or not), its offer, the shielded message, and why."""
        return await decide(request)

    async def predict(request: models.v1_body) -> Any:
        """``/retain`` in KServe's V1 protocol: the bare request or ``{"instances": [one]}``."""
        if isinstance(request, RetainInstances):
            request = request.instances[0]
        return await decide(request)

    for path, endpoint, prefix in (
        ("/retain", retain, 1),
        (f"/v1/models/{t.name}:predict", predict, 2),
    ):
        app.router.add_api_route(
            path,
            endpoint,
            methods=["POST"],
            response_model=RetainAnswer,
            responses=ERRORS,
            route_class_override=decision_route(prefix),
        )

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        """Ready when the transformer is; each predictor's state is reported, since a
        predictor that is down degrades answers but does not stop them."""
        names = t.hops.names()
        timeout = t.cfg.predictor_timeout_ms
        states = await asyncio.gather(*(t.hops.ready(n, timeout) for n in names))
        body = {
            "ready": t.ready,
            "predictors": dict(zip(names, states, strict=True)),
            "policy_loaded": t.policy.available,
        }
        return JSONResponse(body, status_code=200 if t.ready else 503)
