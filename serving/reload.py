"""Load the production release into a running server, without a restart: ``POST /admin/reload``.

A rollback or promote (``retention models rollback|promote``) flips the model store's
``production`` pointer; this route makes a running server follow it. It reads the pointer, loads
the new release's predictors that this server hosts (in a worker thread, so requests go on being
answered by the old ones meanwhile), and only when every one of them loaded swaps them in: each
into the server's model registry (its V1/V2 routes), the co-located ones into the transformer's
hop table in one assignment, with the versions the answers and the V2 routes name and the
policy's context. A predictor that does not load leaves the server on the old release and the
answer is a 500 naming it. The transformer then asks each remote predictor server it calls to
reload too. A release already loaded is a no-op; reloads are serialised.

Not installed where KServe mounts the files (``--model-dir``): there a new release is a new
InferenceService revision that Knative rolls out.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import aiohttp
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from retention.config import Profile
from retention.store.model_store import ModelStore

if TYPE_CHECKING:
    from serving.transformer import RetentionTransformer

log = logging.getLogger(__name__)
ROUTE = "/admin/reload"


class Reloader:
    def __init__(
        self,
        profile: Profile,
        app: FastAPI,
        services: Sequence[str],
        transformer: RetentionTransformer | None = None,
    ):
        self.profile = profile
        self.app = app
        self.services = list(services)
        self.transformer = transformer
        self.release = (ModelStore(profile.model_store).production() or {}).get("release")
        self._lock = asyncio.Lock()

    async def reload(self) -> dict[str, Any]:
        from serving.server import (
            build_predictors,
            policy_context,
            production_versions,
            served_versions,
        )

        async with self._lock:
            pointer = ModelStore(self.profile.model_store).production() or {}
            release = pointer.get("release")
            out: dict[str, Any] = {"release": release, "previous": self.release}
            if release and release != self.release:
                new = await asyncio.to_thread(build_predictors, self.profile, self.services)
                failed = [m.name for m in new if not m.ready]
                if failed:
                    raise RuntimeError(
                        f"release {release}: predictor(s) {', '.join(failed)} did not load; "
                        f"still serving {self.release}"
                    )
                registry = self.app.state.model_registry
                for m in new:
                    registry.known[m.name] = m
                    registry.update(m)
                t = self.transformer
                if t is not None:
                    local = {m.name: m for m in new if m.name in t.hops.local}
                    t.hops.local = {**t.hops.local, **local}
                    t.versions = production_versions(self.profile)
                    t.policy = await asyncio.to_thread(policy_context, self.profile)
                self.app.state.v2_endpoints.versions = {
                    k: v for k, v in served_versions(self.profile).items() if v
                }
                self.release = release
                out["loaded"] = sorted(m.name for m in new)
            out["changed"] = out["previous"] != release
            if self.transformer is not None:
                out["remote"] = await self._remote()
            return out

    async def _remote(self) -> dict[str, Any]:
        bases = sorted(set(self.transformer.hops.urls.values()))
        answers: dict[str, Any] = {}
        timeout = aiohttp.ClientTimeout(total=300)  # loading a writer takes a while
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for base in bases:
                try:
                    async with session.post(f"{base.rstrip('/')}{ROUTE}") as resp:
                        answers[base] = await resp.json(content_type=None)
                except (aiohttp.ClientError, TimeoutError) as err:
                    answers[base] = {"error": f"{type(err).__name__}: {err}"}
        return answers


def install(
    app: FastAPI,
    profile: Profile,
    services: Sequence[str],
    transformer: RetentionTransformer | None = None,
) -> Reloader:
    reloader = Reloader(profile, app, services, transformer)

    async def reload() -> JSONResponse:
        """Load the model store's production release now (after a promote or a rollback)."""
        try:
            return JSONResponse(await reloader.reload())
        except RuntimeError as err:
            log.error("reload failed: %s", err)
            return JSONResponse({"error": str(err)}, status_code=500)

    app.add_api_route(ROUTE, reload, methods=["POST"])
    return reloader
