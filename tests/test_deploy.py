"""deploy/kubernetes/: every manifest valid against Kubernetes' own schemas (offline, the schemas
kubernetes-validate bundles), and the facts the server relies on: probes on /health and /ready,
a non-root read-only container, the API key from a Secret, and CPU resources that give the
workers the rule in ``runtime.workers`` gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmeta_embed.runtime.workers import workers_for

yaml = pytest.importorskip("yaml")
kv = pytest.importorskip("kubernetes_validate")

MANIFESTS = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
#: the oldest Kubernetes these manifests are checked for (preStop's sleep action: 1.30+)
KUBERNETES = "1.30.0"


def documents() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(MANIFESTS.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in documents() if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", [KUBERNETES, "1.33.0"])
def test_every_manifest_is_valid(version: str) -> None:
    docs = documents()
    assert {d["kind"] for d in docs} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PersistentVolumeClaim",
    }
    for doc in docs:
        kv.validate(doc, version, strict=True)  # raises ValidationError, naming the field


def test_the_validator_refuses_a_wrong_field() -> None:
    bad = one("Deployment")
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/x"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBERNETES, strict=True)


def container() -> dict[str, Any]:
    (c,) = one("Deployment")["spec"]["template"]["spec"]["containers"]
    return c


def test_probes_security_and_secret() -> None:
    pod = one("Deployment")["spec"]["template"]["spec"]
    c = container()
    assert c["image"] == "dmeta-embed:cpu"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    startup = c["startupProbe"]
    assert startup["httpGet"]["path"] == "/ready"
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600  # an export takes minutes
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsNonRoot"] is True
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    for path in ("/tmp", "/cache"):  # the only places the server writes
        assert "emptyDir" in volumes[mounts[path]["name"]]
    assert mounts["/model"]["readOnly"] is True
    env = {e["name"]: e for e in c["env"]}
    assert "secretKeyRef" in env["DMETA_EMBED_API_KEY"]["valueFrom"]
    # the server drains for request_timeout_s (30) + 5 s; preStop's wait comes before that
    drain = 30 + 5 + c["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] >= drain


def cpus(quantity: str) -> float:
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_resources_match_the_workers_rule() -> None:
    c = container()
    requests, limits = c["resources"]["requests"], c["resources"]["limits"]
    assert requests == limits  # Guaranteed QoS: the quota the server reads is what it was given
    limit = cpus(limits["cpu"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    expected = workers_for(int(limit), 1, limit, "onnxruntime")
    assert int(env["DMETA_EMBED_WORKERS"]) == expected.workers


def test_hpa_scales_the_deployment_on_cpu() -> None:
    hpa = one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one("Deployment")["metadata"]["name"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    service = one("Service")
    assert service["spec"]["selector"] == one("Deployment")["spec"]["selector"]["matchLabels"]
