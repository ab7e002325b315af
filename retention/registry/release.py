"""push: copy the models that passed the gates into the model store, register the release, and
make it the champion (``registry.promote: auto``) or the challenger (``manual``).

Order matters for a crash: the model versions, the training reference and the registry entry are
written first, each immutable; the ``production`` pointer last, in one atomic write. A crash
before that write leaves production (and every alias) as it was, with at most an unreferenced
version; after it, the release is complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

from retention.catalogue import released, require_exactly, spec
from retention.config import Profile
from retention.evaluation.gates import Verdict, evaluate
from retention.fileio import read_json
from retention.models.outputs import METRICS_FILE, MODEL_DIR
from retention.monitoring.reference import reference_for_release, reference_key
from retention.registry.registry import Registry, RegistryEntry
from retention.results import ModelResult
from retention.store.model_store import ModelStore, new_version
from retention.store.push import write_manifests

SPLIT_MANIFEST = "manifest.json"
log = logging.getLogger(__name__)
_REPO = Path(__file__).resolve().parents[2]


def code_version(env: dict[str, str] | None = None) -> str:
    """The code a release was trained by: the image's ``RETENTION_CODE_VERSION`` (the build sets
    it), else the checkout's git sha (``+dirty`` with uncommitted changes), else the installed
    package's version."""
    import os

    given = (env if env is not None else os.environ).get("RETENTION_CODE_VERSION")
    if given:
        return given
    try:
        sha = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(_REPO), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        try:
            return "retention-platform " + importlib_metadata.version("retention-platform")
        except importlib_metadata.PackageNotFoundError:
            return "unknown"


def data_fingerprint(splits_dir: str | Path) -> dict[str, Any]:
    """sha256 of every split file (path and bytes, in order) and of each table alone."""
    root = Path(splits_dir)
    whole = hashlib.sha256()
    tables: dict[str, str] = {}
    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        rel = f.relative_to(root).as_posix()
        body = f.read_bytes()
        whole.update(rel.encode() + b"\0" + hashlib.sha256(body).digest())
        tables[rel] = hashlib.sha256(body).hexdigest()[:16]
    out: dict[str, Any] = {"fingerprint": whole.hexdigest(), "files": tables}
    if (root / SPLIT_MANIFEST).is_file():
        out["split"] = read_json(root / SPLIT_MANIFEST)
    return out


def _results(trained: dict[str, str | Path]) -> dict[str, ModelResult]:
    """Each model's typed result, where its folder has one of its own kind: a folder from
    another trainer (a writer pushed from SFT's output, say) is judged as not measured."""
    out = {}
    for name, d in trained.items():
        path = Path(d) / METRICS_FILE
        if path.is_file():
            try:
                out[name] = spec(name).result.load(path)
            except ValueError as err:  # pydantic's ValidationError included
                log.warning("push: %s: not a %s (%s)", path, spec(name).result.__name__, err)
    return out


def push_models(
    profile: Profile,
    trained: dict[str, str | Path],
    metadata: dict[str, Any] | None = None,
    splits: str | Path | None = None,
    *,
    version: str | None = None,
) -> dict[str, Any]:
    """``trained`` maps each released model's name to its trainer's output directory;
    ``splits``: the run's split folder (the reference and the data fingerprint come from it).

    Exactly the catalogue's released models, stored under their names: a release that lacks one
    would leave serving on an older model of it without anyone having decided so. Returns the
    ``production`` pointer, with ``registered`` (this release) and ``manifests`` added.
    """
    names = [s.name for s in released()]
    require_exactly("push: the released models", trained, names)
    models = {}
    for name in names:
        d = Path(trained[name])
        models[name] = d / MODEL_DIR if (d / MODEL_DIR).is_dir() else d
    results = _results(trained)
    # The released models' own gates: the ones trained only to make another (sft, rm) were
    # judged by evaluate-gates before this push and left no folder here.
    gates = {name: g for name, g in profile.gates.items() if name in results}
    verdict = Verdict(evaluate(gates, results), results)
    store = ModelStore(profile.model_store)
    registry = Registry(store)
    version = version or new_version()
    uris = store.copy_versions(models, version)
    ref_key = None
    if splits is not None:
        ref = reference_for_release(profile, splits, trained["risk"])
        ref_key = reference_key(version)
        store.backend.write_text_atomic(ref_key, json.dumps({**ref, "release": version}))
    entry = RegistryEntry(
        release=version,
        created=datetime.now(UTC).isoformat(),
        models=dict.fromkeys(names, version),
        uris=uris,
        metrics={n: r.scalars() for n, r in results.items()},
        gates=[g.to_dict() for g in verdict.gates],
        passed=verdict.passed,
        data=data_fingerprint(splits) if splits is not None else {},
        code_version=code_version(),
        profile=profile.name,
        reference=ref_key,
    )
    prev = registry.production()
    # The DAG pushes only what passed its gates: ``auto`` makes it the champion; the first
    # release is the champion whatever the mode, there being nothing else to serve.
    promote = profile.registry.promote == "auto" or not prev.get("release")
    if profile.registry.backend == "vertex":
        from retention.registry.vertex import upload_release

        entry.vertex = upload_release(profile, registry, entry, promote=promote)
    registry.record(entry)
    if promote:
        pointer = registry.promote(
            version, action="push", require_passed=False, metadata=metadata or {}
        )
    else:
        aliases = {**registry.aliases(), "challenger": version}
        pointer = {**prev, "aliases": aliases, "action": "challenger"}
        store.write_pointer(pointer)
    pointer = dict(pointer)
    pointer["registered"] = version
    own = {"release": version, "models": entry.models, "uris": entry.uris}
    pointer["manifests"], docs = write_manifests(profile, store, own)
    if profile.serving.apply and pointer["release"] == version:
        from retention.deploy.apply import apply_manifests

        pointer["applied"] = apply_manifests(docs)
    return pointer
