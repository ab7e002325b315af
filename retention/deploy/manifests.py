"""KServe InferenceService manifests (serving.kserve.io/v1beta1) for a pushed release.

One InferenceService per served model of the catalogue (named by its ``service``, its storage
URI the release's copy of the model ``spec.name``, its footprint ``serving.deployments``), each a
custom container running ``retention serve-model SERVICE`` from the serving image (the writer
from the GPU image; a service with a GPU on the GPU pool). KServe's storage initializer downloads
``STORAGE_URI`` into ``/mnt/models`` before the container starts, so a new release is a new
storage URI and Knative rolls it out, ``canaryTrafficPercent`` at a time.

The orchestrator (``catalogue.ORCHESTRATOR``) is an InferenceService of its own. A KServe
``transformer`` forwards to exactly one predictor, and this one fans out to all of them, so it
runs as the predictor container of its own service and reaches the others by their
cluster-local URLs.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from retention import catalogue
from retention.config import Deployment, Profile

API_VERSION = "serving.kserve.io/v1beta1"
MOUNT = "/mnt/models"
# The one served model that needs the language-model stack of the GPU image.
WRITER = "writer"


def predictor_url(name: str, namespace: str) -> str:
    """KServe's cluster-local address of an InferenceService's predictor."""
    return f"http://{name}-predictor.{namespace}.svc.cluster.local"


def _resources(d: Deployment) -> dict[str, Any]:
    limits: dict[str, Any] = {"cpu": d.cpu, "memory": d.memory}
    if d.gpu:
        limits["nvidia.com/gpu"] = str(d.gpu)
    return {"requests": {"cpu": d.cpu, "memory": d.memory}, "limits": limits}


def _probe(name: str) -> dict[str, Any]:
    # A model's own V1 endpoint answers 200 only once it is loaded: ready means ready.
    return {
        "httpGet": {"path": f"/v1/models/{name}", "port": 8080},
        "initialDelaySeconds": 5,
        "periodSeconds": 10,
        "failureThreshold": 30,
    }


def _service(
    profile: Profile,
    name: str,
    image: str,
    args: list[str],
    env: list[dict[str, Any]],
    gpu_pool: bool,
    release: str,
) -> dict[str, Any]:
    cfg = profile.serving
    d = cfg.deployments[name]  # every service has one: config.py fills them from the catalogue
    container = {
        "name": "kserve-container",
        "image": image,
        "args": args,
        "env": env,
        "ports": [{"containerPort": 8080, "protocol": "TCP"}],
        "resources": _resources(d),
        "readinessProbe": _probe(name),
        "securityContext": {"runAsNonRoot": True, "allowPrivilegeEscalation": False},
    }
    predictor: dict[str, Any] = {
        "minReplicas": d.min_replicas,
        "maxReplicas": d.max_replicas,
        "scaleMetric": d.scale_metric,
        "scaleTarget": d.scale_target,
        "containers": [container],
    }
    if cfg.service_account:
        predictor["serviceAccountName"] = cfg.service_account
    if d.canary_traffic_percent is not None:
        predictor["canaryTrafficPercent"] = d.canary_traffic_percent
    pool = profile.pipeline.gpu_pool if gpu_pool else profile.pipeline.cpu_pool
    if pool.node_selector:
        predictor["nodeSelector"] = dict(pool.node_selector)
    if pool.tolerations:
        predictor["tolerations"] = [dict(t) for t in pool.tolerations]
    return {
        "apiVersion": API_VERSION,
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": cfg.namespace,
            "labels": {"app.kubernetes.io/part-of": "retention", "retention/release": release},
            "annotations": {"serving.kserve.io/deploymentMode": "Serverless"},
        },
        "spec": {"predictor": predictor},
    }


def render(profile: Profile, pointer: dict[str, Any]) -> list[dict[str, Any]]:
    """Manifests for the release in ``pointer`` (the model store's ``production`` document)."""
    cfg = profile.serving
    uris = pointer.get("uris", {})
    release = str(pointer.get("release", "unknown"))
    profile_args = ["--profile", profile.name]
    docs = []
    for spec in catalogue.served():
        uri, name = uris.get(spec.name), spec.service
        if not uri or not name:
            continue  # not in this release: nothing to serve
        gpu = cfg.deployments[name].gpu > 0
        image = cfg.writer_image if spec.name == WRITER else cfg.image
        args = ["serve-model", name, *profile_args, "--model-dir", MOUNT]
        docs.append(
            _service(profile, name, image, args, [{"name": "STORAGE_URI", "value": uri}], gpu,
                     release)
        )  # fmt: skip
    urls = {d["metadata"]["name"]: predictor_url(d["metadata"]["name"], cfg.namespace)
            for d in docs}  # fmt: skip
    env: list[dict[str, Any]] = [
        {"name": "RETENTION_PREDICTOR_URLS", "value": json.dumps(urls, sort_keys=True)},
        # The ledger's database URL carries a credential: it comes from a Secret.
        {
            "name": "RETENTION_LEDGER_URL",
            "valueFrom": {"secretKeyRef": {"name": cfg.ledger_secret, "key": "url"}},
        },
    ]
    args = ["serve-model", catalogue.ORCHESTRATOR, *profile_args,
            "--set", "serving.predictor_urls=$(RETENTION_PREDICTOR_URLS)",
            "--set", "serving.ledger.url=$(RETENTION_LEDGER_URL)"]  # fmt: skip
    docs.append(_service(profile, catalogue.ORCHESTRATOR, cfg.image, args, env, False, release))
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
