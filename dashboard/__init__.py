"""The Streamlit dashboard: phase health, segments, customer lookup, A/B report, assistant.

``make dashboard`` runs ``streamlit run dashboard/app.py`` on loopback; every page reads the
model store's production release (``dashboard.data``) and, when it answers, the serving stack.
"""
