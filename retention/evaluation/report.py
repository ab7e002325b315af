"""The evaluation report: one self-contained HTML page (plots inlined as PNG) per run."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from retention.evaluation.gates import GateResult

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:left}
.pass{color:#176c2c;font-weight:600}.fail{color:#b00020;font-weight:600}
.plots img{width:48%;margin-right:1%}
"""


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def roc_and_calibration_png(name: str, curves: dict[str, Any]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"], label=name)
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{name}: ROC (test)")
    out.append(_png(fig))
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    cal = curves["calibration"]
    ax.plot([0, 1], [0, 1], "--", color="grey", lw=1)
    ax.plot(cal["mean_predicted"], cal["fraction_positive"], "o-", label=name)
    ax.set(
        xlabel="mean predicted probability",
        ylabel="observed frequency",
        title=f"{name}: calibration (test, 10 bins)",
    )
    out.append(_png(fig))
    plt.close(fig)
    return out


def shap_bars_png(shap: dict[str, Any]) -> str:
    """One bar chart of mean |SHAP| per feature for each journey phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = shap.get("phases", list(shap["mean_abs_shap"]))
    fig, axes = plt.subplots(2, 3, figsize=(12, 6), sharex=True)
    for ax, phase in zip(axes.ravel(), phases, strict=False):
        values = shap["mean_abs_shap"][phase]
        order = sorted(range(len(values)), key=values.__getitem__)
        ax.barh([shap["features"][i] for i in order], [values[i] for i in order])
        ax.set_title(phase)
    fig.supxlabel("mean |SHAP| (log-odds), test rows")
    fig.tight_layout()
    out = _png(fig)
    plt.close(fig)
    return out


def _phase_section(metrics: dict[str, Any], curves: dict[str, Any]) -> list[str]:
    parts = [
        "<table><tr><th>phase</th><th>test AUC</th><th>healthy</th><th>top drivers</th>"
        "<th>summary</th></tr>"
    ]
    for phase in metrics.get("phase_order", list(metrics["phases"])):
        v = metrics["phases"][phase]
        drivers = ", ".join(f"{d['feature']} ({d['mean_abs_shap']:.3f})" for d in v["drivers"])
        parts.append(
            f"<tr><td>{html.escape(phase)}</td><td>{v['test_auc']:.3f}</td>"
            f"<td>{v['healthy_share']:.0%}</td><td>{html.escape(drivers)}</td>"
            f"<td>{html.escape(v['summary'])}</td></tr>"
        )
    parts.append("</table>")
    if "shap" in curves:
        parts.append(
            f"<img alt='SHAP by phase' src='data:image/png;base64,{shap_bars_png(curves['shap'])}'>"
        )
    return parts


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def render(
    results: list[GateResult],
    metrics_by_model: dict[str, dict[str, Any]],
    curves_by_model: dict[str, dict[str, Any]],
    title: str = "Retention pipeline: evaluation gates",
) -> str:
    passed = all(r.passed for r in results)
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
        f"<p>Overall: <span class='{'pass' if passed else 'fail'}'>"
        f"{'PASSED' if passed else 'FAILED'}</span></p>",
        "<h2>Gates</h2><table><tr><th>model</th><th>metric</th><th>value</th><th>rule</th>"
        "<th>result</th><th>detail</th></tr>",
    ]
    for r in results:
        cls = "pass" if r.passed else "fail"
        parts.append(
            f"<tr><td>{r.gate.model}</td><td>{r.gate.metric}</td><td>{_fmt(r.value)}</td>"
            f"<td>{html.escape(r.gate.op)} {r.gate.threshold:g}</td>"
            f"<td class='{cls}'>{'pass' if r.passed else 'FAIL'}</td>"
            f"<td>{html.escape(r.message)}</td></tr>"
        )
    parts.append("</table>")
    for name, metrics in metrics_by_model.items():
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr><th>metric</th><th>value</th></tr>")
        for k, v in metrics.items():
            if isinstance(v, (int, float, str)):
                parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
        parts.append("</table>")
        if "phases" in metrics:
            parts += _phase_section(metrics, curves_by_model.get(name, {}))
        if name in curves_by_model and "roc" in curves_by_model[name]:
            imgs = roc_and_calibration_png(name, curves_by_model[name])
            parts.append(
                "<div class='plots'>"
                + "".join(f"<img alt='{name} plot' src='data:image/png;base64,{b}'>" for b in imgs)
                + "</div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
