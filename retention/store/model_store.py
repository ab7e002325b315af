"""The model store: immutable versions per model and one ``production`` pointer for the release.

Layout (a local folder or a ``gs://`` prefix)::

    <root>/<model>/<version>/...      copied files, never modified after the copy
    <root>/production                 JSON {"release": ..., "models": {model: version}, ...}
    <root>/registry/<release>.json    what each release was registered with (retention.registry)

``<model>`` is the catalogue's ``ModelSpec.name`` (``policy``, ``phase_health``, ...).

A push first copies every model into a fresh version, then replaces ``production`` in one atomic
write (``os.replace`` locally, a single object upload on GCS, which is atomic). A crash or a failed
gate before that write leaves ``production`` exactly as it was; a crash after it leaves a complete
release. One pointer for all models means serving never mixes models of two runs.

The pointer also carries the registry's aliases (``champion``: the release in production,
``challenger``: one registered beside it) and ``champions``, the earlier champions newest last:
moving an alias or rolling back is the same one atomic write, so production and the aliases can
never disagree.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

POINTER = "production"


class Backend(Protocol):
    def copy_dir(self, src: Path, dest: str) -> None: ...
    def read_text(self, key: str) -> str | None: ...
    def write_text_atomic(self, key: str, text: str) -> None: ...
    def uri(self, key: str) -> str: ...
    def download_dir(self, key: str, dest: Path) -> Path: ...
    def list_keys(self, prefix: str) -> list[str]: ...


class LocalBackend:
    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()

    def uri(self, key: str) -> str:
        return str(self.root / key)

    def copy_dir(self, src: Path, dest: str) -> None:
        target = self.root / dest
        if target.exists():
            raise FileExistsError(f"model store version already exists: {target}")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            shutil.copytree(src, tmp, dirs_exist_ok=True)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def read_text(self, key: str) -> str | None:
        path = self.root / key
        return path.read_text(encoding="utf-8") if path.is_file() else None

    def write_text_atomic(self, key: str, text: str) -> None:
        path = self.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def download_dir(self, key: str, dest: Path) -> Path:
        return self.root / key  # already local: no copy needed

    def list_keys(self, prefix: str) -> list[str]:
        """The files under ``prefix`` (relative keys, sorted); temporary dot-files excluded."""
        base = self.root / prefix
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )


class GCSBackend:
    def __init__(self, root: str, client=None):
        from retention.fileio import split_gs

        self.bucket_name, prefix = split_gs(root)
        self.prefix = prefix.strip("/")
        if client is None:
            from google.cloud import storage

            client = storage.Client()
        self.bucket = client.bucket(self.bucket_name)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def uri(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self._key(key)}"

    def copy_dir(self, src: Path, dest: str) -> None:
        for f in sorted(p for p in Path(src).rglob("*") if p.is_file()):
            blob = self.bucket.blob(self._key(f"{dest}/{f.relative_to(src).as_posix()}"))
            # if_generation_match=0: never overwrite an existing version's files.
            blob.upload_from_filename(str(f), if_generation_match=0)

    def read_text(self, key: str) -> str | None:
        blob = self.bucket.blob(self._key(key))
        return blob.download_as_text() if blob.exists() else None

    def write_text_atomic(self, key: str, text: str) -> None:
        self.bucket.blob(self._key(key)).upload_from_string(text, content_type="application/json")

    def download_dir(self, key: str, dest: Path) -> Path:
        prefix = self._key(key).rstrip("/") + "/"
        for blob in self.bucket.list_blobs(prefix=prefix):
            target = dest / blob.name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            blob.download_to_filename(str(target))
        return dest

    def list_keys(self, prefix: str) -> list[str]:
        start = len(self._key("")) if self.prefix else 0
        full = self._key(prefix).rstrip("/") + "/"
        return sorted(b.name[start:].lstrip("/") for b in self.bucket.list_blobs(prefix=full))


def backend_for(root: str, client=None) -> Backend:
    return GCSBackend(root, client) if root.startswith("gs://") else LocalBackend(root)


def new_version(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]


class ModelStore:
    def __init__(self, root: str, client=None):
        self.root = root
        self.backend = backend_for(root, client)

    def production(self) -> dict[str, Any] | None:
        text = self.backend.read_text(POINTER)
        return json.loads(text) if text else None

    def copy_versions(self, models: dict[str, Path], version: str) -> dict[str, str]:
        """Copy each model directory to ``<model>/<version>``; their URIs. Production is untouched."""
        for name, src in models.items():
            if not Path(src).is_dir():
                raise FileNotFoundError(f"model '{name}': no directory at {src}")
        uris = {}
        for name, src in models.items():
            self.backend.copy_dir(Path(src), f"{name}/{version}")
            uris[name] = self.backend.uri(f"{name}/{version}")
        return uris

    def write_pointer(self, pointer: dict[str, Any]) -> None:
        """Replace ``production`` in one atomic write: the only way production changes."""
        self.backend.write_text_atomic(POINTER, json.dumps(pointer, indent=2, sort_keys=True))

    def push(
        self,
        models: dict[str, Path],
        metadata: dict[str, Any] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Copy each model directory into a new version, then flip ``production`` once.

        The bare store operation; a release is pushed and registered by
        ``retention.registry.release.push_models``.
        """
        version = version or new_version()
        uris = self.copy_versions(models, version)
        previous = self.production() or {"models": {}}
        champions = list(previous.get("champions", []))
        if previous.get("release"):
            champions.append(previous["release"])
        pointer = {
            "release": version,
            "created": datetime.now(UTC).isoformat(),
            "models": {**previous.get("models", {}), **dict.fromkeys(models, version)},
            "uris": {**previous.get("uris", {}), **uris},
            "previous_release": previous.get("release"),
            "metadata": metadata or {},
            "aliases": {**previous.get("aliases", {}), "champion": version},
            "champions": champions,
            "action": "push",
        }
        self.write_pointer(pointer)
        return pointer

    def resolve(self, model: str, cache_dir: Path | None = None) -> Path:
        """Local directory of ``model`` in the production release (downloaded from GCS if needed)."""
        prod = self.production()
        if not prod or model not in prod.get("models", {}):
            raise LookupError(f"model store {self.root}: no production version of '{model}'")
        key = f"{model}/{prod['models'][model]}"
        dest = (cache_dir or Path(tempfile.mkdtemp(prefix="retention-model-"))) / key
        return self.backend.download_dir(key, dest)
