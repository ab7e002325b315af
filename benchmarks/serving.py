"""Serving on loopback: the ceiling, the decision path per ledger and mode, and a mixed load.

Every figure comes from one run, written to one JSON file (``make bench-serving`` ->
``bench-results/serving.json``), and a short summary is printed:

1. ``bare``: a trivial ``kserve.Model`` in the same server stack: the ceiling of this stack.
2. ``decision``: ``/v1/models/retention:predict`` with the template message
   (``serving.use_writer=false``) at the same concurrency, for each ledger backend (a SQLite file,
   PostgreSQL) and each serving mode (``colocated``: the predictors loaded in the transformer's
   process; ``remote``: over HTTP to a predictor server). Targets: >= 1/3 of ``bare``'s req/s and
   p99 <= 50 ms. The budget is set out of reach here, so every proposed contact gets its message.
3. ``writer``: the latency of one message from the writer predictor, on its own.
4. ``mixed``: a simulated month (5,000 requests over 400 customers in six time zones, at all
   hours, 5 % of them retrying a recent request id, perhaps still in flight) against a budget that
   binds, per backend. Afterwards the ledger is read back (``serving.ledger_load.check_invariants``:
   spend never above the budget, no two contacts of a customer inside the cooldown, none over the
   fatigue cap or in quiet hours), every answer is compared with the one the ledger stored, every
   retry with the first answer of its id, and server errors are counted. Targets: all zero.

Every server is a separate process (as in a cluster), started and stopped by this script, on
127.0.0.1 only. It needs a pushed production release in the profile's model store: it does not
train one (``make run`` first). PostgreSQL is ``--postgres-url`` (default the local server), each
run in a schema of its own, dropped afterwards; when it cannot be reached its figures say so.
``--quick`` runs the same phases with small counts: a smoke test of the benchmark, not figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from retention import catalogue
from retention.config import ServingConfig, load_profile
from retention.fileio import write_json
from retention.store.model_store import ModelStore
from serving.ledger_load import retry_mismatches
from serving.server import wait_ready

BACKENDS = ("sqlite", "postgresql")
# The values of ``serving.mode``; the benchmark sets the profile field, never its own switch.
MODES = ("colocated", "remote")
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
TARGET_SHARE_OF_BARE = 1 / 3
TARGET_P99_MS = 50.0
MIXED_BUDGET = 250.0
UNREACHABLE_BUDGET = 1e12
ZONES = ("UTC", "Europe/London", "Europe/Berlin", "America/New_York", "Asia/Kolkata",
         "Australia/Sydney")  # fmt: skip
FACTS = {
    "name": "Sam",
    "tenure": 5,
    "plan": "Pro",
    "MonthlyCharges": 89.5,
    "Contract": "Month-to-month",
    "InternetService": "Fiber optic",
}


class Skipped(Exception):  # noqa: N818 - a phase that cannot run here, with the reason
    pass


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_bare(port: int) -> None:
    """The ceiling: a model whose predict returns its input, in the same app stack."""
    import uvicorn
    from kserve import Model

    from serving.app import create_app

    class Echo(Model):
        def __init__(self):
            super().__init__("bare")
            self.ready = True

        async def predict(self, payload, headers=None, response_headers=None):
            return {"predictions": payload["instances"]}

    cfg = uvicorn.Config(create_app([Echo()]), host="127.0.0.1", port=port, log_level="warning",
                         access_log=False)  # fmt: skip
    uvicorn.Server(cfg).run()


class Servers:
    """Child processes, each logging to its own file (an unread pipe would fill up and block)."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen] = []

    def start(self, args: list[str], ready_url: str) -> subprocess.Popen:
        log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, *args],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.procs.append(proc)
        wait_ready(ready_url, proc, log_path=log.name)
        return proc

    def stop(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop_all(self) -> None:
        for p in self.procs:
            self.stop(p)


# ------------------------------------------------------------------------------------------ load


async def load(url: str, bodies: Iterator[dict], concurrency: int, seconds: float) -> dict:
    """POST ``bodies`` with ``concurrency`` workers until they run out or time is up.

    Answers are kept as raw bytes and parsed afterwards, so the client spends its CPU on sending.
    """
    import aiohttp

    latencies: list[float] = []
    statuses: dict[int, int] = {}
    answers: list[tuple[dict, int, bytes]] = []
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker():
            while time.perf_counter() < deadline:
                body = next(bodies, None)
                if body is None:
                    return
                t = time.perf_counter()
                try:
                    async with session.post(url, json=body) as resp:
                        payload, status = await resp.read(), resp.status
                except (aiohttp.ClientError, TimeoutError) as err:
                    payload, status = str(err).encode(), 599  # a dropped connection: an error
                latencies.append(time.perf_counter() - t)
                statuses[status] = statuses.get(status, 0) + 1
                answers.append((body, status, payload))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies or [0.0]) * 1000
    return {
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "rps": round(len(latencies) / wall, 1) if wall > 0 else 0.0,
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p90_ms": round(float(np.percentile(lat, 90)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "server_errors_5xx": sum(v for k, v in statuses.items() if k >= 500),
        "_answers": answers,
    }


