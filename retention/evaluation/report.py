"""The evaluation report: one self-contained HTML page (plots inlined as PNG) per run."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from typing import Any

from retention.evaluation.gates import GateResult
from retention.results import ModelResult

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


def _phase_section(details: dict[str, Any], curves: dict[str, Any]) -> list[str]:
    parts = [
        "<table><tr><th>phase</th><th>test AUC</th><th>healthy</th><th>top drivers</th>"
        "<th>summary</th></tr>"
    ]
    for phase in details.get("phase_order", list(details["phases"])):
        v = details["phases"][phase]
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


def decision_png(curves: dict[str, Any]) -> list[str]:
    """Net revenue retained per policy (95 % CI over held-out episodes), and the dual variables."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = []
    pol = curves["policies"]
    key = "expected_net_revenue_retained"
    names = sorted(pol, key=lambda n: pol[n][key]["mean"])
    means = [pol[n][key]["mean"] for n in names]
    err = [
        [m - pol[n][key]["low"] for n, m in zip(names, means, strict=True)],
        [pol[n][key]["high"] - m for n, m in zip(names, means, strict=True)],
    ]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].barh(names, means, xerr=err, color=["#b33" if n == "ppo" else "#888" for n in names])
    axes[0].set(title="expected net revenue retained per episode", xlabel="vs never contacting")
    for k, key in enumerate(("budget_used", "contact_rate")):
        axes[k + 1].barh(names, [pol[n][key]["mean"] for n in names], color="#669")
        axes[k + 1].set(title=key.replace("_", " "))
    fig.tight_layout()
    out.append(_png(fig))
    plt.close(fig)
    hist = curves.get("history", [])
    if hist:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
        it = [h["iteration"] for h in hist]
        axes[0].plot(it, [h["episode_return_mean"] for h in hist])
        axes[0].set(title="PPO: mean episode return", xlabel="iteration")
        for k in hist[0]["lambdas"]:
            axes[1].plot(it, [h["lambdas"][k] for h in hist], label=k)
        axes[1].set(title="Lagrange multipliers", xlabel="iteration")
        axes[1].legend()
        fig.tight_layout()
        out.append(_png(fig))
        plt.close(fig)
    return out


def _decision_section(curves: dict[str, Any], offer_percents: Sequence[float]) -> list[str]:
    pol = curves["policies"]
    cols = (
        "expected_net_revenue_retained",
        "net_revenue_retained",
        "net_revenue_retention",
        "budget_used",
        "contact_rate",
    )
    parts = [
        "<table><tr><th>policy</th>"
        + "".join(f"<th>{c.replace('_', ' ')} (95 % CI)</th>" for c in cols)
        + f"<th>ROI</th><th>offer mix {'/'.join(f'{p:g}' for p in offer_percents)} %</th>"
        "<th>max overshoot</th>"
        "<th>fatigue / cooldown violations</th></tr>"
    ]
    for name, m in sorted(pol.items(), key=lambda kv: -kv[1][cols[0]]["mean"]):
        cells = "".join(
            f"<td>{m[c]['mean']:.3f} [{m[c]['low']:.3f}, {m[c]['high']:.3f}]</td>"
            if isinstance(m.get(c), dict)
            else "<td>–</td>"
            for c in cols
        )
        mix = " / ".join(f"{x:.0%}" for x in m.get("offer_mix", []))
        parts.append(
            f"<tr><td>{html.escape(name)}</td>{cells}<td>{m.get('roi', 0):.2f}</td>"
            f"<td>{mix}</td><td>{m.get('budget_overshoot', 0):.2%}</td>"
            f"<td>{m.get('fatigue_violations', 0):g} / {m.get('cooldown_violations', 0):g}</td></tr>"
        )
    parts.append("</table><div class='plots'>")
    parts += [
        f"<img alt='policy plot' src='data:image/png;base64,{b}'>" for b in decision_png(curves)
    ]
    parts.append("</div>")
    return parts


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4f}"
    return html.escape(str(v))


def render(
    results: list[GateResult],
    metrics_by_model: dict[str, ModelResult],
    curves_by_model: dict[str, dict[str, Any]],
    offer_percents: Sequence[float] = (),
    title: str = "Retention pipeline: evaluation gates",
) -> str:
    """``offer_percents``: the contract's offer levels, the columns of the policies' offer mix."""
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
    for name, result in metrics_by_model.items():
        parts.append(f"<h2>{html.escape(name)}</h2><table><tr><th>metric</th><th>value</th></tr>")
        shown = [*result.text_fields(), *result.numeric_fields()]
        for k in (k for k in type(result).model_fields if k in shown):
            if (v := getattr(result, k)) is not None:
                parts.append(f"<tr><td>{html.escape(k)}</td><td>{_fmt(v)}</td></tr>")
        parts.append("</table>")
        if "phases" in result.details:
            parts += _phase_section(result.details, curves_by_model.get(name, {}))
        if "policies" in curves_by_model.get(name, {}):
            parts += _decision_section(curves_by_model[name], offer_percents)
        if name in curves_by_model and "roc" in curves_by_model[name]:
            imgs = roc_and_calibration_png(name, curves_by_model[name])
            parts.append(
                "<div class='plots'>"
                + "".join(f"<img alt='{name} plot' src='data:image/png;base64,{b}'>" for b in imgs)
                + "</div>"
            )
    parts.append("</body></html>")
    return "\n".join(parts)
