"""The embedded model registry: the model store itself, no server.

Every release pushed is registered under ``registry/<release>.json`` in the model store with what
it was released on: each model's metrics, the gate verdicts, a fingerprint of the data it was
trained on, the code version, the profile, and its training reference (``reference/<release>
.json``, for the monitor). Aliases live in the store's ``production`` pointer (see
``retention.store.model_store``): ``champion`` is the release in production, ``challenger`` one
registered beside it, and ``champions`` the earlier champions, newest last.

``promote`` and ``rollback`` each end in one atomic write of that pointer and touch nothing
before it but reads: a crash before the write leaves production, the aliases and the history
as they were; after it, the new state is complete. A running serving stack picks the new
production up at ``POST /admin/reload`` (``retention models rollback --reload URL`` calls it).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from retention.store.model_store import ModelStore

ENTRIES = "registry"
CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryEntry(BaseModel):
    """One registered release."""

    model_config = ConfigDict(extra="forbid")

    release: str
    created: str
    models: dict[str, str] = Field(description="model -> its version in this release")
    uris: dict[str, str]
    metrics: dict[str, dict[str, float]] = Field(default_factory=dict)
    gates: list[dict[str, Any]] = Field(default_factory=list)
    passed: bool = False
    data: dict[str, Any] = Field(default_factory=dict, description="fingerprint and tables")
    code_version: str | None = None
    profile: str | None = None
    reference: str | None = Field(default=None, description="store key of the reference")
    vertex: dict[str, Any] = Field(default_factory=dict, description="Vertex AI model versions")


def entry_key(release: str) -> str:
    if not release or "/" in release or release.startswith("."):
        raise ValueError(f"not a release name: {release!r}")
    return f"{ENTRIES}/{release}.json"


class Registry:
    def __init__(self, store: ModelStore):
        self.store = store

    # ------------------------------------------------------------------------------- reading

    def production(self) -> dict[str, Any]:
        return self.store.production() or {}

    def aliases(self) -> dict[str, str]:
        p = self.production()
        out = dict(p.get("aliases", {}))
        if p.get("release"):
            out.setdefault(CHAMPION, p["release"])  # a pointer written before the registry
        return out

    def get(self, release: str) -> RegistryEntry:
        text = self.store.backend.read_text(entry_key(release))
        if text is None:
            known = ", ".join(self.releases()[-5:]) or "none"
            raise ValueError(
                f"model store {self.store.root}: no registered release {release!r} "
                f"(latest: {known})"
            )
        return RegistryEntry.model_validate_json(text)

    def releases(self) -> list[str]:
        """Every registered release, by name (the second it was made, then a random tag)."""
        keys = self.store.backend.list_keys(ENTRIES)
        return sorted(
            k.rsplit("/", 1)[-1].removesuffix(".json") for k in keys if k.endswith(".json")
        )

    def resolve(self, ref: str) -> str:
        """A release name, or an alias (``champion``, ``challenger``)."""
        aliases = self.aliases()
        if ref in (CHAMPION, CHALLENGER):
            if ref not in aliases:
                raise ValueError(f"model store {self.store.root}: no {ref} release")
            return aliases[ref]
        return ref

    def listing(self) -> list[dict[str, Any]]:
        """One row per release, newest first: its aliases, gates and headline metrics."""
        aliases = self.aliases()
        by_release: dict[str, list[str]] = {}
        for alias, r in aliases.items():
            by_release.setdefault(r, []).append(alias)
        earlier = self.production().get("champions", [])
        rows = []
        entries = sorted((self.get(r) for r in self.releases()), key=lambda e: e.created)
        for e in reversed(entries):
            r = e.release
            tags = sorted(by_release.get(r, []))
            if r in earlier:
                tags.append(f"previous-champion-{len(earlier) - earlier.index(r)}")
            rows.append(
                {
                    "release": r,
                    "created": e.created,
                    "aliases": tags,
                    "passed": e.passed,
                    "code_version": e.code_version,
                    "data_fingerprint": e.data.get("fingerprint"),
                    "risk_test_auc": e.metrics.get("risk", {}).get("test_auc"),
                }
            )
        return rows

    # ------------------------------------------------------------------------------- writing

    def record(self, entry: RegistryEntry) -> None:
        """Write ``entry``; a release is registered once (its entry is never rewritten)."""
        key = entry_key(entry.release)
        if self.store.backend.read_text(key) is not None:
            raise FileExistsError(f"release {entry.release} is registered already")
        self.store.backend.write_text_atomic(key, entry.model_dump_json(indent=2))

    def promote(
        self,
        ref: str,
        *,
        action: str = "promote",
        require_passed: bool = True,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Make ``ref`` (a release or ``challenger``) the champion: production, in one write.

        A release whose recorded gates failed is refused (``require_passed``; the push of the
        DAG runs only once its gates passed, and promotes what it pushed)."""
        release = self.resolve(ref)
        entry = self.get(release)
        if require_passed and not entry.passed:
            raise ValueError(f"release {release} did not pass its gates: it cannot be promoted")
        prev = self.production()
        if prev.get("release") == release:
            return prev
        champions = [c for c in prev.get("champions", []) if c != release]
        if prev.get("release"):
            champions.append(prev["release"])
        return self._flip(entry, prev, champions, action, metadata=metadata)

    def rollback_target(self) -> str:
        """The release ``rollback`` would make production."""
        prev = self.production()
        champions = prev.get("champions", [])
        if not champions:
            raise ValueError(
                f"model store {self.store.root}: no earlier champion to roll back to "
                f"(production: {prev.get('release') or 'none'})"
            )
        return champions[-1]

    def rollback(self) -> dict[str, Any]:
        """Production back to the previous champion, in one write; the current one is left
        registered (``promote`` brings it back)."""
        prev = self.production()
        self.rollback_target()  # refuses when there is none
        champions = list(prev["champions"])
        target = self.get(champions.pop())
        pointer = self._flip(target, prev, champions, "rollback", rolled_back=prev.get("release"))
        return pointer

    def _flip(
        self,
        entry: RegistryEntry,
        prev: dict[str, Any],
        champions: list[str],
        action: str,
        rolled_back: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        aliases = {k: v for k, v in prev.get("aliases", {}).items() if v != entry.release}
        aliases[CHAMPION] = entry.release
        pointer = {
            "release": entry.release,
            "created": entry.created,
            "models": dict(entry.models),
            "uris": dict(entry.uris),
            "previous_release": prev.get("release"),
            "metadata": metadata or {},
            "aliases": aliases,
            "champions": champions,
            "action": action,
            "changed": datetime.now(UTC).isoformat(),
        }
        if rolled_back:
            pointer["rolled_back"] = rolled_back
        self.store.write_pointer(pointer)
        return pointer


def format_listing(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no registered releases"
    lines = [f"{'release':<26} {'aliases':<28} {'gates':<6} {'risk AUC':>8}  code"]
    for r in rows:
        auc = f"{r['risk_test_auc']:.4f}" if r["risk_test_auc"] is not None else "-"
        lines.append(
            f"{r['release']:<26} {','.join(r['aliases']) or '-':<28} "
            f"{'pass' if r['passed'] else 'FAIL':<6} {auc:>8}  {r['code_version'] or '-'}"
        )
    return "\n".join(lines)


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
