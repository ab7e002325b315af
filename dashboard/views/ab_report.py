"""The A/B report: uplift in retention and ROI, treatment against control, with intervals."""

import io

import pandas as pd
import plotly.express as px
import streamlit as st

from retention.experiments.ab import ARMS, ab_report

st.title("A/B report")
st.markdown(
    "Outcomes: one row per customer with `arm` (treatment / control), `contacted`, `retained`, "
    "`value` and `offer_cost`, as `retention ab-report OUTCOMES.csv` reads them."
)
up = st.file_uploader("Outcomes CSV", type=["csv"], key="outcomes")
path = st.text_input("or a path to one", key="outcomes_path")
data = None
if up is not None:
    data = pd.read_csv(io.BytesIO(up.getvalue()))
elif path:
    data = path
if data is not None:
    try:
        rep = ab_report(data)
    except (ValueError, OSError) as err:
        st.error(str(err))
    else:
        arms = pd.DataFrame([{"arm": a, **rep.arms[a].model_dump()} for a in ARMS])
        st.dataframe(arms, hide_index=True)
        u = rep.retention_uplift
        c1, c2 = st.columns(2)
        c1.metric("Retention uplift (pp)", f"{100 * u.estimate:+.2f}",
                  f"CI [{100 * u.ci_low:+.2f}, {100 * u.ci_high:+.2f}]")  # fmt: skip
        roi = rep.roi
        c2.metric("ROI", "n/a" if roi.estimate is None else f"{roi.estimate:+.3f}")
        st.plotly_chart(
            px.bar(arms, x="arm", y="retention_rate", text_auto=".1%", title="Retention by arm"),
            key="arms",
        )
        st.code(rep.format_table())
