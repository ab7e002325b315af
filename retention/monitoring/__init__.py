"""Monitoring: what is served against what was trained, and when to retrain."""
