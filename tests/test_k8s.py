"""k8s/: the KubeRay RayCluster and RayJob are valid for the vendored CRDs and describe cluster.yaml's
cluster: a head that runs no cells, the same worker node types with the same autoscaling bounds, the
same sweep entrypoint, storage credentials only from a Secret, the dashboard only inside the cluster.

Every check is a function that raises AssertionError; `test_each_check_catches_its_mistake` breaks a
copy of the manifests in one way per check and asserts that check fails, so none passes vacuously."""

import copy
import functools
import json
import re
from importlib.metadata import version

import jsonschema
import pytest
import yaml

from conftest import REPO, SHARED_DATA

K8S = REPO / "k8s"
VENDOR = K8S / "vendor" / "kuberay"
SECRET_NAME = "w2sweep-storage"
# A name part that marks a credential: AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, HF_TOKEN (not TOKENIZERS_...).
SECRET_LIKE = re.compile(r"(^|_)(KEY|SECRET|TOKEN|PASSWORD|CREDENTIALS?|SESSION)(_|$)", re.I)


def _strict(schema):
    """The CRD schema as `kubectl apply` (strict field validation) applies it: an object with listed
    properties accepts no others, so a misspelt field fails here instead of being dropped silently."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        return schema
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(name: str) -> jsonschema.protocols.Validator:
    """A validator for the v1 schema of a vendored CRD (built once: the CRDs are 40k lines)."""
    crd = yaml.load((VENDOR / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(v1["schema"]["openAPIV3Schema"])
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def cluster_yaml() -> dict:
    return yaml.safe_load((REPO / "cluster.yaml").read_text())


@pytest.fixture
def raycluster() -> dict:
    return yaml.safe_load((K8S / "raycluster.yaml").read_text())


@pytest.fixture
def rayjob() -> dict:
    return yaml.safe_load((K8S / "rayjob.yaml").read_text())


def containers(spec: dict) -> list[dict]:
    """Every container of a RayCluster spec: the head's and each worker group's."""
    groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


# ---- the checks -----------------------------------------------------------------------------------

def check_schema(doc: dict, crd: str) -> None:
    try:
        crd_validator(crd).validate(doc)
    except jsonschema.ValidationError as e:
        raise AssertionError(f"{crd}: {e.message} at {list(e.absolute_path)}") from None


def check_credentials_from_secret(spec: dict, job: dict) -> None:
    """No secret value inline: every Ray container takes the storage Secret through envFrom, and no
    env entry or runtime env sets a credential-like variable to a literal value."""
    for c in containers(spec):
        assert {"secretRef": {"name": SECRET_NAME}} in c.get("envFrom", []), c["name"]
        for env in c.get("env", []):
            if SECRET_LIKE.search(env["name"]):
                assert "value" not in env and "secretKeyRef" in env.get("valueFrom", {}), env["name"]
    runtime_env = yaml.safe_load(job["spec"].get("runtimeEnvYAML") or "{}") or {}
    assert not [k for k in runtime_env.get("env_vars", {}) if SECRET_LIKE.search(k) or k.startswith("AWS_")]


def check_head_runs_no_cells(spec: dict) -> None:
    head = spec["headGroupSpec"]
    assert head["rayStartParams"].get("num-cpus") == "0"
    assert head["rayStartParams"].get("num-gpus", "0") == "0"
    assert "resources" not in head["rayStartParams"] and not head.get("resources")
    for c in head["template"]["spec"]["containers"]:
        for section in ("requests", "limits"):
            assert not [r for r in c.get("resources", {}).get(section, {}) if "gpu" in r], c["name"]


def check_workers_are_cluster_yamls(spec: dict, cluster: dict) -> None:
    """Each worker node type of cluster.yaml is a group of the same name, Ray resources and bounds,
    and the autoscaler's settings are cluster.yaml's."""
    assert spec.get("enableInTreeAutoscaling") is True
    options = spec["autoscalerOptions"]
    assert options["idleTimeoutSeconds"] == cluster["idle_timeout_minutes"] * 60
    assert options.get("upscalingMode", "Default") == "Default" and cluster["upscaling_speed"] == 1.0
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    types = {n: t for n, t in cluster["available_node_types"].items() if n != cluster["head_node_type"]}
    assert groups.keys() == types.keys()
    for name, t in types.items():
        g, params = groups[name], groups[name]["rayStartParams"]
        assert (g["minReplicas"], g["maxReplicas"]) == (t["min_workers"], t["max_workers"]), name
        assert g.get("replicas", 0) == t["min_workers"], name
        resources = dict(t["resources"])
        assert float(params["num-cpus"]) == resources.pop("CPU"), name
        gpus = resources.pop("GPU", 0)
        assert float(params.get("num-gpus", 0)) == gpus, name
        custom = json.loads(json.loads(params["resources"])) if "resources" in params else {}
        assert custom == resources, name
        for c in g["template"]["spec"]["containers"]:
            limits = c["resources"]["limits"]
            assert float(limits.get("nvidia.com/gpu", 0)) == gpus, name
    assert sum(g["maxReplicas"] for g in groups.values()) <= cluster["max_workers"]


def check_entrypoint(job: dict, cluster: dict, raycluster: dict) -> None:
    """The sweep of cluster.yaml's submit command, with its entrypoint resources, on raycluster.yaml."""
    text = (REPO / "cluster.yaml").read_text()
    entrypoint = job["spec"]["entrypoint"]
    assert entrypoint == "python jobs/sweep.py jobs/configs/paper.yaml"
    assert f"-- {entrypoint}" in text
    resources = re.search(r"--entrypoint-resources '(\{.*?\})'", text).group(1)
    assert json.loads(job["spec"]["entrypointResources"]) == json.loads(resources)
    assert job["spec"]["clusterSelector"] == {"ray.io/cluster": raycluster["metadata"]["name"]}


