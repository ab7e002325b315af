"""The model registry: every release with its metrics, gates, data and code, and its aliases."""
