"""push: copy the models that passed the gates into the model store and flip ``production``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from retention.catalogue import released, require_exactly
from retention.config import Profile
from retention.deploy.manifests import render, to_yaml
from retention.models.outputs import MODEL_DIR
from retention.store.model_store import ModelStore


def push_models(
    profile: Profile, trained: dict[str, str | Path], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """``trained`` maps each released model's name to its trainer's output directory.

    Exactly the catalogue's released models, stored under their names: a release that lacks one
    would leave serving on an older model of it without anyone having decided so.
    """
    names = [s.name for s in released()]
    require_exactly("push: the released models", trained, names)
    models = {}
    for name in names:
        d = Path(trained[name])
        models[name] = d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d
    store = ModelStore(profile.model_store)
    pointer = store.push(models, metadata=metadata)
    # The serving manifests of this release, beside it in the store: what `kubectl apply -f`
    # (or serving.apply) rolls out.
    docs = render(profile, pointer)
    key = f"manifests/{pointer['release']}.yaml"
    store.backend.write_text_atomic(key, to_yaml(docs))
    pointer["manifests"] = store.backend.uri(key)
    if profile.serving.apply:
        from retention.deploy.apply import apply_manifests

        pointer["applied"] = apply_manifests(docs)
    return pointer
