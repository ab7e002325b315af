"""Customer lookup: risk with its factors, the accept curve, value, segment, and the decision and
message of the serving stack when it runs (else the released models scored in this process)."""

import pandas as pd
import plotly.express as px
import streamlit as st

from dashboard.data import local_scores
from dashboard.ui import release, require

st.title("Customer lookup")
r = release()
if require(r, "risk", "accept", "ltv"):
    up = r.serving_up()
    st.caption(f"serving at {r.serving_url}: {'up' if up else 'not running'}")
    with st.form("lookup"):
        c1, c2, c3 = st.columns(3)
        cid = c1.text_input("customer_id", "c-17")
        name = c2.text_input("name", "Sam")
        plan = c3.text_input("plan", "Pro")
        tenure = c1.number_input("tenure (months)", 0, 120, 4)
        charges = c2.number_input("MonthlyCharges", 0.0, 1000.0, 89.5)
        contract = c3.selectbox("Contract", ["Month-to-month", "One year", "Two year"])
        st.markdown("Order facts (for the segment; leave 0 orders to skip)")
        d1, d2, d3 = st.columns(3)
        recency = d1.number_input("days_since_last", 0, 5000, 30)
        frequency = d2.number_input("frequency (repeat orders)", 0, 1000, 0)
        spend = d3.number_input("total_spend", 0.0, 1e7, 0.0)
        decide = st.checkbox(
            "Ask the serving stack for a decision (it is recorded in the contact ledger under "
            "request id dashboard-CUSTOMER_ID)",
            value=False,
            disabled=not up,
        )
        go = st.form_submit_button("Look up")
    if go:
        facts = {"customer_id": cid, "name": name, "plan": plan, "tenure": int(tenure),
                 "MonthlyCharges": float(charges), "Contract": contract}  # fmt: skip
        answer = None
        if decide and up:
            try:
                answer = r.call(
                    "/retain", {"request_id": f"dashboard-{cid}", "customer_facts": facts}
                )
            except (OSError, ValueError) as err:
                st.error(f"serving: {err}")
        if answer:
            risk, curve = answer["risk"], answer["accept_probability"]
            value = answer["value"]
            st.subheader("Decision")
            st.json(answer["decision"])
            st.markdown(f"**Message:** {answer['message']}")
        else:
            s = local_scores(r, facts)
            risk, curve, value = s["risk"], s["accept"]["accept_probability"], s["value"]
        c1, c2, c3 = st.columns(3)
        c1.metric("P(churn)", f"{risk['churn_probability']:.2f}", risk.get("risk_level"))
        c2.metric("12-month value", f"{value['value']:,.2f}", value.get("source"))
        segment = None
        if r.has("segments") and (frequency or spend):
            segment = r.segments.assign(
                [{"days_since_last": recency, "frequency": frequency, "total_spend": spend}]
            )[0]
        c3.metric("Segment", segment or "no order facts")
        factors = pd.DataFrame(risk.get("factors") or [])
        if not factors.empty:
            st.plotly_chart(
                px.bar(factors, x="shap", y="feature", orientation="h", title="Risk factors"),
                key="factors",
            )
        levels = pd.DataFrame(
            {"offer": [f"{p}%" for p in r.profile.contract.percents], "p_accept": curve}
        )
        st.plotly_chart(
            px.line(levels, x="offer", y="p_accept", markers=True, title="Accept curve"),
            key="curve",
        )
