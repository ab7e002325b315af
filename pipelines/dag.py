"""The training DAG, built from a profile and the model catalogue.

ingest -> split, then one task per catalogue spec in catalogue order (its component
``components.<spec.component>`` fed the tables and the models it ``needs``), then evaluate-gates
and, under ``dsl.If(passed)``, push. Adding a model adds its task here without an edit. Resources,
node pools and accelerators are attached to each task from the profile: ``target="kfp"`` adds
kfp-kubernetes node selectors and tolerations (KFP on GKE); ``"vertex"`` keeps the single-document
spec Vertex AI reads; ``"local"`` is what ``kfp.local`` runs (it ignores resources).
"""

import importlib
import inspect
from collections.abc import Callable
from typing import Literal

from kfp import dsl

from components.evaluate_gates import evaluate_gates
from components.factory import build
from components.ingest import ingest
from components.push import push
from components.split import split
from retention import catalogue
from retention.config import Profile, Resources

Target = Literal["local", "vertex", "kfp"]


def _place(
    task: dsl.PipelineTask,
    name: str,
    profile: Profile,
    target: Target,
    res: Resources | None = None,
):
    """Name, caching, resources (``res``, else the profile's for the task) and node pool."""
    task.set_display_name(name)
    task.set_caching_options(profile.pipeline.enable_caching)
    if target == "local":
        return task
    res = res or profile.pipeline.resources_for(name)
    task.set_cpu_limit(res.cpu).set_memory_limit(res.memory)
    if res.accelerator_type and res.accelerator_count:
        task.set_accelerator_type(res.accelerator_type).set_accelerator_limit(res.accelerator_count)
    if target == "kfp":
        from kfp import kubernetes

        pool = profile.pipeline.gpu_pool if res.pool == "gpu" else profile.pipeline.cpu_pool
        for key, value in pool.node_selector.items():
            kubernetes.add_node_selector(task, label_key=key, label_value=value)
        for tol in pool.tolerations:
            kubernetes.add_toleration(
                task,
                key=tol.get("key"),
                operator=tol.get("operator", "Equal"),
                value=tol.get("value"),
                effect=tol.get("effect"),
            )
    return task


def model_function(spec: catalogue.ModelSpec) -> Callable:
    """``components/<spec.component>.py``'s function of the same name."""
    module = importlib.import_module(f"components.{spec.component}")
    return getattr(module, spec.component)


def build_pipeline(profile: Profile, target: Target = "local"):
    """A ``@dsl.pipeline`` function whose only parameter is the profile as JSON."""
    steps: dict[str, Callable] = {
        "ingest": ingest,
        "split": split,
        **{s.task: model_function(s) for s in catalogue.CATALOGUE},
        "evaluate-gates": evaluate_gates,
        "push": push,
    }
    # A step runs in the GPU image when the profile puts its task on the GPU pool.
    c = {
        task: build(f, profile, task, gpu=profile.pipeline.resources_for(task).pool == "gpu")
        for task, f in steps.items()
    }

    def models_for(task: str, models: dict) -> dict:
        """The trained models a final step takes: its parameters named like a model."""
        return {n: models[n] for n in inspect.signature(steps[task]).parameters if n in models}

    @dsl.pipeline(name=profile.pipeline.name, description="Retention platform training DAG")
    def retention_pipeline(config_json: str = profile.model_dump_json()):
        def place(task, name):
            return _place(task, name, profile, target)

        ing = place(c["ingest"](config_json=config_json), "ingest")
        spl = place(c["split"](config_json=config_json, dataset=ing.outputs["dataset"]), "split")
        models = {}
        for s in catalogue.CATALOGUE:
            inputs = {
                need: spl.outputs["splits"] if need == catalogue.SPLITS else models[need]
                for need in s.needs
            }
            if "model_name" in inspect.signature(steps[s.task]).parameters:
                inputs["model_name"] = s.name  # one component for several models
            task = place(c[s.task](config_json=config_json, **inputs), s.task)
            models[s.name] = task.outputs["model"]
        gates = place(
            c["evaluate-gates"](config_json=config_json, **models_for("evaluate-gates", models)),
            "evaluate-gates",
        )
        with dsl.If(gates.outputs["Output"] == True, name="gates-passed"):  # noqa: E712 - KFP DSL
            push = c["push"](
                config_json=config_json,
                splits=spl.outputs["splits"],
                **models_for("push", models),
            )
            place(push, "push")

    return retention_pipeline
