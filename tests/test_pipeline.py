import inspect
import json

import pytest
import yaml

from components.evaluate_gates import evaluate_gates
from components.factory import model_inputs_function
from components.push import push
from pipelines import vertex
from pipelines.compile import compile_pipeline
from pipelines.dag import model_function
from retention import catalogue
from retention.config import load_profile
from tests.conftest import PIPELINE_TASKS


@pytest.fixture(scope="module")
def gcp():
    return load_profile("gcp")


def _executors(doc):
    return doc["deploymentSpec"]["executors"]


def _all_tasks(spec):
    """Every task of the compiled DAG, the ones inside conditions too."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks |= comp.get("dag", {}).get("tasks", {})
    return tasks


def _producer(ref) -> str:
    """The task an artifact input comes from (directly, or through a condition's channel)."""
    if "taskOutputArtifact" in ref:
        return ref["taskOutputArtifact"]["producerTask"]
    # Inside dsl.If: pipelinechannel--<task>-model (or -splits, split's output)
    channel = ref["componentInputArtifact"].removeprefix("pipelinechannel--")
    return channel.removesuffix("-model").removesuffix("-splits")


def _gpu(profile, task: str) -> bool:
    return profile.pipeline.resources_for(task).pool == "gpu"


def test_vertex_yaml_is_one_document_with_every_task_and_resources(gcp, tmp_path):
    out = compile_pipeline(gcp, "vertex", tmp_path / "v.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 1
    spec = docs[0]
    tasks = _all_tasks(spec)
    assert set(tasks) - {"condition-1"} == set(PIPELINE_TASKS)
    execs = _executors(spec)
    assert any(_gpu(gcp, t) for t in PIPELINE_TASKS), "the gcp profile puts the writer on GPUs"
    for task in PIPELINE_TASKS:
        # A task is named after its component, and its component's executor after that.
        container = execs[f"exec-{task}"]["container"]
        want = gcp.pipeline.resources_for(task)
        image = gcp.pipeline.gpu_image if _gpu(gcp, task) else gcp.pipeline.base_image
        assert container["image"] == image, task
        res = container["resources"]
        assert res["resourceCpuLimit"] == want.cpu and res["resourceMemoryLimit"] == want.memory
        if want.accelerator_count:
            assert res["accelerator"]["resourceType"] == want.accelerator_type
            assert str(res["accelerator"]["resourceCount"]) == str(want.accelerator_count)
        else:
            assert "accelerator" not in res, task
    assert gcp.pipeline.resources_for("train-risk").cpu == "4"  # the profile is not all defaults


def test_dag_wiring_follows_the_catalogue(gcp, tmp_path):
    spec = yaml.safe_load(compile_pipeline(gcp, "vertex", tmp_path / "v.yaml").read_text())
    tasks = _all_tasks(spec)
    root = spec["root"]["dag"]["tasks"]
    assert set(root["split"]["dependentTasks"]) == {"ingest"}
    for s in catalogue.CATALOGUE:
        t = tasks[s.task]
        arts = t["inputs"].get("artifacts", {})
        want = {n: "split" if n == catalogue.SPLITS else catalogue.spec(n).task for n in s.needs}
        assert {n: _producer(r) for n, r in arts.items()} == want, s.task
        assert set(t.get("dependentTasks", [])) == set(want.values()), s.task
        # The shared binary component learns which model it trains.
        name = t["inputs"]["parameters"].get("model_name", {}).get("runtimeValue")
        if "model_name" in inspect.signature(model_function(s)).parameters:
            assert name == {"constant": s.name}, s.task
        else:
            assert name is None, s.task
    # The writer: sft and rm are independent, ppo-text waits for both.
    assert not root["sft"].get("dependentTasks") and not root["rm"].get("dependentTasks")
    assert set(root["ppo-text"]["dependentTasks"]) == {"sft", "rm"}
    judged = {s.name: s.task for s in catalogue.CATALOGUE if s.gated or s.released}
    arts = tasks["evaluate-gates"]["inputs"]["artifacts"]
    assert {n: _producer(r) for n, r in arts.items()} == judged
    # The push task sits under the gate condition and takes exactly the released models (and
    # the splits: the release's training reference and data fingerprint).
    cond = [c for c in spec["components"].values() if "push" in c.get("dag", {}).get("tasks", {})]
    assert cond, "push must be inside dsl.If(passed)"
    arts = tasks["push"]["inputs"]["artifacts"]
    assert {n: _producer(r) for n, r in arts.items()} == {
        **{s.name: s.task for s in catalogue.released()},
        "splits": "split",
    }


def test_kfp_yaml_carries_node_selectors_and_tolerations(gcp, tmp_path):
    out = compile_pipeline(gcp, "kfp", tmp_path / "k.yaml")
    docs = list(yaml.safe_load_all(out.read_text()))
    assert len(docs) == 2
    platform = docs[1]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(platform) == set(_executors(docs[0])) == {f"exec-{t}" for t in PIPELINE_TASKS}
    for name, cfg in platform.items():
        pool = (
            gcp.pipeline.gpu_pool
            if _gpu(gcp, name.removeprefix("exec-"))
            else gcp.pipeline.cpu_pool
        )
        assert cfg["nodeSelector"]["labels"] == pool.node_selector, name
        tolerations = cfg.get("tolerations", [])
        assert [t["key"] for t in tolerations] == [t["key"] for t in pool.tolerations], name
    assert {"nvidia.com/gpu"} == {t["key"] for t in gcp.pipeline.gpu_pool.tolerations}


def test_final_steps_take_their_models_from_the_catalogue():
    gates = list(inspect.signature(evaluate_gates).parameters)
    judged = [s.name for s in catalogue.CATALOGUE if s.gated or s.released]
    assert gates == ["config_json", *judged, "report", "summary"]
    assert list(inspect.signature(push).parameters) == [
        "config_json",
        *(s.name for s in catalogue.released()),
        "splits",
    ]
    # KFP ships the source inspect finds: it must be the generated function itself.
    source = inspect.getsource(evaluate_gates)
    assert source.startswith("def evaluate_gates(") and "evaluate_run(" in source
    assert all(f"{n}: Input[Model]" in source for n in judged)


def test_generated_function_refuses_a_name_that_is_not_a_parameter():
    with pytest.raises(ValueError, match="'class' cannot be a parameter"):
        model_inputs_function("f", ["class"], {}, "str", "doc", "return ''\n")
    with pytest.raises(ValueError, match="'report' cannot be a parameter"):
        model_inputs_function("f", ["report"], {"report": "HTML"}, "str", "doc", "return ''\n")


def test_every_spec_has_its_component():
    for s in catalogue.CATALOGUE:
        params = inspect.signature(model_function(s)).parameters
        # config_json and what the spec needs in, model and metrics out.
        assert {"config_json", "model", "metrics", *s.needs} <= set(params), s.component


def test_kfp_local_runs_a_generated_component(tmp_path):
    """What evaluate-gates and push are made of, through kfp.local: signature, source, paths."""
    from kfp import dsl, local

    from components.factory import build

    @dsl.component(install_kfp_package=False, packages_to_install=[])
    def make(text: str, model: dsl.Output[dsl.Model]):
        from pathlib import Path

        Path(model.path).write_text(text)

    read_both = model_inputs_function(
        "read_both",
        ["first", "second"],
        outputs={},
        returns="str",
        doc="Join the two models' text.",
        # Real bodies import the shared helpers, in kfp's lean runtime mode.
        body="from pathlib import Path\n\nimport components.kfp_results\n\n"
        "return ' '.join(Path(paths[k]).read_text() for k in ('first', 'second'))\n",
    )
    profile = load_profile("tiny")
    joined = build(read_both, profile, "read-both")

    @dsl.pipeline(name="generated")
    def pipe(config_json: str = "{}") -> str:
        a, b = make(text="left"), make(text="right")
        return joined(
            config_json=config_json, first=a.outputs["model"], second=b.outputs["model"]
        ).output

    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    assert pipe().output == "left right"


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