def _parsed(answers: list[tuple[dict, int, bytes]]) -> list[tuple[dict, dict]]:
    return [(body, json.loads(payload)) for body, status, payload in answers if status == 200]


def _answer_mix(answers: list[tuple[dict, int, bytes]]) -> dict:
    """What the decision path actually did: a fast answer that fell back is no fast path."""
    ok = [a for _, a in _parsed(answers)]
    return {
        "contacts": sum(bool(a["decision"]["contact"]) for a in ok),
        "messages": sum(a.get("message") is not None for a in ok),
        "blocked": sum(bool(a["decision"]["blocked_by"]) for a in ok),
        "degraded_answers": sum(bool(a.get("degraded")) for a in ok),
        "degraded_by": _count(d for a in ok for d in a.get("degraded", [])),
        "sources": _count(a["decision"]["source"] for a in ok),
    }


def _count(items) -> dict[str, int]:
    out: dict[str, int] = {}
    for x in items:
        out[x] = out.get(x, 0) + 1
    return dict(sorted(out.items()))


def _decision_bodies(start: datetime, seed: int) -> Iterator[dict]:
    """New request ids for customers drawn from a million, all at one daytime instant."""
    rng = random.Random(seed)
    at = start.replace(hour=12, minute=0, second=0, microsecond=0).isoformat()
    i = 0
    while True:
        facts = {**FACTS, "customer_id": f"bench-{rng.randrange(10**6)}"}
        yield {"instances": [{"request_id": f"d-{seed}-{i}", "customer_facts": facts,
                              "send_at": at}]}  # fmt: skip
        i += 1


