"""Vertex AI Model Registry: each released model as a version of one Vertex model per name.

The champion/challenger pattern of the maintained Vertex pipelines samples: a release's models
are uploaded with ``Model.upload(parent_model=..., version_aliases=[...], is_default_version=...)``,
as new versions of ``PREFIX-MODEL`` (the first upload creates it, with ``model_id``); each version
carries the alias ``r<release>`` and the champion also ``champion`` and ``default`` (the version
Vertex serves by default); ``promote`` / ``rollback`` move those aliases with
``ModelRegistry.add_version_aliases``. The model store's ``production`` pointer stays the one
source of truth (an atomic write); Vertex mirrors it and is brought back in line by running the
same command again.

``dry_run`` runs the SDK's own request building with anonymous credentials and a client that
records the request instead of sending it, as ``retention submit --dry-run`` does: no network,
no credentials, and what is printed is what would be sent.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from retention.config import Profile

if TYPE_CHECKING:
    from retention.registry.registry import Registry, RegistryEntry

CHAMPION_ALIASES = ("champion", "default")


def model_id(profile: Profile, name: str) -> str:
    return f"{profile.registry.display_name_prefix}-{name}".lower().replace("_", "-")


def version_alias(release: str) -> str:
    """A Vertex alias for the release (``[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]``)."""
    return "r" + re.sub(r"[^a-z0-9-]", "-", release.lower())


def _label(value: str) -> str:
    return re.sub(r"[^a-z0-9_-]", "-", value.lower())[:63]


def _project(profile: Profile) -> str:
    if not profile.gcp.project:
        raise ValueError("gcp.project is not set in the profile (use --set gcp.project=ID)")
    return profile.gcp.project


class _Sent(Exception):
    """Raised by the recording client where the real one would wait for the API's answer."""


class _Recorder:
    """Stands in for the SDK's ModelService client in a dry run: keeps each request."""

    def __init__(self):
        self.requests: list[dict[str, Any]] = []

    def upload_model(self, request, timeout=None):
        self.requests.append({"method": "UploadModel", "request": _as_dict(request)})
        raise _Sent

    def merge_version_aliases(self, name, version_aliases):
        self.requests.append(
            {
                "method": "MergeVersionAliases",
                "request": {"name": name, "version_aliases": list(version_aliases)},
            }
        )


def _as_dict(message) -> dict[str, Any]:
    from google.protobuf.json_format import MessageToDict

    return MessageToDict(type(message).pb(message), preserving_proto_field_name=True)


def _credentials(dry_run: bool):
    if not dry_run:
        return None
    from google.auth.credentials import AnonymousCredentials

    return AnonymousCredentials()


def upload_release(
    profile: Profile,
    registry: Registry,
    entry: RegistryEntry,
    *,
    promote: bool,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Upload every model of ``entry``; per model its resource, version id and aliases
    (``dry_run``: the requests instead)."""
    from google.cloud import aiplatform

    recorder = _Recorder()

    class DryRunModel(aiplatform.Model):
        @classmethod
        def _instantiate_client(cls, location=None, credentials=None, appended_user_agent=None):
            return recorder

    uploader = DryRunModel if dry_run else aiplatform.Model
    uploaded = _uploaded_before(registry)
    image = profile.registry.serving_container_image or profile.serving.image
    local = {n: u for n, u in entry.uris.items() if not u.startswith("gs://")}
    if local:
        name, uri = next(iter(local.items()))
        raise ValueError(
            f"Vertex AI Model Registry reads models from Cloud Storage: release {entry.release}'s "
            f"'{name}' is at {uri} (use a gs:// model_store, as the gcp profile does)"
        )
    out: dict[str, Any] = {}
    for name, uri in entry.uris.items():
        mid = model_id(profile, name)
        first = mid not in uploaded
        aliases = [version_alias(entry.release), *(CHAMPION_ALIASES[:1] if promote else ())]
        if not promote:
            aliases.append("challenger")
        kwargs = dict(
            serving_container_image_uri=image,
            serving_container_args=["serve-model", _service(name), "--model-dir", "/mnt/models"],
            artifact_uri=uri,
            display_name=mid,
            model_id=mid if first else None,
            parent_model=None if first else mid,
            is_default_version=promote,
            version_aliases=aliases,
            version_description=f"retention release {entry.release} ({entry.code_version})",
            labels={
                "release": _label(entry.release),
                "code": _label(entry.code_version or "unknown"),
                "gates": "passed" if entry.passed else "failed",
            },
            project=_project(profile),
            location=profile.gcp.region,
            credentials=_credentials(dry_run),
        )
        try:
            model = uploader.upload(**kwargs)
        except _Sent:
            out[name] = recorder.requests[-1]
            continue
        out[name] = {
            "resource": model.resource_name,
            "version_id": model.version_id,
            "aliases": list(model.version_aliases or []),
        }
    return out


def move_aliases(
    profile: Profile, entry: RegistryEntry, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Give ``entry``'s versions the champion aliases (each alias names one version, so
    this takes them from the version that had them)."""
    from google.cloud import aiplatform

    recorder = _Recorder()
    done = []
    for name in entry.uris:
        mid = model_id(profile, name)
        reg = aiplatform.models.ModelRegistry(
            model=mid,
            project=_project(profile),
            location=profile.gcp.region,
            credentials=_credentials(dry_run),
        )
        if dry_run:
            reg.client = recorder
        version = entry.vertex.get(name, {}).get("version_id") or version_alias(entry.release)
        reg.add_version_aliases(list(CHAMPION_ALIASES), version=version)
        done.append(
            recorder.requests[-1]
            if dry_run
            else {"model": reg.model_resource_name, "version": version}
        )
    return done


def _uploaded_before(registry: Registry) -> set[str]:
    """Vertex models an earlier release created: later ones are versions of them."""
    out: set[str] = set()
    for r in registry.releases():
        for info in registry.get(r).vertex.values():
            resource = info.get("resource") or info.get("request", {}).get("model_id")
            if resource:
                out.add(str(resource).rsplit("/", 1)[-1])
    return out


def _service(name: str) -> str:
    from retention import catalogue

    return catalogue.spec(name).service or name
