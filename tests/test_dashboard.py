"""Every dashboard page, driven in-process by Streamlit's AppTest over a real tiny release."""

from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from retention.insights.segments import SegmentModel  # noqa: E402
from retention.store.model_store import ModelStore  # noqa: E402

VIEWS = Path(__file__).resolve().parent.parent / "dashboard" / "views"


@pytest.fixture
def release(insights_release):
    return insights_release[0]


def page(name: str, profile, **state) -> AppTest:
    at = AppTest.from_file(str(VIEWS / f"{name}.py"), default_timeout=90)
    at.session_state["model_store"] = profile.model_store
    at.session_state["profile"] = "tiny"
    # No serving stack here: a port nothing listens on.
    at.session_state["serving"] = "http://127.0.0.1:9"
    for k, v in state.items():
        at.session_state[k] = v
    at.run()
    assert not at.exception, at.exception
    return at


def _text(at: AppTest) -> str:
    return "\n".join(m.value for m in at.markdown) + "\n".join(c.value for c in at.caption)


def test_phase_health_shows_every_phase_its_shap_and_narratives(release):
    at = page("phase_health", release)
    assert at.title[0].value == "Phase health"
    phases = ["Learn", "Buy", "Get", "Use", "Pay", "Renew"]
    assert at.selectbox(key="phase").options == phases
    text = _text(at)
    for p in phases:
        assert f"**{p}**" in text and f"In the {p} phase" in text
    assert len(at.get("plotly_chart")) == 3
    at.selectbox(key="phase").select("Pay").run()
    assert not at.exception
    assert "Pay: mean |SHAP| per feature" in at.get("plotly_chart")[1].proto.spec


def test_segments_page_shows_the_released_segments(release):
    at = page("segments", release)
    model = SegmentModel(ModelStore(release.model_store).resolve("segments"))
    table = at.dataframe[0].value
    assert list(table["name"]) == [s["name"] for s in model.segments]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Customers"] == f"{model.overall['customers']:,}"
    assert metrics["Total 12-month value (CLV)"] == f"{model.overall['total_clv']:,.2f}"
    text = _text(at)
    for s in model.segments:
        assert f"**{s['name']}**" in text
    assert len(at.get("plotly_chart")) == 3


def test_customer_lookup_scores_with_the_released_models_without_serving(release):
    at = page("customer", release)
    assert "not running" in _text(at)
    at.number_input[3].set_value(400)  # frequency: a frequent buyer
    at.number_input[4].set_value(20000.0)
    at.button[0].click().run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    p = float(metrics["P(churn)"])
    assert 0.0 <= p <= 1.0
    model = SegmentModel(ModelStore(release.model_store).resolve("segments"))
    assert metrics["Segment"] == max(model.segments, key=lambda s: s["mean_spend"])["name"]
    assert float(metrics["12-month value"].replace(",", "")) >= 0
    assert len(at.get("plotly_chart")) == 2  # the risk factors and the accept curve


def test_ab_report_page_reads_an_outcomes_file(release, tmp_path):
    n = 400
    df = pd.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            "arm": ["treatment" if i % 2 else "control" for i in range(n)],
            "contacted": [i % 2 for i in range(n)],
            "retained": [1 if (i % 2 and i % 5) or i % 3 == 0 else 0 for i in range(n)],
            "value": [100.0] * n,
            "offer_cost": [5.0 if i % 2 else 0.0 for i in range(n)],
        }
    )
    path = tmp_path / "outcomes.csv"
    df.to_csv(path, index=False)
    at = page("ab_report", release)
    at.text_input(key="outcomes_path").input(str(path)).run()
    assert not at.exception, at.exception
    t = df[df["arm"] == "treatment"]["retained"].mean()
    c = df[df["arm"] == "control"]["retained"].mean()
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Retention uplift (pp)"] == f"{100 * (t - c):+.2f}"
    assert "A/B report" in at.code[0].value


def test_assistant_chat_answers_with_the_released_figure(release):
    at = page("assistant", release)
    at.chat_input[0].set_value("What is our total CLV?").run()
    assert not at.exception, at.exception
    model = SegmentModel(ModelStore(release.model_store).resolve("segments"))
    answer = at.chat_message[1].markdown[0].value
    assert f"{model.overall['total_clv']:,.2f}" in answer
    at.chat_input[0].set_value("What's the weather in Paris?").run()
    assert "cannot answer" in at.chat_message[3].markdown[0].value