def _mixed_bodies(n: int, customers: int, start: datetime, seed: int) -> Iterator[dict]:
    """A month of traffic in time order, at all hours, 5 % of requests retrying a recent id."""
    rng = random.Random(seed)
    zone_of = {k: rng.choice(ZONES) for k in range(customers)}
    sent: list[dict] = []
    for i in range(n):
        if sent and rng.random() < 0.05:
            yield sent[max(0, len(sent) - 1 - rng.randrange(32))]  # may still be in flight
            continue
        at = start + timedelta(seconds=i * 29 * 86400 // n + rng.randrange(3600))
        k = rng.randrange(customers)
        facts = {**FACTS, "customer_id": f"mix-{k}", "timezone": zone_of[k],
                 "tenure": rng.randrange(1, 72), "MonthlyCharges": round(rng.uniform(20, 120), 2)}  # fmt: skip
        body = {"request_id": f"m-{seed}-{i}", "customer_facts": facts, "send_at": at.isoformat()}
        sent.append(body)
        yield body


# ---------------------------------------------------------------------------------------- ledger


@contextmanager
def ledger_database(backend: str, folder: Path, postgres_url: str) -> Iterator[str]:
    """A fresh, empty ledger URL: a new SQLite file, or a new PostgreSQL schema (dropped after)."""
    if backend == "sqlite":
        yield f"sqlite:///{folder / f'ledger-{uuid.uuid4().hex[:8]}.sqlite'}"
        return
    import sqlalchemy as sa

    schema = f"bench_serving_{uuid.uuid4().hex[:10]}"
    parsed = sa.make_url(postgres_url)
    if parsed.drivername == "postgresql":  # as the ledger reads it: psycopg (3), not psycopg2
        parsed = parsed.set(drivername="postgresql+psycopg")
    admin = sa.create_engine(parsed, poolclass=sa.NullPool, connect_args={"connect_timeout": 3})
    try:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    except Exception as err:  # noqa: BLE001 - any failure to reach it is reported, not fatal
        admin.dispose()
        raise Skipped(
            f"PostgreSQL at {postgres_url} not usable: {type(err).__name__}: {err}"
        ) from None
    try:
        # The search path travels in the URL, so the transformer's profile needs no schema.
        url = parsed.update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()


def check_ledger(url: str, limits, answers: list[tuple[dict, dict]]) -> dict:
    """The ledger's invariants re-counted from its rows, and every answer against the stored one."""
    from serving.ledger import ContactLedger
    from serving.ledger_load import check_invariants

    zones = {b["request_id"]: b["customer_facts"].get("timezone") for b, _ in answers}
    with ContactLedger(url, limits) as led:
        invariants = check_invariants(led, zones).as_dict()
        differ = 0
        for body, answer in answers:
            at = datetime.fromisoformat(body["send_at"])
            stored = led.view(body["request_id"], body["customer_facts"]["customer_id"], at)
            differ += stored.answer != answer
    return {**invariants, "answers_differing_from_stored": differ}


# ------------------------------------------------------------------------------------------ main


def _mode_overrides(mode: str) -> list[str]:
    if "mode" not in ServingConfig.model_fields:
        if mode == "remote":
            return []  # the only mode there is: predictors over HTTP
        raise Skipped("this build has no serving.mode: only the remote mode exists")
    return [f"serving.mode={mode}"]


def _sets(items: list[str]) -> list[str]:
    return [arg for s in items for arg in ("--set", s)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench-results/serving.json")
    ap.add_argument("--seconds", type=float, default=15.0, help="per bare/decision load phase")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured load before each")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mixed", type=int, default=5000, help="requests in each mixed load")
    ap.add_argument("--mixed-seconds", type=float, default=300.0, help="bound on a mixed load")
    ap.add_argument("--writer-messages", type=int, default=3)
    ap.add_argument("--postgres-url", default=os.environ.get("RETENTION_BENCH_POSTGRES_URL",
                                                             DEFAULT_POSTGRES))  # fmt: skip
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: 3 s phases after 0.5 s warm-ups, 300 mixed requests, one "
                         "writer message")  # fmt: skip
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    if args.quick:
        args.seconds, args.warmup, args.mixed, args.writer_messages = 3.0, 0.5, 300, 1
    profile = load_profile(args.profile, overrides=args.set)
    if not ModelStore(profile.model_store).production():
        print(
            f"no production release in {profile.model_store}: the serving benchmark serves the "
            f"pushed models; run `make run` (PROFILE={profile.name}) first",
            file=sys.stderr,
        )
        return 2

    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    # Requests may not be stamped in the past: the decisions happen tomorrow, the simulated month
    # is the next calendar month (requests may be dated up to serving.limits ahead).
    tomorrow = today + timedelta(days=1)
    next_month = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
    doc: dict[str, Any] = {
        "profile": profile.name,
        "quick": args.quick,
        "concurrency": args.concurrency,
        "seconds_per_phase": args.seconds,
        "warmup_seconds": args.warmup,
        "ledger_pool_size": profile.serving.ledger.pool_size,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },  # fmt: skip
        "targets": {"share_of_bare_ge": round(TARGET_SHARE_OF_BARE, 4), "p99_ms_le": TARGET_P99_MS},
    }
    common = ["--profile", args.profile, *_sets(args.set)]
    servers = Servers()
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        try:
            bare_port, pred_port, tr_port = _port(), _port(), _port()
            servers.start(["-m", "benchmarks.serving", "--serve-bare", str(bare_port)],
                          f"http://127.0.0.1:{bare_port}/v1/models/bare")  # fmt: skip
            bare_body = {"instances": [{"customer_id": "c-1", **FACTS}]}
            bare_url = f"http://127.0.0.1:{bare_port}/v1/models/bare:predict"
            bodies = iter(lambda: bare_body, None)
            asyncio.run(load(bare_url, bodies, args.concurrency, args.warmup))  # not measured
            bare = asyncio.run(load(bare_url, bodies, args.concurrency, args.seconds))
            bare.pop("_answers")
            doc["bare"] = bare

            base = f"http://127.0.0.1:{pred_port}"
            servers.start(["-m", "retention_cli.main", "serve-model", "predictors", *common,
                           "--host", "127.0.0.1", "--port", str(pred_port)],
                          f"{base}/v1/models/risk")  # fmt: skip
            urls = json.dumps({n: base for n in catalogue.services()})

            def transformer(mode: str, ledger_url: str, budget: float) -> subprocess.Popen:
                """The transformer on ``tr_port``: template messages, the given ledger and mode."""
                sets = [*_mode_overrides(mode), f"serving.predictor_urls={urls}",
                        "serving.use_writer=false", f"serving.ledger.url={ledger_url}",
                        f"contract.limits.budget_per_period={budget}",
                        "serving.predictor_timeout_ms=2000"]  # fmt: skip
                return servers.start(["-m", "retention_cli.main", "serve-model", "retention",
                                      *common, *_sets(sets), "--host", "127.0.0.1",
                                      "--port", str(tr_port)],
                                     f"http://127.0.0.1:{tr_port}/v1/models/retention")  # fmt: skip

            decision: dict[str, dict[str, dict]] = {}
            for backend in BACKENDS:
                decision[backend] = {}
                for k, mode in enumerate(MODES):
                    try:
                        with ledger_database(backend, Path(tmp), args.postgres_url) as url:
                            proc = transformer(mode, url, UNREACHABLE_BUDGET)
                            try:
                                at = f"http://127.0.0.1:{tr_port}/v1/models/retention:predict"
                                bodies = _decision_bodies(tomorrow, k)
                                # First calls pay for lazy set-up (connections, caches): unmeasured.
                                asyncio.run(load(at, bodies, args.concurrency, args.warmup))
                                r = asyncio.run(load(at, bodies, args.concurrency, args.seconds))
                            finally:
                                servers.stop(proc)
                    except Skipped as why:
                        decision[backend][mode] = {"skipped": str(why)}
                        continue
                    r.update(_answer_mix(r.pop("_answers")))
                    r["share_of_bare"] = round(r["rps"] / bare["rps"], 3) if bare["rps"] else None
                    r["meets_targets"] = bool(
                        r["share_of_bare"] is not None
                        and r["share_of_bare"] >= TARGET_SHARE_OF_BARE
                        and r["p99_ms"] <= TARGET_P99_MS
                        and r["server_errors_5xx"] == 0
                    )
                    decision[backend][mode] = r
            doc["decision"] = decision

            doc["writer"] = _writer_latency(base, args.writer_messages)

            limits = profile.contract.limits.model_copy(update={"budget_per_period": MIXED_BUDGET})
            mode = next((m for m in MODES if _mode_available(m)), "remote")
            doc["mixed"] = {"mode": mode, "budget_per_period": MIXED_BUDGET}
            for k, backend in enumerate(BACKENDS):
                try:
                    with ledger_database(backend, Path(tmp), args.postgres_url) as url:
                        proc = transformer(mode, url, MIXED_BUDGET)
                        try:
                            m = asyncio.run(load(f"http://127.0.0.1:{tr_port}/retain",
                                                 _mixed_bodies(args.mixed, 400, next_month, k),
                                                 args.concurrency, args.mixed_seconds))  # fmt: skip
                        finally:
                            servers.stop(proc)
                        answers = m.pop("_answers")
                        parsed = _parsed(answers)
                        m.update(_answer_mix(answers))
                        m["completed"] = m["requests"] == args.mixed
                        m["retries_answered_differently"] = retry_mismatches(
                            (b["request_id"], a) for b, a in parsed
                        )
                        m["ledger"] = check_ledger(url, limits, parsed)
                except Skipped as why:
                    doc["mixed"][backend] = {"skipped": str(why)}
                    continue
                led = m["ledger"]
                m["meets_targets"] = bool(
                    m["completed"]
                    and m["server_errors_5xx"] == 0
                    and m["retries_answered_differently"] == 0
                    and led["ok"]
                    and led["answers_differing_from_stored"] == 0
                )
                doc["mixed"][backend] = m
        finally:
            servers.stop_all()
    doc["wall_s"] = round(time.perf_counter() - t_start, 1)
    write_json(Path(args.out), doc)
    print(summary(doc))
    print(f"wrote {args.out}")
    return 0


