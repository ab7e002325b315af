"""push: copy the models that passed the gates into the model store and flip ``production``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention.config import Profile
from retention.models.outputs import MODEL_DIR
from retention.store.model_store import ModelStore


def push_models(
    profile: Profile, trained: dict[str, str | Path], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``trained`` maps a model name to its trainer's output directory (the model is in ``model/``)."""
    models = {}
    for name, d in trained.items():
        d = Path(d)
        models[name] = d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d
    return ModelStore(profile.model_store).push(models, metadata=metadata)
