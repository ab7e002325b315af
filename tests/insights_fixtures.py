"""A small real release for the dashboard and assistant tests: the models they read, trained by
the project's own functions on the tiny profile's tables in seconds, pushed to a model store.

Risk, accept, phase health, LTV, segments and (templated) narratives; not the policy or the
writer, which no page reads and which take the longest to build.
"""

from __future__ import annotations

from pathlib import Path

from retention.config import Profile, load_profile
from retention.models.outputs import MODEL_DIR

NEEDED = ("risk", "accept", "phase_health", "ltv", "segments", "narratives")


def insights_profile(root: Path) -> Profile:
    # Fewer trees than tiny's: these tests read the models' files and figures, not their quality.
    return load_profile(
        "tiny",
        overrides=[
            f"model_store={root / 'model-store'}",
            "phase_health.n_estimators=25",
            "ltv.n_estimators=40",
            "risk.n_estimators=40",
            "accept.n_estimators=40",
        ],
    )


def build_insights_release(root: Path) -> tuple[Profile, Path]:
    """(profile, splits dir); the release is in ``profile.model_store``."""
    from retention.data.ingest import ingest
    from retention.data.split import split
    from retention.store.model_store import ModelStore
    from tests.serving_fixtures import BUILDERS

    profile = insights_profile(root)
    ingest(profile, root / "data")
    split(profile, root / "data", root / "splits")
    trained = {}
    for name in NEEDED:
        out = root / "trained" / name
        BUILDERS[name](profile, root / "splits", out)
        trained[name] = out / MODEL_DIR
    ModelStore(profile.model_store).push(trained, metadata={"source": "tests.insights_fixtures"})
    return profile, root / "splits"
