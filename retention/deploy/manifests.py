"""KServe InferenceService manifests (serving.kserve.io/v1beta1) for a pushed release.

The orchestrator (``catalogue.ORCHESTRATOR``) is an InferenceService of its own. A KServe
``transformer`` forwards to exactly one predictor, and this one fans out to all of them, so it
runs as the predictor container of its own service.

Each *remote* predictor (``serving.remote()``: every served model in remote mode; the writer,
and any the profile names in ``serving.remote_predictors``, in co-located mode) is an
InferenceService named by its ``service``, its footprint ``serving.deployments``, a custom
container running ``retention serve-model SERVICE`` from the serving image (the writer from the
GPU image; a service with a GPU on the GPU pool). KServe's storage initializer downloads its
``STORAGE_URI`` (the release's copy of the model ``spec.name``) into ``/mnt/models`` before the
container starts, so a new release is a new storage URI and Knative rolls it out,
``canaryTrafficPercent`` at a time. The orchestrator reaches them by their cluster-local URLs.

The *co-located* predictors (``serving.colocated()``) get no service of their own: the
orchestrator loads them in its process. Their files come the same way, by KServe's storage
initializer, through the predictor's ``storageUris`` (KServe's multiple-storage-URI field, one
init container downloading each ``uri`` to its ``mountPath``): one entry per co-located model,
its release URI mounted at ``/mnt/models/SERVICE``, and the container runs ``serve-model
retention --model-dir /mnt/models``. That keeps what one ``storageUri`` gives: only this release's
files (the store has no one folder holding exactly a release, so a single URI would be the whole
store, every version of every model), downloaded with the pod's own credentials (Workload
Identity) before the container starts, and a new release is a new set of URIs, so a new revision
that Knative rolls out. The mounted versions travel with them (``RETENTION_MODEL_VERSIONS``), so
the orchestrator names exactly what it serves. In Knative mode KServe adds that init container to
the Knative service itself, which Knative allows only with its ``kubernetes.podspec-init-containers``
feature enabled (``infra/terraform/charts/knative-serving`` enables it).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from retention import catalogue
from retention.config import GPU_SERVICE, Deployment, Profile

API_VERSION = "serving.kserve.io/v1beta1"
MOUNT = "/mnt/models"
# The one served model that needs the language-model stack of the GPU image.
WRITER = GPU_SERVICE
# Where a co-located orchestrator finds the versions mounted for it (serving.server reads it).
MODEL_VERSIONS_ENV = "RETENTION_MODEL_VERSIONS"


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
    storage_uris: list[dict[str, str]] | None = None,
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
    if storage_uris:
        predictor["storageUris"] = storage_uris
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
    mounts: list[dict[str, str]] = []
    mounted = {catalogue.ORCHESTRATOR: release}
    for spec in catalogue.served():
        uri, name = uris.get(spec.name), spec.service
        if not uri or not name:
            continue  # not in this release: nothing to serve
        if name in cfg.colocated():
            mounts.append({"uri": uri, "mountPath": f"{MOUNT}/{name}"})
            mounted[name] = str(
                pointer.get("models", {}).get(spec.name, uri.rstrip("/").rsplit("/", 1)[-1])
            )
            continue
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
    if mounts and uris.get("segments"):
        # Not a predictor: the orchestrator reads it itself (an answer's segment, the assistant).
        mounts.append({"uri": uris["segments"], "mountPath": f"{MOUNT}/segments"})
    if mounts:
        args += ["--model-dir", MOUNT]
        env.append({"name": MODEL_VERSIONS_ENV, "value": json.dumps(mounted, sort_keys=True)})
    docs.append(
        _service(profile, catalogue.ORCHESTRATOR, cfg.image, args, env, False, release, mounts)
    )
    return docs


def to_yaml(docs: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(docs, sort_keys=False)
