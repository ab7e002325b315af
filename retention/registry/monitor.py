"""``retention monitor`` against a registered release: read its reference and the inputs, judge,
write the report (locally and into the model store), and act on the verdict."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

from retention.config import Profile
from retention.data.sources import read_frame
from retention.monitoring.monitor import MonitorReport, run_monitor
from retention.monitoring.report import write_report
from retention.registry.registry import CHAMPION, Registry
from retention.store.model_store import ModelStore

T = TypeVar("T")


def load_reference(registry: Registry, release: str) -> tuple[dict, str]:
    entry = registry.get(release)
    if not entry.reference:
        raise ValueError(
            f"release {release} has no training reference (it was pushed without its splits); "
            "the monitor needs one: retrain, or monitor a release pushed by the DAG"
        )
    text = registry.store.backend.read_text(entry.reference)
    if text is None:
        raise FileNotFoundError(f"{registry.store.backend.uri(entry.reference)}: no such file")
    return json.loads(text), registry.store.backend.uri(entry.reference)


def monitor_release(
    profile: Profile,
    decisions: str | None = None,
    *,
    batch: str | None = None,
    outcomes: str | None = None,
    release: str | None = None,
    out_dir: str | Path | None = None,
    now: datetime | None = None,
) -> tuple[MonitorReport, dict[str, Path], str]:
    """Judge ``release`` (default: the champion) on the inputs (default: ``monitoring.*``).

    Returns the report, its local files and where the store keeps a copy
    (``<store>/<monitoring.report_dir>/<release>/<time>/``)."""
    cfg = profile.monitoring
    decisions = decisions or cfg.decisions
    batch = batch or cfg.batch
    outcomes = outcomes or cfg.outcomes
    if not decisions:
        raise ValueError("monitor: no decision log (give --decisions or monitoring.decisions)")
    store = ModelStore(profile.model_store)
    registry = Registry(store)
    name = registry.resolve(release or CHAMPION)
    entry = registry.get(name)
    reference, ref_uri = load_reference(registry, name)
    sources = {"reference": ref_uri, "decisions": decisions}
    frames = {"decisions": read_frame(decisions)}
    for key, uri in (("batch", batch), ("outcomes", outcomes)):
        if uri:
            sources[key] = uri
            frames[key] = read_frame(uri)
    now = now or datetime.now(UTC)
    report = run_monitor(
        reference,
        entry.model_dump(),
        frames["decisions"],
        cfg,
        sources=sources,
        batch=frames.get("batch"),
        outcomes=frames.get("outcomes"),
        now=now,
        seed=profile.seed,
    )
    stamp = now.strftime("%Y%m%dT%H%M%SZ")
    local = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="retention-monitor-"))
    paths = write_report(report, local)
    key = f"{cfg.report_dir}/{name}/{stamp}"
    store.backend.copy_dir(local, key)
    return report, paths, store.backend.uri(key)


def act_on(report: MonitorReport, *, retrain: bool, run: Callable[[], T]) -> T | None:
    """Run ``run`` (the training DAG, or a Vertex submission) when asked to and a rule fired."""
    if retrain and report.retrain:
        return run()
    return None