def _mode_available(mode: str) -> bool:
    try:
        _mode_overrides(mode)
    except Skipped:
        return False
    return True


def _writer_latency(base: str, n: int) -> dict:
    latencies, message = [], None
    for e in range(n):
        body = {"instances": [{"facts": {"name": "Sam", "plan": "Pro", "tenure": 5},
                               "offer_level": e % 4}]}  # fmt: skip
        req = urllib.request.Request(f"{base}/v1/models/writer:predict",  # noqa: S310
                                     data=json.dumps(body).encode(),
                                     headers={"content-type": "application/json"})  # fmt: skip
        t = time.perf_counter()
        try:
            with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback http
                message = json.loads(r.read())["predictions"][0]["message"]
        except OSError as err:
            return {"error": f"{type(err).__name__}: {err}"}
        latencies.append(time.perf_counter() - t)
    return {"latency_s": [round(x, 3) for x in latencies],
            "median_s": round(float(np.median(latencies)), 3) if latencies else None,
            "sample": message}  # fmt: skip


def summary(doc: dict) -> str:
    """A few lines a person reads; the JSON has the rest."""
    lines = [f"serving benchmark ({'QUICK smoke run, not figures' if doc['quick'] else 'full'}, "
             f"profile {doc['profile']}, concurrency {doc['concurrency']}, "
             f"{doc['machine']['cpus']} CPUs)"]  # fmt: skip
    bare = doc["bare"]
    lines.append(f"  bare kserve.Model    {bare['rps']:8.1f} req/s  p50 {bare['p50_ms']:6.2f} ms  "
                 f"p99 {bare['p99_ms']:6.2f} ms")  # fmt: skip
    for backend, modes in doc["decision"].items():
        for mode, r in modes.items():
            name = f"decision {backend}/{mode}"
            if "skipped" in r:
                lines.append(f"  {name:20} skipped: {r['skipped']}")
                continue
            lines.append(
                f"  {name:20} {r['rps']:8.1f} req/s  p50 {r['p50_ms']:6.2f} ms  p99 "
                f"{r['p99_ms']:6.2f} ms  = {r['share_of_bare']:.2f} of bare  5xx "
                f"{r['server_errors_5xx']}  degraded {r['degraded_answers']}/{r['requests']}  "
                f"targets {'met' if r['meets_targets'] else 'NOT met'}"
            )
    w = doc["writer"]
    lines.append(f"  writer               {w.get('median_s')} s per message" if "error" not in w
                 else f"  writer               {w['error']}")  # fmt: skip
    mixed = doc["mixed"]
    for backend in BACKENDS:
        m = mixed.get(backend, {})
        name = f"mixed {backend}"
        if "skipped" in m or not m:
            lines.append(f"  {name:20} skipped: {m.get('skipped', 'not run')}")
            continue
        led = m["ledger"]
        lines.append(
            f"  {name:20} {m['requests']} requests ({mixed['mode']}): 5xx "
            f"{m['server_errors_5xx']}, overspent periods {len(led['overspent_periods'])}, "
            f"cooldown breaches {led['cooldown_violations']}, fatigue {led['fatigue_violations']}, "
            f"quiet hours {led['quiet_hours_violations']}, retries answered differently "
            f"{m['retries_answered_differently']}, answers unlike the stored "
            f"{led['answers_differing_from_stored']}, budget bound "
            f"{led['blocked'].get('budget', 0) > 0}: targets "
            f"{'met' if m['meets_targets'] else 'NOT met'}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
