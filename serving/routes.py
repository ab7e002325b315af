"""The transformer's plain routes: ``POST /retain``, ``GET /healthz``, ``GET /readyz``."""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from kserve.errors import InvalidInput

from serving.transformer import RetentionTransformer, parse_request


def add_routes(app: FastAPI, t: RetentionTransformer) -> None:
    @app.post("/retain")
    async def retain(request: Request):
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body: not valid JSON"}, status_code=400)
        try:
            req = parse_request(body)
        except InvalidInput as err:
            return JSONResponse({"error": str(err)}, status_code=400)
        try:
            return await t.retain(req)
        except InvalidInput as err:
            return JSONResponse({"error": str(err)}, status_code=400)

    @app.get("/healthz")
    async def healthz():
        return {"status": "alive"}

    @app.get("/readyz")
    async def readyz():
        """Ready when the transformer is; each predictor's state is reported, since a
        predictor that is down degrades answers but does not stop them."""
        names = sorted(t.urls)
        states = await asyncio.gather(*(_ready(t, n) for n in names))
        body = {
            "ready": t.ready,
            "predictors": dict(zip(names, states, strict=True)),
            "policy_loaded": t.policy.available,
        }
        return JSONResponse(body, status_code=200 if t.ready else 503)


async def _ready(t: RetentionTransformer, name: str) -> bool:
    import aiohttp

    try:
        session = await t.session()
        async with session.get(
            f"{t.urls[name].rstrip('/')}/v1/models/{name}",
            timeout=aiohttp.ClientTimeout(total=t.cfg.predictor_timeout_ms / 1000),
        ) as resp:
            return resp.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False
