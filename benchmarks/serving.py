"""Serving on loopback: the ceiling, the decision path, the writer, and a mixed load's invariants.

1. ``bare``: a trivial ``kserve.Model`` in the same server stack (the ceiling of this stack).
2. ``decision``: ``/v1/models/retention:predict`` through the transformer, its predictors and the
   ledger, with the template message (``serving.use_writer=false``), same concurrency.
3. ``writer``: the latency of one message from the writer predictor, reported on its own.
4. ``mixed``: >= 5,000 requests over many customers across a simulated month, with retries of
   earlier request ids, a budget small enough to bind; then the ledger is read back with
   ``serving.ledger_load.check_invariants`` (spend never above the budget, no two contacts of a
   customer inside the cooldown, none over the fatigue cap or in quiet hours), every retry must
   have had the first answer, and no 5xx.

Every server is a separate process (as in a cluster), started and stopped by this script. It
needs a pushed release in the profile's model store (``make run`` first).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from retention import catalogue
from retention.config import load_profile
from retention.fileio import write_json
from retention.store.model_store import ModelStore
from serving.ledger_load import retry_mismatches
from serving.server import wait_ready

FACTS = {
    "name": "Sam",
    "tenure": 5,
    "plan": "Pro",
    "MonthlyCharges": 89.5,
    "Contract": "Month-to-month",
    "InternetService": "Fiber optic",
}


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


def _start(args: list[str]) -> subprocess.Popen:
    # Logs go to a file: an unread pipe fills up and blocks the server mid-benchmark.
    log = tempfile.NamedTemporaryFile(prefix="bench-server-", suffix=".log", delete=False)  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    proc.log_path = log.name  # type: ignore[attr-defined]
    return proc


def _wait(url: str, proc: subprocess.Popen) -> None:
    wait_ready(url, proc, log_path=proc.log_path)  # type: ignore[attr-defined]


async def load(url: str, bodies, concurrency: int, seconds: float) -> dict:
    """POST ``bodies`` (cycled) with ``concurrency`` workers until they run out or time is up."""
    import aiohttp

    latencies, statuses, answers = [], {}, []
    it = iter(bodies)
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker():
            while time.perf_counter() < deadline:
                try:
                    body = next(it)
                except StopIteration:
                    return
                t = time.perf_counter()
                async with session.post(url, json=body) as resp:
                    payload = await resp.read()
                latencies.append(time.perf_counter() - t)
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                answers.append((body, resp.status, payload))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.asarray(latencies) * 1000
    return {
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "rps": round(len(latencies) / wall, 1),
        "p50_ms": round(float(np.percentile(lat, 50)), 2),
        "p99_ms": round(float(np.percentile(lat, 99)), 2),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "_answers": answers,
    }


def _decision_bodies(n: int, customers: int, seed: int):
    rng = random.Random(seed)
    for i in range(n):
        cid = f"bench-{rng.randrange(customers)}"
        yield {"instances": [{"request_id": f"d-{i}", "customer_facts": {**FACTS,
               "customer_id": cid}, "send_at": "2026-11-02T12:00:00+00:00"}]}  # fmt: skip


def _mixed_bodies(n: int, customers: int, seed: int):
    """A month of traffic in time order, 5 % of requests retrying an earlier request id."""
    rng = random.Random(seed)
    start = datetime(2026, 11, 1, 9, tzinfo=UTC)
    sent = []
    for i in range(n):
        if sent and rng.random() < 0.05:
            yield rng.choice(sent)
            continue
        day = i * 29 // n
        at = start + timedelta(days=day, minutes=rng.randrange(12 * 60))
        facts = {**FACTS, "customer_id": f"mix-{rng.randrange(customers)}",
                 "tenure": rng.randrange(1, 72), "MonthlyCharges": rng.uniform(20, 120)}  # fmt: skip
        body = {"request_id": f"m-{i}", "customer_facts": facts, "send_at": at.isoformat()}
        sent.append(body)
        yield body


def check_ledger(url: str, limits, timezones: dict[str, str | None]) -> dict:
    """The ledger's invariants, re-counted from the rows the transformer wrote."""
    from serving.ledger import ContactLedger
    from serving.ledger_load import check_invariants

    with ContactLedger(url, limits) as led:
        return check_invariants(led, timezones).as_dict()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--profile", default="local")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default="bench-results/serving.json")
    ap.add_argument("--seconds", type=float, default=15.0, help="per load phase")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--mixed", type=int, default=5000)
    ap.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve_bare:
        serve_bare(args.serve_bare)
        return 0
    profile = load_profile(args.profile, overrides=args.set)
    if not ModelStore(profile.model_store).production():
        print(f"no production release in {profile.model_store}: run `make run` first")
        return 2
    procs: list[subprocess.Popen] = []
    doc: dict = {"profile": profile.name, "concurrency": args.concurrency}
    with tempfile.TemporaryDirectory(prefix="bench-serving-") as tmp:
        ledger_url = f"sqlite:///{Path(tmp) / 'ledger.db'}"
        try:
            bare_port, pred_port, tr_port = _port(), _port(), _port()
            procs.append(_start(["-m", "benchmarks.serving", "--serve-bare", str(bare_port)]))
            _wait(f"http://127.0.0.1:{bare_port}/v1/models/bare", procs[-1])
            common = ["--profile", args.profile, *sum((["--set", s] for s in args.set), [])]
            procs.append(_start(["-m", "retention_cli.main", "serve-model", "predictors", *common,
                                 "--host", "127.0.0.1", "--port", str(pred_port)]))  # fmt: skip
            _wait(f"http://127.0.0.1:{pred_port}/v1/models/risk", procs[-1])
            base = f"http://127.0.0.1:{pred_port}"
            urls = json.dumps({n: base for n in catalogue.services()})
            budget = 250.0

            def start_transformer(ledger: str) -> subprocess.Popen:
                """The transformer on ``tr_port``: template messages, its own ledger."""
                proc = _start(["-m", "retention_cli.main", "serve-model", "retention", *common,
                               "--set", f"serving.predictor_urls={urls}",
                               "--set", "serving.use_writer=false",
                               "--set", f"serving.ledger.url={ledger}",
                               "--set", f"contract.limits.budget_per_period={budget}",
                               "--set", "serving.predictor_timeout_ms=2000",
                               "--host", "127.0.0.1", "--port", str(tr_port)])  # fmt: skip
                _wait(f"http://127.0.0.1:{tr_port}/v1/models/retention", proc)
                return proc

            procs.append(start_transformer(ledger_url))

            bare_body = {"instances": [{"customer_id": "c-1", **FACTS}]}
            bare = asyncio.run(load(f"http://127.0.0.1:{bare_port}/v1/models/bare:predict",
                                    (bare_body for _ in range(10**7)), args.concurrency,
                                    args.seconds))  # fmt: skip
            decision = asyncio.run(load(
                f"http://127.0.0.1:{tr_port}/v1/models/retention:predict",
                _decision_bodies(10**7, 20_000, 1), args.concurrency, args.seconds))  # fmt: skip
            for r in (bare, decision):
                r.pop("_answers")
            ratio = decision["rps"] / bare["rps"]
            doc["bare"], doc["decision"] = bare, decision
            doc["decision_vs_bare"] = round(ratio, 3)
            doc["targets"] = {
                "decision_vs_bare_ge_1/3": ratio >= 1 / 3,
                "decision_p99_le_50ms": decision["p99_ms"] <= 50,
            }

            writer_lat = []
            for e in range(3):
                body = {"instances": [{"facts": {"name": "Sam", "plan": "Pro", "tenure": 5},
                                       "offer_level": e % 4}]}  # fmt: skip
                req = urllib.request.Request(f"{base}/v1/models/writer:predict",  # noqa: S310
                                             data=json.dumps(body).encode(),
                                             headers={"content-type": "application/json"})  # fmt: skip
                t = time.perf_counter()
                with urllib.request.urlopen(req, timeout=120) as r:  # noqa: S310 - loopback http
                    message = json.loads(r.read())["predictions"][0]["message"]
                writer_lat.append(time.perf_counter() - t)
            doc["writer"] = {"latency_s": [round(x, 3) for x in writer_lat],
                             "median_s": round(float(np.median(writer_lat)), 3),
                             "sample": message}  # fmt: skip

            # The mixed load on a fresh ledger: the decision phase's spend must not count.
            limits = profile.contract.limits.model_copy(update={"budget_per_period": budget})
            mixed_url = f"sqlite:///{Path(tmp) / 'mixed.db'}"
            procs[-1].terminate()
            procs[-1].wait(timeout=30)
            procs.append(start_transformer(mixed_url))
            mixed = asyncio.run(load(f"http://127.0.0.1:{tr_port}/retain",
                                     _mixed_bodies(args.mixed, 400, 2), args.concurrency,
                                     600))  # fmt: skip
            answers = mixed.pop("_answers")
            answered = [(b["request_id"], json.loads(p)) for b, s, p in answers if s == 200]
            zones = {b["request_id"]: b["customer_facts"].get("timezone") for b, _, _ in answers}
            degraded = sum(bool(json.loads(p).get("degraded")) for _, s, p in answers if s == 200)
            doc["mixed"] = {
                **mixed,
                "server_errors_5xx": sum(
                    v for k, v in mixed["statuses"].items() if k.startswith("5")
                ),  # fmt: skip
                "retries_with_a_different_answer": retry_mismatches(answered),
                "degraded_answers": degraded,
                "ledger": check_ledger(mixed_url, limits, zones),
            }
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    write_json(Path(args.out), doc)
    m = doc["mixed"]
    print(
        f"bare {doc['bare']['rps']} rps (p99 {doc['bare']['p99_ms']} ms); decision "
        f"{doc['decision']['rps']} rps (p99 {doc['decision']['p99_ms']} ms) = "
        f"{doc['decision_vs_bare']:.2f} of bare; writer {doc['writer']['median_s']} s/message; "
        f"mixed {m['requests']} requests: 5xx {m['server_errors_5xx']}, ledger invariants "
        f"{'held' if m['ledger']['ok'] else 'BROKEN'} (overspent periods "
        f"{m['ledger']['overspent_periods']}, cooldown violations "
        f"{m['ledger']['cooldown_violations']}), retries answered differently "
        f"{m['retries_with_a_different_answer']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
