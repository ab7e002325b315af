import json

import pytest
import yaml

from pipelines import vertex
from pipelines.compile import compile_pipeline
from retention.config import load_profile
from tests.conftest import PIPELINE_TASKS

TASKS = set(PIPELINE_TASKS)
GPU_TASKS = {"sft", "rm", "ppo_text"}


@pytest.fixture(scope="module")
def gcp():
    return load_profile("gcp")


def _executors(doc):
    return doc["deploymentSpec"]["executors"]


def test_vertex_yaml_is_one_document_with_every_task_and_resources(gcp, tmp_path):
    out = compile_pipeline(gcp, "vertex", tmp_path / "v.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1
    spec = docs[0]
    tasks = set(spec["root"]["dag"]["tasks"])
    inner = spec["components"]
    nested = {t for c in inner.values() for t in c.get("dag", {}).get("tasks", {})}
    assert tasks | nested >= TASKS
    execs = _executors(spec)
    by_task = {name.removeprefix("exec-").replace("-", "_"): e for name, e in execs.items()}
    res = by_task["train_risk"]["container"]["resources"]
    assert res["resourceCpuLimit"] == "4" and res["resourceMemoryLimit"] == "16G"
    for name, e in by_task.items():
        image = gcp.pipeline.gpu_image if name in GPU_TASKS else gcp.pipeline.base_image
        assert e["container"]["image"] == image, name
        res = e["container"]["resources"]
        if name in GPU_TASKS:
            want = gcp.pipeline.resources_for(name.replace("_", "-"))
            assert res["accelerator"]["resourceType"] == want.accelerator_type
            assert str(res["accelerator"]["resourceCount"]) == str(want.accelerator_count)
        else:
            assert "accelerator" not in res, name
    # The writer: sft and rm are independent, ppo-text waits for both.
    root = spec["root"]["dag"]["tasks"]
    assert not root["sft"].get("dependentTasks") and not root["rm"].get("dependentTasks")
    assert set(root["ppo-text"]["dependentTasks"]) == {"sft", "rm"}
    # The push task sits under the gate condition.
    cond = [c for c in inner.values() if "push" in c.get("dag", {}).get("tasks", {})]
    assert cond, "push must be inside dsl.If(passed)"


def test_kfp_yaml_carries_node_selectors_and_tolerations(gcp, tmp_path):
    out = compile_pipeline(gcp, "kfp", tmp_path / "k.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(_executors(docs[0]))
    for name, cfg in platform.items():
        gpu = name.removeprefix("exec-").replace("-", "_") in GPU_TASKS
        pool = gcp.pipeline.gpu_pool if gpu else gcp.pipeline.cpu_pool
        assert cfg["nodeSelector"]["labels"] == pool.node_selector, name
        tolerations = cfg.get("tolerations", [])
        assert [t["key"] for t in tolerations] == [t["key"] for t in pool.tolerations], name
    assert {"nvidia.com/gpu"} == {t["key"] for t in gcp.pipeline.gpu_pool.tolerations}


def test_compile_refuses_local_target(gcp, tmp_path):
    with pytest.raises(ValueError, match="vertex"):
        compile_pipeline(gcp, "local", tmp_path / "x.yaml")


def test_submit_dry_run_builds_the_vertex_request(gcp, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    tpl = compile_pipeline(gcp, "vertex", tmp_path / "v.yaml")
    req = vertex.submit(gcp, tpl, dry_run=True)
    assert req["runtime_config"]["gcs_output_directory"] == gcp.pipeline.pipeline_root
    params = req["runtime_config"]["parameter_values"]
    assert json.loads(params["config_json"])["name"] == "gcp"
    assert req["service_account"] == gcp.gcp.service_account
    assert req["labels"] == {"app": "retention", "profile": "gcp"}
    assert req["pipeline_spec"]["pipelineInfo"]["name"] == gcp.pipeline.name


def test_schedule_dry_run_carries_cron_and_job(gcp, tmp_path, monkeypatch):
    monkeypatch.setenv("NO_GCE_CHECK", "true")
    tpl = compile_pipeline(gcp, "vertex", tmp_path / "v.yaml")
    req = vertex.schedule(gcp, tpl, dry_run=True)
    assert req["cron"] == gcp.gcp.schedule_cron
    assert req["display_name"] == gcp.gcp.schedule_name
    job = req["create_pipeline_job_request"]
    assert job["parent"] == f"projects/{gcp.gcp.project}/locations/{gcp.gcp.region}"
    assert job["pipeline_job"]["service_account"] == gcp.gcp.service_account


def test_submit_needs_a_project(gcp, tmp_path):
    p = gcp.model_copy(deep=True)
    p.gcp.project = None
    with pytest.raises(ValueError, match="gcp.project"):
        vertex.submit(p, tmp_path / "missing.yaml", dry_run=True)