def check_dashboard_stays_inside(spec: dict) -> None:
    """A ClusterIP service, no ingress, no host ports; and what reaches it needs Ray's token, as on
    cluster.yaml's nodes (RAY_AUTH_MODE=token)."""
    assert spec.get("authOptions", {}).get("mode") == "token"
    head = spec["headGroupSpec"]
    assert head.get("serviceType") == "ClusterIP"
    assert not head.get("enableIngress") and "ingressOptions" not in head
    assert head.get("headService", {}).get("spec", {}).get("type", "ClusterIP") == "ClusterIP"
    pod = head["template"]["spec"]
    assert not pod.get("hostNetwork")
    assert not [p for c in pod["containers"] for p in c.get("ports", []) if "hostPort" in p]


# ---- the tests ------------------------------------------------------------------------------------

def test_manifests_validate_against_the_vendored_crds(raycluster, rayjob):
    check_schema(raycluster, "ray.io_rayclusters.yaml")
    check_schema(rayjob, "ray.io_rayjobs.yaml")


def test_manifests_describe_cluster_yaml(raycluster, rayjob, cluster_yaml):
    check_credentials_from_secret(raycluster["spec"], rayjob)
    check_head_runs_no_cells(raycluster["spec"])
    check_workers_are_cluster_yamls(raycluster["spec"], cluster_yaml)
    check_entrypoint(rayjob, cluster_yaml, raycluster)
    check_dashboard_stays_inside(raycluster["spec"])


def test_k8s_holds_only_these_objects_and_no_secret():
    """`kubectl apply -f k8s/` applies every manifest in k8s/: no Secret with data, Ingress or exposed
    Service may be among them."""
    kinds = []
    for path in sorted(K8S.glob("*.y*ml")) + sorted(K8S.glob("*.json")):
        kinds += [doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc]
    assert sorted(kinds) == ["RayCluster", "RayJob"]


def test_images_run_the_pinned_ray(raycluster, cluster_yaml):
    ray_version = version("ray")
    assert raycluster["spec"]["rayVersion"] == ray_version
    for c in containers(raycluster["spec"]):
        assert c["image"].endswith(f":ray-{ray_version}"), c["image"]
    dockerfile = (K8S / "Dockerfile").read_text()
    assert f"FROM {cluster_yaml['docker']['image']}\n" in dockerfile  # the image cluster.yaml's nodes run
    for ignored in (".git", ".venv", "storage.env"):
        assert ignored in (REPO / ".dockerignore").read_text().splitlines()


def test_vendored_crds_are_unmodified():
    assert "Apache License" in (VENDOR / "LICENSE").read_text()
    assert "unmodified" in (VENDOR / "SOURCE.md").read_text()
    shared = SHARED_DATA.parent / "vendor" / "kuberay"
    if not shared.is_dir():
        pytest.skip(f"{shared} is not here to compare with")
    for name in ("LICENSE", "SOURCE.md", "ray.io_rayclusters.yaml", "ray.io_rayjobs.yaml"):
        assert (VENDOR / name).read_bytes() == (shared / name).read_bytes(), name


