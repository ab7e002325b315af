"""What every page shares: the release (opened once per model store) and its absence."""

from __future__ import annotations

import streamlit as st

from dashboard.data import Release


@st.cache_resource(show_spinner=False)
def _open(model_store: str | None, profile: str | None, serving: str | None) -> Release:
    return Release.open(model_store=model_store, profile=profile, serving=serving)


def release() -> Release:
    """The release this session reads; ``model_store``, ``profile`` and ``serving`` in the
    session state (tests) override the command line's ``-- --profile ... --model-store ...``."""
    s = st.session_state
    return _open(s.get("model_store"), s.get("profile"), s.get("serving"))


def require(r: Release, *models: str) -> bool:
    """False, with a message saying what to run, when the release lacks one of ``models``."""
    missing = [m for m in models if not r.has(m)]
    if missing:
        st.warning(
            f"The production release in {r.profile.model_store} has no {', '.join(missing)}: "
            "run `make run` first."
        )
        return False
    return True
