"""Apply rendered InferenceServices to a cluster (only when the profile says ``serving.apply``)."""

from __future__ import annotations

from typing import Any

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"


def apply_manifests(docs: list[dict[str, Any]], api=None) -> list[str]:
    """Create or replace each InferenceService; returns ``created:NAME`` / ``replaced:NAME``."""
    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.CustomObjectsApi()
    from kubernetes.client.exceptions import ApiException

    done = []
    for doc in docs:
        ns, name = doc["metadata"]["namespace"], doc["metadata"]["name"]
        try:
            current = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        except ApiException as err:
            if err.status != 404:
                raise
            api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
            done.append(f"created:{name}")
            continue
        body = {**doc, "metadata": {**doc["metadata"],
                                    "resourceVersion": current["metadata"]["resourceVersion"]}}  # fmt: skip
        api.replace_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, body)
        done.append(f"replaced:{name}")
    return done
