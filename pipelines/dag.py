"""The training DAG, built from a profile.

Adding a step is one module in ``components/`` plus its line(s) here. Resources, node pools and
accelerators are attached to each task from the profile: ``target="kfp"`` adds kfp-kubernetes node
selectors and tolerations (KFP on GKE); ``"vertex"`` keeps the single-document spec Vertex AI reads;
``"local"`` is what ``kfp.local`` runs (it ignores resources).
"""

from typing import Literal

from kfp import dsl

import components
from components.evaluate_gates import evaluate_gates
from components.ingest import ingest
from components.ppo_decision import ppo_decision
from components.ppo_text import ppo_text
from components.push import push
from components.rm import rm
from components.sft import sft
from components.split import split
from components.train_accept import train_accept
from components.train_ltv import train_ltv
from components.train_phase_health import train_phase_health
from components.train_risk import train_risk
from retention.config import Profile

Target = Literal["local", "vertex", "kfp"]


def _place(task: dsl.PipelineTask, name: str, profile: Profile, target: Target):
    task.set_display_name(name)
    task.set_caching_options(profile.pipeline.enable_caching)
    if target == "local":
        return task
    res = profile.pipeline.resources_for(name)
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


def build_pipeline(profile: Profile, target: Target = "local"):
    """A ``@dsl.pipeline`` function whose only parameter is the profile as JSON."""
    steps = (
        ingest,
        split,
        train_risk,
        train_accept,
        train_phase_health,
        train_ltv,
        ppo_decision,
        sft,
        rm,
        ppo_text,
        evaluate_gates,
        push,
    )
    # A step runs in the GPU image when the profile puts its task on the GPU pool.
    task_names = {f.__name__: f.__name__.replace("_", "-") for f in steps}
    task_names |= {"sft": "sft", "rm": "rm", "ppo_text": "ppo-text"}
    c = {
        f.__name__: components.build(
            f, profile, gpu=profile.pipeline.resources_for(task_names[f.__name__]).pool == "gpu"
        )
        for f in steps
    }

    @dsl.pipeline(name=profile.pipeline.name, description="Retention platform training DAG")
    def retention_pipeline(config_json: str = profile.model_dump_json()):
        def place(task, name):
            return _place(task, name, profile, target)

        ing = place(c["ingest"](config_json=config_json), "ingest")
        spl = place(c["split"](config_json=config_json, dataset=ing.outputs["dataset"]), "split")
        risk = place(
            c["train_risk"](config_json=config_json, splits=spl.outputs["splits"]), "train-risk"
        )
        accept = place(
            c["train_accept"](config_json=config_json, splits=spl.outputs["splits"]),
            "train-accept",
        )
        health = place(
            c["train_phase_health"](config_json=config_json, splits=spl.outputs["splits"]),
            "train-phase-health",
        )
        ltv = place(
            c["train_ltv"](config_json=config_json, splits=spl.outputs["splits"]), "train-ltv"
        )
        decision = place(
            c["ppo_decision"](
                config_json=config_json,
                splits=spl.outputs["splits"],
                risk=risk.outputs["model"],
                accept=accept.outputs["model"],
                ltv=ltv.outputs["model"],
            ),
            "ppo-decision",
        )
        # The writer: sft and rm are independent; ppo-text needs both.
        sft_task = place(c["sft"](config_json=config_json), "sft")
        rm_task = place(c["rm"](config_json=config_json), "rm")
        writer = place(
            c["ppo_text"](
                config_json=config_json,
                sft=sft_task.outputs["model"],
                rm=rm_task.outputs["model"],
            ),
            "ppo-text",
        )
        models = {
            "risk": risk.outputs["model"],
            "accept": accept.outputs["model"],
            "phase_health": health.outputs["model"],
            "ltv": ltv.outputs["model"],
            "decision": decision.outputs["model"],
            "writer": writer.outputs["model"],
        }
        gates = place(
            c["evaluate_gates"](config_json=config_json, rm=rm_task.outputs["model"], **models),
            "evaluate-gates",
        )
        with dsl.If(gates.outputs["Output"] == True, name="gates-passed"):  # noqa: E712 - KFP DSL
            place(c["push"](config_json=config_json, **models), "push")

    return retention_pipeline
