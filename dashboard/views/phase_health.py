"""Phase health: the healthy share and test AUC per journey phase, SHAP drivers, narratives."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.data import phase_rows, shap_frame
from dashboard.ui import release, require

st.title("Phase health")
r = release()
if require(r, "narratives"):
    n = r.narratives
    rows = pd.DataFrame(phase_rows(n))
    st.caption(f"Release {r.pointer['release']} · model store {r.profile.model_store}")
    st.plotly_chart(
        px.bar(rows, x="phase", y="healthy_share", text_auto=".0%", title="Healthy share"),
        key="healthy",
    )
    st.dataframe(rows, hide_index=True)
    shap = shap_frame(n)
    phase = st.selectbox("Phase", list(rows["phase"]), key="phase")
    one = shap[shap["phase"] == phase].sort_values("mean_abs_shap")
    st.plotly_chart(
        px.bar(one, x="mean_abs_shap", y="feature", orientation="h",
               title=f"{phase}: mean |SHAP| per feature"),
        key="shap",
    )  # fmt: skip
    if not shap.empty:
        st.plotly_chart(
            px.density_heatmap(shap, x="phase", y="feature", z="mean_abs_shap",
                               histfunc="sum", title="Mean |SHAP| by phase"),
            key="heat",
        )  # fmt: skip
    st.subheader("Narratives")
    for p in rows["phase"]:
        x = r.narrative(p, "phase")
        if x:
            st.markdown(f"**{p}** · *{x['source']}*  \n{x['text']}")