def _group(doc: dict, name: str) -> dict:
    return next(g for g in doc["spec"]["workerGroupSpecs"] if g["groupName"] == name)


def _head(doc: dict) -> dict:
    return doc["spec"]["headGroupSpec"]


MISTAKES = {
    "typo": (lambda c, j: _group(c, "gpu-1x").update(maxReplica=16), "schema"),
    "wrong type": (lambda c, j: _group(c, "gpu-1x").update(minReplicas="0"), "schema"),
    "job typo": (lambda c, j: j["spec"].update(entrypointResource="{}"), "schema"),
    "inline secret": (lambda c, j: _group(c, "gpu-8x")["template"]["spec"]["containers"][0]["env"].append(
        {"name": "AWS_SECRET_ACCESS_KEY", "value": "x"}), "secret"),
    "no envFrom": (lambda c, j: _group(c, "driver")["template"]["spec"]["containers"][0].pop("envFrom"), "secret"),
    "secret in runtime env": (lambda c, j: j["spec"].update(runtimeEnvYAML="env_vars: {AWS_ACCESS_KEY_ID: x}"),
                              "secret"),
    "head cpus": (lambda c, j: _head(c)["rayStartParams"].update({"num-cpus": "4"}), "head"),
    "head gpu": (lambda c, j: _head(c)["template"]["spec"]["containers"][0]["resources"]["limits"].update(
        {"nvidia.com/gpu": "1"}), "head"),
    "max replicas": (lambda c, j: _group(c, "gpu-1x").update(maxReplicas=8), "workers"),
    "min replicas": (lambda c, j: _group(c, "gpu-8x").update(minReplicas=1), "workers"),
    "gpus": (lambda c, j: _group(c, "gpu-8x")["rayStartParams"].update({"num-gpus": "4"}), "workers"),
    "pod gpus": (lambda c, j: _group(c, "gpu-1x")["template"]["spec"]["containers"][0]["resources"]["limits"].update(
        {"nvidia.com/gpu": "2"}), "workers"),
    "driver resource": (lambda c, j: _group(c, "driver")["rayStartParams"].pop("resources"), "workers"),
    "no autoscaling": (lambda c, j: c["spec"].update(enableInTreeAutoscaling=False), "workers"),
    "idle timeout": (lambda c, j: c["spec"]["autoscalerOptions"].update(idleTimeoutSeconds=60), "workers"),
    "missing group": (lambda c, j: c["spec"]["workerGroupSpecs"].pop(), "workers"),
    "entrypoint": (lambda c, j: j["spec"].update(entrypoint="python jobs/sweep.py jobs/configs/demo.yaml"),
                   "entrypoint"),
    "entrypoint resources": (lambda c, j: j["spec"].update(entrypointResources="{}"), "entrypoint"),
    "other cluster": (lambda c, j: j["spec"].update(clusterSelector={"ray.io/cluster": "x"}), "entrypoint"),
    "load balancer": (lambda c, j: _head(c).update(serviceType="LoadBalancer"), "dashboard"),
    "ingress": (lambda c, j: _head(c).update(enableIngress=True), "dashboard"),
    "no token auth": (lambda c, j: c["spec"].pop("authOptions"), "dashboard"),
    "host port": (lambda c, j: _head(c)["template"]["spec"]["containers"][0]["ports"][1].update(hostPort=8265),
                  "dashboard"),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_each_check_catches_its_mistake(mistake, raycluster, rayjob, cluster_yaml):
    break_it, check = MISTAKES[mistake]
    c, j = copy.deepcopy(raycluster), copy.deepcopy(rayjob)
    break_it(c, j)
    checks = {
        "schema": lambda: (check_schema(c, "ray.io_rayclusters.yaml"), check_schema(j, "ray.io_rayjobs.yaml")),
        "secret": lambda: check_credentials_from_secret(c["spec"], j),
        "head": lambda: check_head_runs_no_cells(c["spec"]),
        "workers": lambda: check_workers_are_cluster_yamls(c["spec"], cluster_yaml),
        "entrypoint": lambda: check_entrypoint(j, cluster_yaml, raycluster),
        "dashboard": lambda: check_dashboard_stays_inside(c["spec"]),
    }
    with pytest.raises(AssertionError):
        checks[check]()
