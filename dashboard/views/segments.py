"""Segments: RFM segments with size, revenue share, CLV and churn, and their narratives."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.ui import release, require

st.title("Customer segments")
r = release()
if require(r, "segments"):
    m = r.segments
    seg = pd.DataFrame(m.segments)
    o = m.overall
    st.caption(
        f"RFM at the cut-off {m.meta['cutoff']} · {o['customers']:,} customers · "
        f"churn: no order in the {m.meta['churn_window_days']} days after it"
    )
    c1, c2, c3 = st.columns(3)
    c1.metric("Customers", f"{o['customers']:,}")
    c2.metric("Total 12-month value (CLV)", f"{o['total_clv']:,.2f}")
    c3.metric("Churn rate", f"{o['churn_rate']:.0%}")
    cols = ["name", "customers", "share", "revenue_share", "mean_clv", "churn_rate",
            "mean_recency_days", "mean_orders", "mean_order_value"]  # fmt: skip
    st.dataframe(seg[cols], hide_index=True, key="table")
    long = seg.melt(id_vars="name", value_vars=["share", "revenue_share", "clv_share"])
    st.plotly_chart(
        px.bar(long, x="name", y="value", color="variable", barmode="group",
               title="Share of customers, revenue and CLV"),
        key="shares",
    )  # fmt: skip
    st.plotly_chart(
        px.scatter(seg, x="churn_rate", y="mean_clv", size="customers", text="name",
                   title="Mean CLV against churn rate"),
        key="scatter",
    )  # fmt: skip
    sil = pd.DataFrame(
        [{"k": int(k), "silhouette": v} for k, v in m.meta["silhouette_by_k"].items()]
    )
    st.plotly_chart(px.line(sil, x="k", y="silhouette", markers=True, title="k by silhouette"),
                    key="silhouette")  # fmt: skip
    if r.has("narratives"):
        st.subheader("Narratives")
        for name in seg["name"]:
            x = r.narrative(name, "segment")
            if x:
                st.markdown(f"**{name}** · *{x['source']}*  \n{x['text']}")
