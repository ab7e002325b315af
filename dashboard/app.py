"""``streamlit run dashboard/app.py -- --profile local``: the pages, in the sidebar's order."""

from pathlib import Path

import streamlit as st

VIEWS = Path(__file__).resolve().parent / "views"
PAGES = [
    st.Page(VIEWS / "phase_health.py", title="Phase health", default=True),
    st.Page(VIEWS / "segments.py", title="Segments"),
    st.Page(VIEWS / "customer.py", title="Customer lookup"),
    st.Page(VIEWS / "ab_report.py", title="A/B report"),
    st.Page(VIEWS / "assistant.py", title="Assistant"),
]

st.set_page_config(page_title="Retention insights", layout="wide")
st.navigation(PAGES).run()
