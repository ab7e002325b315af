"""Check a manifest against the InferenceService schema, offline.

The KServe SDK's models (``kserve.models``) and the Kubernetes client's are generated from the
CRD's OpenAPI schema: each class lists its fields (``attribute_map``) and their types
(``openapi_types``). Walking a manifest against them catches unknown fields (a typo such as
``minReplica`` is silently dropped by a cluster), wrong types and missing required fields, with
the path of each, without a cluster or the 1 MB CRD file.
"""

from __future__ import annotations

import re
from typing import Any

_PRIMITIVES = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": (int, float),
    "object": object,
    "ResourceQuantity": (str, int, float),
    "datetime": str,
}


def _klass(name: str):
    import kserve.models as km
    from kubernetes.client import models as k8s

    for mod in (km, k8s):
        if hasattr(mod, name):
            return getattr(mod, name)
    return None


# The SDKs' container type strings: pattern (its group: the item type), Python type, the word
# for it, its (key, item) pairs and the path of an item.
_CONTAINERS = (
    (re.compile(r"list\[(.+)\]"), list, "a list", enumerate, "{path}[{key}]"),
    (re.compile(r"dict\(str, (.+)\)"), dict, "a mapping", dict.items, "{path}.{key}"),
)


def _check(value: Any, type_name: str, path: str, errors: list[str]) -> None:
    if value is None:
        return
    for pattern, kind, word, items, child in _CONTAINERS:
        m = pattern.fullmatch(type_name)
        if m:
            if not isinstance(value, kind):
                errors.append(f"{path}: expected {word}")
                return
            for key, v in items(value):
                _check(v, m.group(1), child.format(path=path, key=key), errors)
            return
    if type_name in _PRIMITIVES:
        want = _PRIMITIVES[type_name]
        if not isinstance(value, want) or (want is int and isinstance(value, bool)):
            errors.append(f"{path}: expected {type_name}, got {type(value).__name__}")
        return
    klass = _klass(type_name)
    if klass is None:  # a type the SDKs do not model (e.g. IntOrString): accept scalars
        if isinstance(value, (dict, list)):
            errors.append(f"{path}: expected a scalar ({type_name})")
        return
    if not isinstance(value, dict):
        errors.append(f"{path}: expected an object ({type_name})")
        return
    by_json = {j: a for a, j in klass.attribute_map.items()}
    before = len(errors)
    for key, v in value.items():
        if key not in by_json:
            errors.append(f"{path}.{key}: not a field of {type_name}")
            continue
        _check(v, klass.openapi_types[by_json[key]], f"{path}.{key}", errors)
    # Required fields: the generated constructors refuse None for them.
    if len(errors) == before:
        kwargs = {by_json[k]: v for k, v in value.items() if k in by_json}
        try:
            klass(**{k: (v if not isinstance(v, (dict, list)) else _Opaque()) for k, v in
                     kwargs.items()})  # fmt: skip
        except ValueError as err:
            errors.append(f"{path}: {err}")


class _Opaque:
    """Stands in for a nested value already checked, so constructors see 'present'."""


def validate_inference_service(doc: dict[str, Any]) -> list[str]:
    """Every problem with ``doc`` as a serving.kserve.io/v1beta1 InferenceService, by path."""
    errors: list[str] = []
    if doc.get("apiVersion") != "serving.kserve.io/v1beta1":
        errors.append(f"apiVersion: {doc.get('apiVersion')!r} is not serving.kserve.io/v1beta1")
    if doc.get("kind") != "InferenceService":
        errors.append(f"kind: {doc.get('kind')!r} is not InferenceService")
    if not (doc.get("metadata") or {}).get("name"):
        errors.append("metadata.name: required")
    if "predictor" not in (doc.get("spec") or {}):
        errors.append("spec.predictor: required")
    _check(doc, "V1beta1InferenceService", "", errors)
    return [e.lstrip(".") for e in errors]
