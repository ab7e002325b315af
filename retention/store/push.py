"""The serving manifests of a release, written beside it in the model store.

The push itself (copy, register, flip ``production``) is ``retention.registry.release``.
"""

from __future__ import annotations

from typing import Any

from retention.config import Profile
from retention.deploy.manifests import render, to_yaml
from retention.store.model_store import ModelStore


def manifests_key(release: str) -> str:
    return f"manifests/{release}.yaml"


def write_manifests(
    profile: Profile, store: ModelStore, pointer: dict[str, Any]
) -> tuple[str, list[dict[str, Any]]]:
    """Render the InferenceServices of the release in ``pointer``; their URI and documents:
    what `kubectl apply -f` (or ``serving.apply``) rolls out."""
    docs = render(profile, pointer)
    key = manifests_key(str(pointer["release"]))
    store.backend.write_text_atomic(key, to_yaml(docs))
    return store.backend.uri(key), docs
