"""The assistant's chat: questions about segments, churn and value, answered from the release."""

import uuid

import streamlit as st

from dashboard.ui import release, require
from retention.insights.assistant import Assistant


@st.cache_resource(show_spinner=False)
def _assistant(segments_dir: str, _profile) -> Assistant:
    # One assistant per release: its memory holds every session's conversation by id.
    return Assistant.from_dir(segments_dir, _profile)


st.title("Assistant")
r = release()
if require(r, "segments"):
    a = _assistant(str(r.dir("segments")), r.profile)
    s = st.session_state
    s.setdefault("conversation_id", f"dash-{uuid.uuid4().hex[:12]}")
    s.setdefault("chat", [])
    st.caption(
        "Figures are computed from the released segments; ask e.g. which segment is the most "
        "profitable, or what our total CLV is."
    )
    for role, text in s["chat"]:
        with st.chat_message(role):
            st.markdown(text)
    q = st.chat_input("Ask a question")
    if q:
        ans = a.ask(s["conversation_id"], q)
        s["chat"] += [("user", q), ("assistant", ans.answer)]
        with st.chat_message("user"):
            st.markdown(q)
        with st.chat_message("assistant"):
            st.markdown(ans.answer)
            st.caption(f"intent {ans.intent} · {ans.latency_ms:.1f} ms")
