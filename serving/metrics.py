"""Prometheus metrics of the orchestrator, served on ``/metrics`` next to KServe's own."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

HOP_SECONDS = Histogram(
    "retention_hop_seconds",
    "Latency of each hop of a retention decision (predictor calls, ledger, shield, total).",
    ["hop"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
DECISIONS = Counter(
    "retention_decisions_total", "Decisions by experiment arm and offer.", ["arm", "offer"]
)
FALLBACKS = Counter(
    "retention_fallbacks_total", "Predictor calls that failed over to rules or templates.", ["hop"]
)
SHIELD_BLOCKS = Counter(
    "retention_shield_blocks_total", "Writer messages the shield replaced, by rule.", ["rule"]
)
LEDGER_BLOCKS = Counter(
    "retention_ledger_blocks_total", "Proposed contacts the ledger's hard limits refused.", ["rule"]
)
