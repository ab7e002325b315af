"""The monitor's outputs: the JSON report, a self-contained HTML page (inline SVG, no scripts, no
network), and the figures as Prometheus gauges in the text exposition format (for the
node-exporter textfile collector or a Pushgateway; the KFP component also logs them as Metrics).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from retention.fileio import atomic_path, write_json
from retention.monitoring.monitor import MonitorReport, Window, report_paths

_W, _H = 420, 150


def write_report(report: MonitorReport, out_dir: str | Path) -> dict[str, Path]:
    """``report.json``, ``report.html`` and ``monitor.prom`` under ``out_dir``, each moved into
    place whole."""
    paths = report_paths(out_dir)
    paths["json"].parent.mkdir(parents=True, exist_ok=True)
    write_json(paths["json"], report.model_dump(mode="json"))
    with atomic_path(paths["html"]) as tmp:
        tmp.write_text(render_html(report), encoding="utf-8")
    with atomic_path(paths["prom"]) as tmp:
        tmp.write_text(prometheus_text(report), encoding="utf-8")
    return paths


def gauges(report: MonitorReport) -> list[tuple[str, str, dict[str, str], float]]:
    """(name, help, labels, value) of every figure."""
    rel = {"release": report.release}
    out: list[tuple[str, str, dict[str, str], float]] = [
        ("retention_monitor_retrain", "1 when a retraining rule fired", rel, float(report.retrain)),
        ("retention_monitor_decisions", "decisions in the log", rel, float(report.decisions)),
    ]
    if report.release_age_days is not None:
        out.append(
            (
                "retention_monitor_release_age_days",
                "age of the release",
                rel,
                report.release_age_days,
            )
        )
    for r in report.rules:
        out.append(
            ("retention_monitor_rule_fired", "1 when the rule fired", {**rel, "rule": r.name},
             float(r.fired))
        )  # fmt: skip
    for d in [*report.features, *([report.score] if report.score else [])]:
        labels = {**rel, "feature": d["column"]}
        out.append(("retention_monitor_psi", "population stability index", labels, d["psi"]))
        if d.get("ks") is not None:
            out.append(("retention_monitor_ks", "two-sample KS statistic", labels, d["ks"]))
        if d["kind"] == "categorical":
            out.append(
                ("retention_monitor_unseen_share", "share of levels training never saw", labels,
                 d["unseen_share"])
            )  # fmt: skip
    if report.recent is not None:
        for metric in ("auc", "ece", "brier", "churn_rate"):
            v = getattr(report.recent, metric)
            if v is not None:
                out.append(
                    (f"retention_monitor_{metric}", f"{metric} over the recent windows", rel, v)
                )
    return out


def prometheus_text(report: MonitorReport) -> str:
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    registry = CollectorRegistry()
    made: dict[str, Gauge] = {}
    for name, help_, labels, value in gauges(report):
        if name not in made:
            made[name] = Gauge(name, help_, sorted(labels), registry=registry)
        made[name].labels(**labels).set(value)
    return generate_latest(registry).decode()


# ----------------------------------------------------------------------------------------- html


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _bars(bins: list[dict[str, Any]]) -> str:
    """Reference (grey) and current (colour) share per bin, side by side."""
    if not bins:
        return ""
    top = max(max(b["reference"], b["current"]) for b in bins) or 1.0
    slot = _W / len(bins)
    bar = max(slot / 2 - 2, 1)
    parts = [f'<svg width="{_W}" height="{_H + 30}" role="img">']
    for i, b in enumerate(bins):
        x = i * slot + 1
        for j, (key, colour) in enumerate((("reference", "#9e9e9e"), ("current", "#1565c0"))):
            h = b[key] / top * _H
            parts.append(
                f'<rect x="{x + j * bar:.1f}" y="{_H - h:.1f}" width="{bar:.1f}" height="{h:.1f}" '
                f'fill="{colour}"><title>{_e(b["bin"])}: {key} {b[key]:.1%}</title></rect>'
            )
        parts.append(
            f'<text x="{x:.1f}" y="{_H + 12}" font-size="8">{_e(str(b["bin"])[:12])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _lines(windows: list[Window], metrics: tuple[str, ...], floor: float | None) -> str:
    pts = [w for w in windows if w.rows]
    if len(pts) < 1:
        return ""
    colours = {"auc": "#1565c0", "ece": "#c62828", "brier": "#6a1b9a", "churn_rate": "#2e7d32"}
    step = _W / max(len(pts) - 1, 1)
    parts = [f'<svg width="{_W}" height="{_H + 20}" role="img">']
    for m in metrics:
        xy = [
            (i * step, _H - getattr(w, m) * _H)
            for i, w in enumerate(pts)
            if getattr(w, m) is not None
        ]
        if xy:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in xy)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{colours[m]}" stroke-width="2">'
                f"<title>{m}</title></polyline>"
            )
    if floor is not None:
        y = _H - floor * _H
        parts.append(
            f'<line x1="0" x2="{_W}" y1="{y:.1f}" y2="{y:.1f}" stroke="#000" '
            f'stroke-dasharray="4"><title>AUC floor {floor}</title></line>'
        )
    parts.append(f'<text x="0" y="{_H + 14}" font-size="9">{_e(pts[0].start[:10])}</text>')
    parts.append(
        f'<text x="{_W - 60}" y="{_H + 14}" font-size="9">{_e(pts[-1].end[:10])}</text></svg>'
    )
    return "".join(parts)


def _calibration(curve: dict[str, list[float]] | None) -> str:
    if not curve or not curve.get("mean_predicted"):
        return ""
    s = _H
    parts = [f'<svg width="{s}" height="{s}" role="img">',
             f'<line x1="0" y1="{s}" x2="{s}" y2="0" stroke="#9e9e9e" stroke-dasharray="4"/>']  # fmt: skip
    for p, f, n in zip(
        curve["mean_predicted"], curve["fraction_positive"], curve["count"], strict=True
    ):
        parts.append(
            f'<circle cx="{p * s:.1f}" cy="{s - f * s:.1f}" r="4" fill="#c62828">'
            f"<title>predicted {p:.2f}, observed {f:.2f} ({n})</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)


def render_html(r: MonitorReport) -> str:
    verdict = (
        f'<p class="bad">Retrain: {_e(", ".join(r.fired))}</p>'
        if r.retrain
        else '<p class="ok">No retraining rule fired.</p>'
    )
    rules = "".join(
        f'<tr class="{"bad" if x.fired else ""}"><td>{_e(x.name)}</td>'
        f"<td>{'fired' if x.fired else 'ok'}</td><td>{_e(x.detail)}</td></tr>"
        for x in r.rules
    )
    cols = [*r.features, *([r.score] if r.score else [])]
    feats = "".join(
        f'<div class="card"><h3>{_e(d["column"])}{" — drifted" if d["drifted"] else ""}</h3>'
        f"<p>PSI {d['psi']:.3f}"
        + (f", KS {d['ks']:.3f} (p = {d['ks_pvalue']:.2g})" if d.get("ks") is not None else "")
        + (f", unseen levels {d['unseen_share']:.1%}" if d["kind"] == "categorical" else "")
        + f"</p>{_bars(d['bins'])}</div>"
        for d in cols
    )
    windows = ""
    if r.windows:
        rows = "".join(
            f"<tr><td>{_e(w.start[:10])}</td><td>{_e(w.end[:10])}</td><td>{w.rows}</td>"
            + "".join(
                f"<td>{'-' if getattr(w, m) is None else f'{getattr(w, m):.3f}'}</td>"
                for m in ("auc", "ece", "brier", "churn_rate")
            )
            + "</tr>"
            for w in r.windows
        )
        windows = (
            "<h2>Outcomes by window</h2>"
            + _lines(r.windows, ("auc", "ece", "churn_rate"), None)
            + "<table><tr><th>from</th><th>to</th><th>rows</th><th>AUC</th><th>ECE</th>"
            f"<th>Brier</th><th>churn rate</th></tr>{rows}</table>"
            "<h2>Calibration (recent windows)</h2>" + _calibration(r.calibration)
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Monitor: {_e(r.release)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1100px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}
.bad{{color:#b71c1c;font-weight:bold}}.ok{{color:#1b5e20}}
.card{{display:inline-block;vertical-align:top;margin:0 1em 1em 0}}</style></head><body>
<h1>Monitor of release {_e(r.release)}</h1>
<p>{r.decisions} decisions{"" if r.batch_rows is None else f", {r.batch_rows} batch rows"}{"" if r.outcomes is None else f", {r.outcomes} outcomes"}; generated {_e(r.generated)}.</p>
{verdict}
<h2>Rules</h2><table><tr><th>rule</th><th>state</th><th>detail</th></tr>{rules}</table>
<h2>Drift against training (grey) — served (blue)</h2>{feats}
{windows}
</body></html>
"""
