"""How the transformer reaches each predictor: in its own process, or over HTTP.

``Hops`` is the one table the transformer calls through: a predictor is *local* (co-located: a
loaded ``kserve.Model`` of this process, called directly) or *remote* (its own server, called
with aiohttp: KServe's own client was measured ~3.6x slower for this hop), or not deployed. Both
kinds answer a ``Hop`` with the same meaning, so the decision code never knows which it got:

* a predictor that fails, times out, is not ready or is not deployed is ``ok=False`` with the
  reason, never an exception: the caller falls back (rules, template) and names it in
  ``degraded``;
* a local call sees what its HTTP route would: the rows go through ``rows_from``'s checks and a
  bad row is a failed hop, as the route's 400 would be;
* a local predictor runs inline when ``warm_up`` measured it well under a millisecond (a worker
  thread hop costs more than the model), else in a worker thread under the hop's timeout;
* every call that reaches a predictor records its latency in ``HOP_SECONDS`` under its name.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from kserve.errors import InvalidInput

from serving import metrics
from serving.protocol import rows_from

if TYPE_CHECKING:
    from serving.predictors import Predictor

IN_PROCESS = "in-process"


@dataclass
class Hop:
    ok: bool
    rows: list[dict[str, Any]] | None
    error: str | None = None


class Hops:
    """Predictor name -> how to call it. ``local`` wins over a URL given for the same name."""

    def __init__(self, urls: Mapping[str, str], local: Mapping[str, Predictor] | None = None):
        self.local: dict[str, Predictor] = dict(local or {})
        self.urls: dict[str, str] = {n: u for n, u in urls.items() if n not in self.local}
        self._session: aiohttp.ClientSession | None = None
        self._session_loop: asyncio.AbstractEventLoop | None = None

    def names(self) -> list[str]:
        """Every predictor this table can reach, sorted."""
        return sorted({*self.local, *self.urls})

    def where(self, name: str) -> str | None:
        """``in-process``, the predictor's base URL, or None when it is not deployed."""
        return IN_PROCESS if name in self.local else self.urls.get(name)

    async def session(self) -> aiohttp.ClientSession:
        # An aiohttp session is bound to the loop that made it: make one per serving loop.
        loop = asyncio.get_running_loop()
        if self._session is None or self._session.closed or self._session_loop is not loop:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=256, keepalive_timeout=30)
            )
            self._session_loop = loop
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def call(self, name: str, rows: list[dict[str, Any]], timeout_ms: int) -> Hop:
        local, url = self.local.get(name), self.urls.get(name)
        if local is None and not url:
            return Hop(False, None, "not deployed")
        t = time.perf_counter()
        try:
            if local is not None:
                return await self._local(local, rows, timeout_ms)
            return await self._remote(name, url, rows, timeout_ms)
        finally:
            metrics.HOP_SECONDS.labels(name).observe(time.perf_counter() - t)

    async def _local(self, p: Predictor, rows: list[dict[str, Any]], timeout_ms: int) -> Hop:
        if not p.ready:
            return Hop(False, None, "not ready")
        try:
            rows = rows_from({"instances": rows})
            if p.inline:
                return Hop(True, p.predict_rows(rows))
            out = await asyncio.wait_for(asyncio.to_thread(p.predict_rows, rows), timeout_ms / 1000)
            return Hop(True, out)
        except TimeoutError:
            return Hop(False, None, f"timed out after {timeout_ms} ms")
        except InvalidInput as err:
            return Hop(False, None, f"invalid input: {err}")
        except Exception as err:  # noqa: BLE001 - a failing model degrades the answer, never 500s
            first = (str(err).splitlines() or [""])[0]
            return Hop(False, None, f"{type(err).__name__}: {first[:200]}")

    async def _remote(self, name: str, url: str, rows, timeout_ms: int) -> Hop:
        try:
            session = await self.session()
            async with session.post(
                f"{url.rstrip('/')}/v1/models/{name}:predict",
                json={"instances": rows},
                timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200:
                    return Hop(False, None, f"HTTP {resp.status}: {str(body)[:200]}")
                return Hop(True, body["predictions"])
        except TimeoutError:
            return Hop(False, None, f"timed out after {timeout_ms} ms")
        except (aiohttp.ClientError, ValueError, KeyError, TypeError) as err:
            return Hop(False, None, f"{type(err).__name__}: {err}")

    async def ready(self, name: str, timeout_ms: int) -> bool:
        """Whether ``name`` would answer now: a local one is loaded, a remote one says so."""
        if name in self.local:
            return self.local[name].ready
        url = self.urls.get(name)
        if not url:
            return False
        try:
            session = await self.session()
            async with session.get(
                f"{url.rstrip('/')}/v1/models/{name}",
                timeout=aiohttp.ClientTimeout(total=timeout_ms / 1000),
            ) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False
